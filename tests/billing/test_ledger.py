"""The ledger's operations on a real PostgreSQL: grants, holds, partial commits, voids, expiry,
late completions, and the database refusing what the ledger must never do."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from billing import ledger, statement
from billing.ledger import Outcome
from billing.models import outbox, transfers
from genimage_common.database import SessionMaker
from genimage_common.errors import Conflict, InsufficientCredits, ValidationFailed
from genimage_common.ids import new_id
from tests.billing.factories import funded_user
from tests.billing.invariants import violations

TTL = timedelta(minutes=15)


async def balance(sessions: SessionMaker, user_id: uuid.UUID) -> tuple[int, int]:
    async with sessions() as session:
        bal = await ledger.balance(session, user_id=user_id)
    return bal.available, bal.held


async def reserve(sessions: SessionMaker, user_id: uuid.UUID, amount: int, *, units: int = 1, gid=None):  # type: ignore[no-untyped-def]
    gid = gid or new_id()
    async with sessions.begin() as session:
        hold, _ = await ledger.reserve(session, user_id=user_id, generation_id=gid, amount=amount, units=units, ttl=TTL)
    return hold


async def outbox_types(sessions: SessionMaker, user_id: uuid.UUID) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(
            select(outbox.c.payload["type"].astext).where(outbox.c.subject.like(f"%.{user_id}")).order_by(outbox.c.seq)
        )
    return [t.removeprefix("genimage.billing.").removesuffix(".v1") for t in rows.scalars()]


async def assert_consistent(sessions: SessionMaker) -> None:
    async with sessions() as session:
        assert await violations(session) == {}


async def test_signup_opens_the_account_and_grants_once(sessions: SessionMaker) -> None:
    user = new_id()
    for _ in range(2):
        async with sessions.begin() as session:
            await ledger.open_account(session, user_id=user, signup_grant=20)
    assert await balance(sessions, user) == (20, 0)
    assert await outbox_types(sessions, user) == ["account_opened", "credits_granted"]
    await assert_consistent(sessions)


async def test_a_grant_is_applied_once_per_reference_and_conflicts_on_other_terms(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 0)
    for _ in range(2):
        async with sessions.begin() as session:
            bal = await ledger.grant(session, user_id=user, amount=100, reason="purchase", reference="evt_123")
        assert (bal.available, bal.held) == (100, 0)
    with pytest.raises(Conflict):
        async with sessions.begin() as session:
            await ledger.grant(session, user_id=user, amount=99, reason="purchase", reference="evt_123")
    other = await funded_user(sessions, 0)
    with pytest.raises(Conflict):
        async with sessions.begin() as session:
            await ledger.grant(session, user_id=other, amount=100, reason="purchase", reference="evt_123")
    # The same reference under another reason is another key.
    async with sessions.begin() as session:
        await ledger.grant(session, user_id=user, amount=5, reason="admin", reference="evt_123")
    assert await balance(sessions, user) == (105, 0)
    assert await balance(sessions, other) == (0, 0)
    async with sessions() as session:
        purchases = await session.scalar(text("SELECT sum(amount) FROM billing.entries WHERE account = 'purchases'"))
    assert purchases == -100
    await assert_consistent(sessions)


async def test_a_grant_opens_the_account_of_a_user_billing_has_not_seen(sessions: SessionMaker) -> None:
    user = new_id()
    async with sessions.begin() as session:
        await ledger.grant(session, user_id=user, amount=50, reason="purchase", reference=f"evt-{user}")
    async with sessions.begin() as session:  # the registration arrives later: signup grant still once
        await ledger.open_account(session, user_id=user, signup_grant=20)
    assert await balance(sessions, user) == (70, 0)
    assert await outbox_types(sessions, user) == ["account_opened", "credits_granted", "credits_granted"]


async def test_reserve_is_idempotent_by_generation_and_conflicts_on_other_terms(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 20)
    gid = new_id()
    first = await reserve(sessions, user, 10, units=2, gid=gid)
    again = await reserve(sessions, user, 10, units=2, gid=gid)
    assert again.expires_at == first.expires_at and again.status == "pending"
    assert await balance(sessions, user) == (10, 10)
    for amount, units in [(5, 2), (10, 1)]:
        with pytest.raises(Conflict):
            await reserve(sessions, user, amount, units=units, gid=gid)
    stranger = await funded_user(sessions, 20)
    with pytest.raises(Conflict):
        await reserve(sessions, stranger, 10, units=2, gid=gid)
    assert await balance(sessions, user) == (10, 10)
    assert await balance(sessions, stranger) == (20, 0)
    assert await outbox_types(sessions, user) == ["account_opened", "credits_granted", "credits_reserved"]


async def test_insufficient_credits_reserve_nothing(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 7)
    with pytest.raises(InsufficientCredits) as err:
        await reserve(sessions, user, 10)
    assert err.value.fields == {"available": 7, "requested": 10}
    with pytest.raises(InsufficientCredits) as err:
        await reserve(sessions, new_id(), 5)  # no account at all
    assert err.value.fields == {"available": 0, "requested": 5}
    assert await balance(sessions, user) == (7, 0)
    async with sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM billing.holds")) == 0


async def test_partial_commit_charges_what_was_delivered_and_releases_the_rest(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 30)
    hold = await reserve(sessions, user, 20, units=4)
    async with sessions.begin() as session:
        assert await ledger.commit(session, generation_id=hold.generation_id, delivered=3) == Outcome.COMMITTED
    assert await balance(sessions, user) == (15, 0)
    async with sessions() as session:
        items, _ = await statement.ledger_page(session, user_id=user, limit=10, cursor=None)
        revenue = await session.scalar(text("SELECT sum(amount) FROM billing.entries WHERE account = 'revenue'"))
    assert [(i["type"], i["amount"], i["balance_after"]) for i in items] == [
        ("release", 5, 15),
        ("commit", 0, 10),
        ("reserve", -20, 10),
        ("grant", 30, 30),
    ]
    assert revenue == 15
    await assert_consistent(sessions)


async def test_delivering_more_than_reserved_never_charges_more(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 10)
    hold = await reserve(sessions, user, 10, units=2)
    async with sessions.begin() as session:
        await ledger.commit(session, generation_id=hold.generation_id, delivered=5)
    assert await balance(sessions, user) == (0, 0)
    async with sessions() as session:
        assert await session.scalar(text("SELECT committed FROM billing.holds")) == 10


async def test_a_second_resolution_is_refused_and_changes_nothing(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 10)
    hold = await reserve(sessions, user, 5)
    async with sessions.begin() as session:
        assert await ledger.commit(session, generation_id=hold.generation_id, delivered=1) == Outcome.COMMITTED
    for attempt in (
        lambda s: ledger.void(s, generation_id=hold.generation_id, reason="failed"),
        lambda s: ledger.void(s, generation_id=hold.generation_id, reason="canceled"),
        lambda s: ledger.expire(s, generation_id=hold.generation_id),
        lambda s: ledger.commit(s, generation_id=hold.generation_id, delivered=0),
    ):
        async with sessions.begin() as session:
            assert await attempt(session) == Outcome.ALREADY_RESOLVED
    assert await balance(sessions, user) == (5, 0)
    types = await outbox_types(sessions, user)
    assert types.count("credits_committed") == 1 and "credits_refunded" not in types
    async with sessions.begin() as session:
        assert await ledger.void(session, generation_id=new_id(), reason="failed") == Outcome.NO_HOLD


async def test_void_refunds_the_hold_in_full(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 10)
    hold = await reserve(sessions, user, 10, units=2)
    async with sessions.begin() as session:
        assert await ledger.void(session, generation_id=hold.generation_id, reason="canceled") == Outcome.VOIDED
    assert await balance(sessions, user) == (10, 0)
    async with sessions() as session:
        row = (await session.execute(text("SELECT status, void_reason FROM billing.holds"))).one()
    assert tuple(row) == ("voided", "canceled")
    await assert_consistent(sessions)


async def test_a_completion_after_expiry_is_charged_when_the_balance_allows(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 12)
    hold = await reserve(sessions, user, 10, units=2)
    async with sessions.begin() as session:
        assert await ledger.expire(session, generation_id=hold.generation_id) == Outcome.EXPIRED
    assert await balance(sessions, user) == (12, 0)
    async with sessions.begin() as session:
        assert await ledger.commit(session, generation_id=hold.generation_id, delivered=1) == Outcome.LATE_COLLECTED
    async with sessions.begin() as session:  # a duplicate completion charges nothing more
        assert await ledger.commit(session, generation_id=hold.generation_id, delivered=2) == Outcome.ALREADY_RESOLVED
    assert await balance(sessions, user) == (7, 0)
    assert (await outbox_types(sessions, user))[-2:] == ["credits_refunded", "credits_committed"]
    await assert_consistent(sessions)


async def test_a_completion_after_expiry_that_the_balance_cannot_cover_is_uncollected(
    sessions: SessionMaker,
) -> None:
    user = await funded_user(sessions, 10)
    hold = await reserve(sessions, user, 10)
    async with sessions.begin() as session:
        await ledger.expire(session, generation_id=hold.generation_id)
    spent = await reserve(sessions, user, 8)  # the refunded credits are spent meanwhile
    assert spent.status == "pending"
    async with sessions.begin() as session:
        outcome = await ledger.commit(session, generation_id=hold.generation_id, delivered=1)
    assert outcome == Outcome.LATE_UNCOLLECTED
    assert await balance(sessions, user) == (2, 8)
    async with sessions() as session:
        late = text("SELECT late_outcome, late_amount FROM billing.holds WHERE status = 'expired'")
        row = (await session.execute(late)).one()
    assert tuple(row) == ("uncollected", 10)
    async with sessions.begin() as session:
        assert await ledger.commit(session, generation_id=hold.generation_id, delivered=1) == Outcome.ALREADY_RESOLVED
    await assert_consistent(sessions)


async def test_expire_due_expires_only_holds_past_their_expiry(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 20)
    async with sessions.begin() as session:
        await ledger.reserve(session, user_id=user, generation_id=new_id(), amount=5, ttl=timedelta(seconds=-1))
        await ledger.reserve(session, user_id=user, generation_id=new_id(), amount=5, ttl=TTL)
    async with sessions.begin() as session:
        assert await ledger.expire_due(session) == 1
    async with sessions.begin() as session:
        assert await ledger.expire_due(session) == 0
    assert await balance(sessions, user) == (15, 5)
    async with sessions() as session:
        assert await ledger.pending_holds(session) == 1


async def test_the_statement_pages_newest_first_with_a_cursor(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 50)
    for _ in range(4):
        await reserve(sessions, user, 1)
    seen: list[str] = []
    cursor = None
    async with sessions() as session:
        while True:
            items, cursor = await statement.ledger_page(session, user_id=user, limit=2, cursor=cursor)
            seen += [i["id"] for i in items]
            if cursor is None:
                break
        with pytest.raises(ValidationFailed):
            await statement.ledger_page(session, user_id=user, limit=2, cursor="not-a-cursor")
        other, _ = await statement.ledger_page(session, user_id=new_id(), limit=10, cursor=None)
        ids = (await session.execute(select(transfers.c.id).where(transfers.c.user_id == user))).scalars().all()
    assert seen == [str(i) for i in sorted(ids, reverse=True)]
    assert len(seen) == 5 and other == []


# --- the database's own guard ------------------------------------------------------------


async def refused(sessions: SessionMaker, sql: str, **params: object) -> str:
    """Run ``sql`` in a transaction; return the database's refusal (at the statement or at commit)."""
    with pytest.raises(IntegrityError) as err:
        async with sessions.begin() as session:
            await session.execute(text(sql), params)
    return str(err.value.orig)


async def test_the_database_refuses_what_the_ledger_must_never_do(sessions: SessionMaker) -> None:
    user = await funded_user(sessions, 10)
    hold = await reserve(sessions, user, 4)
    async with sessions.begin() as session:
        await ledger.commit(session, generation_id=hold.generation_id, delivered=1)
    u, g = str(user), str(hold.generation_id)

    # Overdraw, directly.
    assert "available_not_negative" in await refused(
        sessions, "UPDATE billing.accounts SET available = available - 100 WHERE user_id = :u", u=u
    )
    # Money from nowhere: a balance change without entries.
    assert "not the total of its entries" in await refused(
        sessions, "UPDATE billing.accounts SET available = available + 100 WHERE user_id = :u", u=u
    )
    # A transfer whose entries do not balance.
    assert "do not balance" in await refused(
        sessions,
        """
        WITH a AS (UPDATE billing.accounts SET available = available + 5 WHERE user_id = :u RETURNING available, held),
        t AS (INSERT INTO billing.transfers (kind, user_id, reference, amount, available_delta, held_delta,
                                             available_after, held_after)
              SELECT 'grant', :u, 'admin:x', 5, 5, 0, available, held FROM a RETURNING id)
        INSERT INTO billing.entries (transfer_id, account, user_id, amount) SELECT id, 'available', :u, 5 FROM t
        """,
        u=u,
    )
    # A second resolution of the committed hold, or a changed amount.
    assert "already committed" in await refused(
        sessions, "UPDATE billing.holds SET status = 'voided', void_reason = 'failed' WHERE generation_id = :g", g=g
    )
    assert "immutable" in await refused(sessions, "UPDATE billing.holds SET amount = 1 WHERE generation_id = :g", g=g)
    # A second commit transfer for the same hold.
    assert "one_transfer_per_kind_and_generation" in await refused(
        sessions,
        """
        INSERT INTO billing.transfers (kind, user_id, generation_id, amount, available_delta, held_delta,
                                       available_after, held_after)
        VALUES ('commit', :u, :g, 4, 0, -4, 6, 0)
        """,
        u=u,
        g=g,
    )
    # History is append-only.
    assert "append-only" in await refused(sessions, "DELETE FROM billing.entries")
    assert "append-only" in await refused(sessions, "UPDATE billing.transfers SET amount = amount + 1")
    # A pending hold nobody paid for.
    assert "pending holds reserve" in await refused(
        sessions,
        """
        INSERT INTO billing.holds (generation_id, user_id, amount, expires_at)
        VALUES (gen_random_uuid(), :u, 3, now() + interval '1 hour')
        """,
        u=u,
    )
    assert await balance(sessions, user) == (6, 0)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(transfers)) == 3  # grant, reserve, commit
    await assert_consistent(sessions)
