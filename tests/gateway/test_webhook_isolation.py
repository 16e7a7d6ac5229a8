"""One slow webhook receiver must not hold up anybody else's webhooks: every delivery has a
total deadline (a receiver that trickles a byte at a time never trips a per-read timeout),
deliveries run side by side instead of in batches that wait for their slowest member, and an
attempt is counted when it starts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api import TestUser, signup
from tests.gateway.flows import generate
from tests.gateway.servers import Receiver, SlowReceiver
from tests.polling import eventually
from tests.session_env import SESSION_ENV

# The session's gateway: GATEWAY_WEBHOOK_TIMEOUT_S=5. The slow receiver sends a byte every
# 3 s (under the 5 s per-read timeout), so its answer would take about two minutes.
DEADLINE_S = float(SESSION_ENV["GATEWAY_WEBHOOK_TIMEOUT_S"])


@pytest.fixture()
def slow() -> Iterator[SlowReceiver]:
    server = SlowReceiver(interval=3.0)
    try:
        yield server
    finally:
        server.close()


def _deliveries(api: httpx.Client, user: TestUser, generation_id: str) -> list[dict]:
    r = api.get(f"/v1/generations/{generation_id}/webhooks", headers=user.auth)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
def test_a_slow_receiver_does_not_stall_other_users(
    api: httpx.Client, user: TestUser, receiver: Receiver, slow: SlowReceiver
) -> None:
    stalled = generate(api, user, prompt="slow hook", webhook=slow.url(), webhook_events=["completed"])
    eventually(lambda: slow.accepted, timeout=30, what="the slow receiver got its delivery")
    started = slow.accepted[0]

    # The attempt is counted as soon as it starts, not when (if ever) it ends: a replica that
    # dies mid-delivery cannot make a delivery retry forever uncounted.
    in_flight = _deliveries(api, user, stalled["id"])
    assert [(d["status"], d["attempts"]) for d in in_flight] == [("pending", 1)], in_flight
    assert not slow.hung_up

    other = signup(api)
    fast = generate(api, other, prompt="fast hook", webhook=receiver.answer("/fast"), webhook_events=["completed"])
    eventually(lambda: receiver.at("/fast"), timeout=DEADLINE_S + 10, what="the other user's webhook")
    fast_at = receiver.at("/fast")[0].at
    # Delivered while the slow one was still being waited for: nothing queued behind it.
    assert not slow.hung_up or slow.hung_up[0] > fast_at, (slow.hung_up, fast_at)
    assert _deliveries(api, other, fast["id"])[0]["status"] == "delivered"

    # The slow delivery is abandoned at its total deadline, and retried later.
    eventually(lambda: slow.hung_up, timeout=DEADLINE_S + 10, what="the slow delivery given up")
    took = slow.hung_up[0] - started
    print(
        f"slow delivery cut off after {took:.1f} s; the other user's arrived {fast_at - started:.1f} s after it began"
    )
    assert DEADLINE_S - 1 < took < DEADLINE_S + 2.5, took

    def failed_once() -> dict | None:
        (d,) = _deliveries(api, user, stalled["id"])
        return d if d["last_error"] else None

    delivery = eventually(failed_once, timeout=10, what="the attempt recorded")
    assert delivery["attempts"] >= 1 and "deadline" in delivery["last_error"], delivery
    assert delivery["last_status_code"] is None


@pytest.mark.timeout(120)
def test_many_slow_deliveries_leave_room_for_others(
    api: httpx.Client, user: TestUser, receiver: Receiver, slow: SlowReceiver
) -> None:
    """More stalled deliveries than the sender runs at once: the others still get through
    within about one deadline, not after every stalled one."""
    # Every event of four generations: more deliveries than the sender runs at once (8).
    stalled = [generate(api, user, prompt=f"slow {i}", webhook=slow.url(f"/slow{i}")) for i in range(4)]
    eventually(lambda: len(slow.accepted) >= 8, timeout=30, what="the sender busy with slow deliveries")
    other = signup(api)
    start = time.monotonic()
    generate(api, other, prompt="fast hook", webhook=receiver.answer("/fast2"), webhook_events=["completed"])
    eventually(lambda: receiver.at("/fast2"), timeout=2 * DEADLINE_S + 10, what="the other user's webhook")
    assert receiver.at("/fast2")[0].at - start < 2 * DEADLINE_S + 3
    assert len(stalled) == 4
