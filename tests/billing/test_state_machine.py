"""A hypothesis state machine over the real ledger on PostgreSQL: random sequences of grants,
reserves, commits (full and partial), voids, expiries, duplicates and out-of-order deliveries,
checked against a model and against the ledger's invariants after every step."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule

from billing import consumers, ledger
from billing.deps import Deps
from billing.settings import BillingSettings
from genimage_common.database import make_engine, make_sessionmaker
from genimage_common.errors import Conflict, InsufficientCredits
from genimage_common.events import utcnow
from genimage_common.ids import new_id
from genimage_common.pricing import Pricing, share
from tests.billing import factories
from tests.billing.invariants import violations

TTL = timedelta(minutes=15)


@dataclass
class ModelHold:
    user: uuid.UUID
    amount: int
    units: int
    status: str = "pending"
    late: str | None = None


class LedgerMachine(RuleBasedStateMachine):
    """Each example works with fresh users, so examples share one database without interfering."""

    loop: asyncio.AbstractEventLoop
    deps: Deps

    users = Bundle("users")
    generations = Bundle("generations")

    def __init__(self) -> None:
        super().__init__()
        self.available: dict[uuid.UUID, int] = {}
        self.held: dict[uuid.UUID, int] = {}
        self.holds: dict[uuid.UUID, ModelHold] = {}
        self.requests: dict[uuid.UUID, tuple[uuid.UUID, int, int]] = {}
        self.grants: dict[tuple[str, str], tuple[uuid.UUID, int]] = {}
        self.delivered: list[tuple[str, object]] = []  # events already applied once, to redeliver
        self.example = uuid.uuid4().hex[:8]  # grant references collide within an example only

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    # --- accounts and grants ----------------------------------------------------------------

    @initialize(target=users, signup=st.integers(0, 30))
    def first_user(self, signup: int) -> uuid.UUID:
        return self.register(signup)

    @rule(target=users, signup=st.integers(0, 30))
    def another_user(self, signup: int) -> uuid.UUID:
        return self.register(signup)

    def register(self, signup: int) -> uuid.UUID:
        user = new_id()
        self.deps.pricing = Pricing(signup_grant=signup)
        event = factories.registered(user)
        self.run(consumers.apply_user_registered(self.deps, event))
        self.available[user], self.held[user] = signup, 0
        self.delivered.append(("registered", event))
        return user

    @rule(
        user=users,
        amount=st.integers(1, 60),
        reason=st.sampled_from(["purchase", "admin", "promo"]),
        reference=st.sampled_from(["a", "b", "c"]),
    )
    def grant(self, user: uuid.UUID, amount: int, reason: str, reference: str) -> None:
        ref = f"{self.example}-{reference}"
        previous = self.grants.get((reason, ref))

        async def call() -> None:
            async with self.deps.sessions.begin() as session:
                await ledger.grant(session, user_id=user, amount=amount, reason=reason, reference=ref)  # type: ignore[arg-type]

        if previous is not None and previous != (user, amount):
            with pytest.raises(Conflict):
                self.run(call())
            return
        self.run(call())
        if previous is None:
            self.grants[(reason, ref)] = (user, amount)
            self.available[user] += amount

    # --- holds ------------------------------------------------------------------------------

    @rule(target=generations, user=users, amount=st.integers(1, 40), units=st.integers(1, 4))
    def reserve(self, user: uuid.UUID, amount: int, units: int) -> uuid.UUID:
        gid = new_id()
        self.requests[gid] = (user, amount, units)
        self.place(gid, user, amount, units)
        return gid

    @rule(gid=generations)
    def reserve_again(self, gid: uuid.UUID) -> None:
        """The gateway retrying the same request: a replay (or, if it never held, a fresh try)."""
        user, amount, units = self.requests[gid]
        self.place(gid, user, amount, units)

    @rule(gid=generations, extra=st.integers(1, 5))
    def reserve_other_amount(self, gid: uuid.UUID, extra: int) -> None:
        user, amount, units = self.requests[gid]
        if gid in self.holds:
            with pytest.raises(Conflict):
                self.run(self.reserve_call(gid, user, amount + extra, units))
        else:
            self.requests[gid] = (user, amount + extra, units)
            self.place(gid, user, amount + extra, units)

    async def reserve_call(self, gid: uuid.UUID, user: uuid.UUID, amount: int, units: int) -> ledger.Hold:
        async with self.deps.sessions.begin() as session:
            hold, _ = await ledger.reserve(
                session, user_id=user, generation_id=gid, amount=amount, units=units, ttl=TTL
            )
        return hold

    def place(self, gid: uuid.UUID, user: uuid.UUID, amount: int, units: int) -> None:
        existing = self.holds.get(gid)
        if existing is not None:
            hold = self.run(self.reserve_call(gid, user, amount, units))
            assert hold.status == existing.status
            return
        if amount > self.available[user]:
            with pytest.raises(InsufficientCredits):
                self.run(self.reserve_call(gid, user, amount, units))
            return
        hold = self.run(self.reserve_call(gid, user, amount, units))
        assert hold.status == "pending"
        self.holds[gid] = ModelHold(user, amount, units)
        self.available[user] -= amount
        self.held[user] += amount

    # --- terminal events (possibly for a generation that never held: out of order) ------------

    def owner(self, gid: uuid.UUID) -> uuid.UUID:
        return self.requests[gid][0]

    @rule(gid=generations, delivered=st.integers(0, 5), copies=st.integers(1, 3))
    def complete(self, gid: uuid.UUID, delivered: int, copies: int) -> None:
        """``copies`` completions of one generation, each with its own event id (a generation
        worker that published twice): only the first may change anything."""
        for _ in range(copies):
            self.complete_once(gid, delivered)

    def complete_once(self, gid: uuid.UUID, delivered: int) -> None:
        event = factories.completed(self.owner(gid), gid, outputs=delivered, event_id=new_id())
        outcome = self.run(consumers.apply_completed(self.deps, event))
        self.delivered.append(("completed", event))
        hold = self.holds.get(gid)
        due = share(hold.amount, hold.units, delivered) if hold else 0
        if hold is None:
            assert outcome == ledger.Outcome.NO_HOLD
        elif hold.status == "pending":
            self.available[hold.user] += hold.amount - due
            self.held[hold.user] -= hold.amount
            hold.status = "committed"
            assert outcome == ledger.Outcome.COMMITTED
        elif hold.status == "expired" and hold.late is None and due:
            if self.available[hold.user] >= due:
                self.available[hold.user] -= due
                hold.late = "collected"
                assert outcome == ledger.Outcome.LATE_COLLECTED
            else:
                hold.late = "uncollected"
                assert outcome == ledger.Outcome.LATE_UNCOLLECTED
        else:
            assert outcome in (ledger.Outcome.ALREADY_RESOLVED, ledger.Outcome.NOTHING_DUE)

    @rule(gid=generations, reason=st.sampled_from(["failed", "canceled"]), copies=st.integers(1, 2))
    def void(self, gid: uuid.UUID, reason: str, copies: int) -> None:
        make = factories.failed if reason == "failed" else factories.canceled
        for _ in range(copies):
            event = make(self.owner(gid), gid, event_id=new_id())
            outcome = self.run(consumers.apply_voiding(self.deps, event, reason=reason))  # type: ignore[arg-type]
            self.delivered.append((reason, event))
            hold = self.holds.get(gid)
            if hold is not None and hold.status == "pending":
                self.refund(hold, "voided")
                assert outcome == ledger.Outcome.VOIDED
            else:
                assert outcome in (ledger.Outcome.ALREADY_RESOLVED, ledger.Outcome.NO_HOLD)

    @rule(gid=generations)
    def expire(self, gid: uuid.UUID) -> None:
        async def call() -> ledger.Outcome:
            async with self.deps.sessions.begin() as session:
                return await ledger.expire(session, generation_id=gid)

        outcome = self.run(call())
        hold = self.holds.get(gid)
        if hold is not None and hold.status == "pending":
            self.refund(hold, "expired")
            assert outcome == ledger.Outcome.EXPIRED
        else:
            assert outcome != ledger.Outcome.EXPIRED

    @precondition(lambda self: any(h.status == "pending" for h in self.holds.values()))
    @rule()
    def sweep_after_ttl(self) -> None:
        """The sweeper, run as if the TTL had passed: every pending hold expires (other examples'
        leftovers too, which no model tracks)."""

        async def call() -> int:
            async with self.deps.sessions.begin() as session:
                return await ledger.expire_due(session, now=utcnow() + TTL + timedelta(seconds=1), limit=10_000)

        expired = self.run(call())
        pending = [h for h in self.holds.values() if h.status == "pending"]
        assert expired >= len(pending)
        for hold in pending:
            self.refund(hold, "expired")

    def refund(self, hold: ModelHold, status: str) -> None:
        self.available[hold.user] += hold.amount
        self.held[hold.user] -= hold.amount
        hold.status = status

    @precondition(lambda self: self.delivered)
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """JetStream redelivers a message already applied: the inbox makes it a no-op."""
        kind, event = data.draw(st.sampled_from(self.delivered))
        if kind == "registered":
            self.run(consumers.apply_user_registered(self.deps, event))  # type: ignore[arg-type]
        elif kind == "completed":
            assert self.run(consumers.apply_completed(self.deps, event)) is None  # type: ignore[arg-type]
        else:
            assert self.run(consumers.apply_voiding(self.deps, event, reason=kind)) is None  # type: ignore[arg-type]

    # --- after every step ---------------------------------------------------------------------

    @invariant()
    def ledger_matches_model_and_invariants_hold(self) -> None:
        async def check() -> tuple[dict, dict]:
            async with self.deps.sessions() as session:
                found = await violations(session, self.available)
                actual = {}
                for user in self.available:
                    bal = await ledger.balance(session, user_id=user)
                    actual[user] = (bal.available, bal.held)
            return found, actual

        found, actual = self.run(check())
        assert found == {}
        assert actual == {u: (self.available[u], self.held[u]) for u in self.available}


def test_ledger_state_machine(database_url: str) -> None:
    loop = asyncio.new_event_loop()
    engine = make_engine(database_url, pool_size=2)
    try:
        LedgerMachine.loop = loop
        LedgerMachine.deps = Deps(settings=BillingSettings(), pricing=Pricing(), sessions=make_sessionmaker(engine))
        runner = LedgerMachine.TestCase
        runner.settings = settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        runner().runTest()
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()
