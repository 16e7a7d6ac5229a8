"""The ledger's invariants, checked from the outside with plain SQL: over the whole database,
or over the accounts, holds and transfers of some users only (cheap enough for every step)."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Each query returns offending ids; ``:scoped`` is false for the whole database, else the
# checks cover the users in ``:users`` (and the transfers, entries and holds that are theirs).
CHECKS = {
    "entries of every transfer sum to zero": """
        SELECT e.transfer_id FROM billing.entries e JOIN billing.transfers t ON t.id = e.transfer_id
         WHERE NOT :scoped OR t.user_id = ANY(:users)
         GROUP BY e.transfer_id HAVING sum(e.amount) <> 0 LIMIT 5
    """,
    "no user balance is negative": """
        SELECT user_id FROM billing.accounts
         WHERE (NOT :scoped OR user_id = ANY(:users)) AND (available < 0 OR held < 0) LIMIT 5
    """,
    "held equals the sum of pending holds": """
        SELECT a.user_id FROM billing.accounts a
          LEFT JOIN (SELECT user_id, sum(amount) AS s FROM billing.holds
                      WHERE status = 'pending' AND (NOT :scoped OR user_id = ANY(:users)) GROUP BY 1) p
            USING (user_id)
         WHERE (NOT :scoped OR a.user_id = ANY(:users)) AND a.held <> coalesce(p.s, 0) LIMIT 5
    """,
    "balances are the totals of their entries": """
        SELECT a.user_id FROM billing.accounts a
          LEFT JOIN (SELECT user_id,
                            sum(amount) FILTER (WHERE account = 'available') AS av,
                            sum(amount) FILTER (WHERE account = 'held') AS he
                       FROM billing.entries WHERE NOT :scoped OR user_id = ANY(:users) GROUP BY 1) e
            USING (user_id)
         WHERE (NOT :scoped OR a.user_id = ANY(:users))
           AND (a.available <> coalesce(e.av, 0) OR a.held <> coalesce(e.he, 0)) LIMIT 5
    """,
    "each hold is resolved at most once, for exactly what it held": """
        SELECT h.generation_id FROM billing.holds h
          LEFT JOIN (SELECT generation_id,
                            count(*) FILTER (WHERE kind IN ('refund', 'expire')) AS voids,
                            count(*) FILTER (WHERE kind IN ('commit', 'release')) AS settles,
                            sum(amount) AS total
                       FROM billing.transfers
                      WHERE kind IN ('commit', 'release', 'refund', 'expire') AND (NOT :scoped OR user_id = ANY(:users))
                      GROUP BY 1) t USING (generation_id)
         WHERE (NOT :scoped OR h.user_id = ANY(:users))
           AND ((h.status = 'pending' AND t.total IS NOT NULL)
                OR (h.status <> 'pending'
                    AND (t.total IS DISTINCT FROM h.amount OR (t.voids > 0 AND t.settles > 0) OR t.voids > 1)))
         LIMIT 5
    """,
    "a late charge only follows an expiry, once, as recorded": """
        SELECT h.generation_id FROM billing.holds h
          LEFT JOIN (SELECT generation_id, count(*) AS n, sum(amount) AS total FROM billing.transfers
                      WHERE kind = 'late_charge' AND (NOT :scoped OR user_id = ANY(:users)) GROUP BY 1) t
            USING (generation_id)
         WHERE (NOT :scoped OR h.user_id = ANY(:users))
           AND ((h.late_outcome IS NOT DISTINCT FROM 'collected') <> (t.n IS NOT NULL)
                OR (t.n IS NOT NULL AND (t.n > 1 OR h.status <> 'expired' OR t.total <> h.late_amount)))
         LIMIT 5
    """,
}


async def violations(session: AsyncSession, users: Collection[uuid.UUID] | None = None) -> dict[str, list[str]]:
    params = {"scoped": users is not None, "users": list(users or [])}
    found: dict[str, list[str]] = {}
    for name, sql in CHECKS.items():
        rows = (await session.execute(text(sql), params)).scalars().all()
        if rows:
            found[name] = [str(r) for r in rows]
    if users is None:
        total = await session.scalar(text("SELECT coalesce(sum(amount), 0) FROM billing.entries"))
        if total != 0:
            found["all entries sum to zero"] = [str(total)]
    return found
