"""Live progress: Prefer: wait, and Server-Sent Events with ids, resume and no leaks."""

from __future__ import annotations

import httpx

from tests.api import TestUser, assert_problem, signup, wait_terminal
from tests.gateway.flows import SMALL, SseReader, generate


def test_prefer_wait_answers_with_the_finished_generation(api: httpx.Client, user: TestUser) -> None:
    r = api.post(
        "/v1/generations",
        headers=user.auth | {"Prefer": "wait=30"},
        json={"prompt": "a waited-for lighthouse", **SMALL},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded" and len(body["outputs"]) == 1
    assert r.headers["preference-applied"] == "wait=30"
    assert r.headers["location"] == f"/v1/generations/{body['id']}"


def test_prefer_wait_is_capped_and_optional(api: httpx.Client, user: TestUser) -> None:
    r = api.post("/v1/generations", headers=user.auth | {"Prefer": "wait=600"}, json={"prompt": "x", **SMALL})
    assert r.status_code == 200 and r.headers["preference-applied"] == "wait=60"
    r = api.post("/v1/generations", headers=user.auth | {"Prefer": "respond-async"}, json={"prompt": "y", **SMALL})
    assert r.status_code == 202 and r.json()["status"] == "queued"


def test_generation_events_from_start_to_end_and_resume(api: httpx.Client, user: TestUser) -> None:
    created = generate(api, user, prompt="streamed waves")
    done = wait_terminal(api, user, created["id"])
    assert done["status"] == "succeeded"
    path = f"/v1/generations/{created['id']}/events"

    # Connected after the fact: the whole history, then the stream ends.
    with api.stream("GET", path, headers=user.auth) as response:
        reader = SseReader(response)
        assert reader.next().event == "ready"
        events = reader.until("generation.completed")
        assert reader.next() is None
    types = [e.event for e in events]
    assert types[0] == "generation.requested" and "generation.started" in types
    ids = [int(e.id) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    completed = events[-1].json()
    assert completed["data"]["generation_id"] == created["id"] and completed["data"]["status"] == "succeeded"
    output = completed["data"]["outputs"][0]
    assert "object_key" not in output and output["url"].endswith(f"/v1/images/{output['image_id']}/content")

    # Resume after the first event: exactly the rest.
    with api.stream("GET", path, headers=user.auth | {"Last-Event-ID": events[0].id}) as response:
        reader = SseReader(response)
        assert reader.next().event == "ready"
        resumed = reader.until("generation.completed")
    assert [e.id for e in resumed] == [e.id for e in events[1:]]

    # Resume after the end: nothing more, the stream closes.
    with api.stream("GET", path, headers=user.auth | {"Last-Event-ID": events[-1].id}) as response:
        reader = SseReader(response)
        assert reader.next().event == "ready"
        assert reader.next() is None

    assert_problem(api.get(path, headers=user.auth | {"Last-Event-ID": "not-an-id"}), 422, "validation_error")


def test_user_feed_is_live_resumable_and_private(api: httpx.Client, user: TestUser) -> None:
    other = signup(api)
    with api.stream("GET", "/v1/events", headers=user.auth) as response:
        reader = SseReader(response)
        ready = reader.next()
        assert ready.event == "ready" and ready.id == ready.json()["cursor"]
        # Someone else's activity while we listen must not show up.
        theirs = generate(api, other, prompt="not yours")
        mine = generate(api, user, prompt="yours")
        events = reader.until("generation.completed")
        events += reader.until("billing.credits_committed")
        # Heartbeats keep the connection alive (GATEWAY_SSE_HEARTBEAT_S=1 in tests).
        heartbeat = reader.next(skip_comments=False)
    assert heartbeat is not None and heartbeat.comments
    assert all(e.json()["data"]["user_id"] == user.id for e in events)
    assert theirs["id"] not in str([e.data for e in events])
    generation_events = [e for e in events if e.event.startswith("generation.")]
    assert {e.json()["data"]["generation_id"] for e in generation_events} == {mine["id"]}
    assert "billing.credits_reserved" in [e.event for e in events]

    # Resume from the ready cursor: the same generation events again, same ids and order.
    with api.stream("GET", "/v1/events", headers=user.auth | {"Last-Event-ID": ready.id}) as response:
        reader = SseReader(response)
        assert reader.next().event == "ready"
        again = [e for e in reader.until("generation.completed") if e.event.startswith("generation.")]
    first = [(e.json()["id"], e.id.split("-")[0]) for e in generation_events]
    assert [(e.json()["id"], e.id.split("-")[0]) for e in again] == first
