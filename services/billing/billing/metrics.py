"""Business metrics of the ledger (names agreed in the cross-service interfaces).

Credits are counted when the transaction that moved them commits, never for a rollback: the
ledger notes each movement on the session (``count``), which the unit of work reports after
its commit.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession

from genimage_common.unit_of_work import on_commit

OPERATIONS = ("grant", "reserve", "commit", "release", "refund", "expire", "uncollected")

CREDITS = Counter(
    "genimage_credits_total",
    "Credits moved by the ledger, by operation (uncollected: due after expiry but not charged)",
    ["operation"],
)
HOLDS_PENDING = Gauge("genimage_holds_pending", "Holds reserved and not yet committed, voided or expired")

for _operation in OPERATIONS:
    CREDITS.labels(operation=_operation)


def count(session: AsyncSession, operation: str, amount: int) -> None:
    on_commit(session, CREDITS.labels(operation=operation).inc, amount)
