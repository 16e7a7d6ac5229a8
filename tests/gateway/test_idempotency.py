"""Idempotency-Key with Stripe's semantics: replay, reuse, in use, concurrency."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from gateway import idempotency
from gateway.settings import GatewaySettings
from genimage_common.database import make_engine, make_sessionmaker
from genimage_common.unit_of_work import UnitOfWork
from tests.aio import run_sync
from tests.api import TestUser, assert_problem, wait_credits, wait_terminal
from tests.gateway.flows import SMALL
from tests.polling import eventually

BODY = {"prompt": "idempotent fox", **SMALL, "seed": 3}


def _post(api: httpx.Client, user: TestUser, key: str, body: dict = BODY) -> httpx.Response:
    return api.post("/v1/generations", headers=user.auth | {"Idempotency-Key": key}, json=body)


def test_same_key_and_body_replays_the_first_outcome(api: httpx.Client, user: TestUser) -> None:
    key = f"order-{uuid.uuid4()}"
    first = _post(api, user, key)
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    second = _post(api, user, key)
    assert second.status_code == 202 and second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert second.headers["location"] == first.headers["location"]
    wait_terminal(api, user, first.json()["id"])
    # Still the stored outcome (queued), not the current state: the same status and body.
    third = _post(api, user, key)
    assert (third.status_code, third.json()) == (202, first.json())
    # One generation, one reservation.
    assert [g["id"] for g in api.get("/v1/generations", headers=user.auth).json()["items"]] == [first.json()["id"]]
    wait_credits(api, user, {"available": 15, "reserved": 0})


def test_same_key_with_another_body_is_422(api: httpx.Client, user: TestUser) -> None:
    key = f"order-{uuid.uuid4()}"
    assert _post(api, user, key).status_code == 202
    assert_problem(_post(api, user, key, {**BODY, "prompt": "something else"}), 422, "idempotency_key_reused")
    # Keys belong to their user: another user's identical key is a new request.
    other = api.post("/v1/auth/signup", json={"email": f"x-{uuid.uuid4().hex[:8]}@example.com", "password": "p" * 12})
    other_user = TestUser(other.json()["user"]["id"], "", other.json()["access_token"])
    eventually(lambda: api.get("/v1/credits", headers=other_user.auth).json().get("available") == 20)
    r = _post(api, other_user, key)
    assert r.status_code == 202 and "idempotent-replayed" not in r.headers


def test_key_in_flight_is_409(api: httpx.Client, user: TestUser, stack_env: dict[str, str]) -> None:
    """Another replica holds the key (its request is running): ours must not run too."""
    key = f"order-{uuid.uuid4()}"
    fingerprint = idempotency.fingerprint("POST", "/v1/generations", _validated(BODY))

    async def hold() -> None:
        settings = GatewaySettings(database_url=stack_env["DATABASE_URL"])
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            async with UnitOfWork(make_sessionmaker(engine)).transaction() as session:
                assert (
                    await idempotency.claim(
                        session, settings, user_id=uuid.UUID(user.id), key=key, fingerprint=fingerprint
                    )
                    is None
                )
        finally:
            await engine.dispose()

    run_sync(hold())
    assert_problem(_post(api, user, key), 409, "idempotency_key_in_use")
    assert api.get("/v1/generations", headers=user.auth).json()["items"] == []


def test_concurrent_retries_reserve_once(api: httpx.Client, user: TestUser) -> None:
    key = f"order-{uuid.uuid4()}"
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: _post(api, user, key), range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {202, 409}, [r.text for r in responses]
    accepted = [r.json() for r in responses if r.status_code == 202]
    assert accepted and all(body == accepted[0] for body in accepted)
    for r in responses:
        if r.status_code == 409:
            assert r.json()["code"] == "idempotency_key_in_use"
    wait_terminal(api, user, accepted[0]["id"])
    wait_credits(api, user, {"available": 15, "reserved": 0})
    assert len(api.get("/v1/generations", headers=user.auth).json()["items"]) == 1


def test_insufficient_credits_is_stored_but_validation_is_not(api: httpx.Client, user: TestUser) -> None:
    key = f"order-{uuid.uuid4()}"
    big = {**BODY, "n": 4}
    assert _post(api, user, key, big).status_code == 202  # 20 credits: all of them
    key2 = f"order-{uuid.uuid4()}"
    first = _post(api, user, key2)
    assert_problem(first, 402, "insufficient_credits")
    replay = _post(api, user, key2)
    assert replay.status_code == 402 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    # A refused-by-validation request stores nothing: the key stays usable.
    key3 = f"order-{uuid.uuid4()}"
    assert_problem(_post(api, user, key3, {**BODY, "model": "no-such-model"}), 422, "validation_error")
    assert_problem(_post(api, user, key3, {**BODY, "n": 1}), 402, "insufficient_credits")


def _validated(body: dict) -> dict:
    from gateway.schemas.generations import GenerationCreate

    return GenerationCreate.model_validate(body).model_dump(mode="json")
