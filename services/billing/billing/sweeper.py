"""Expires holds past their TTL. Every replica runs one; ``FOR UPDATE SKIP LOCKED`` splits the due
holds between them and the hold's pending → expired update happens once, whoever gets there."""

from __future__ import annotations

import asyncio
import logging

from genimage_common.outage import Outage

from . import ledger, metrics
from .deps import Deps

log = logging.getLogger(__name__)


async def sweep_once(deps: Deps) -> int:
    """Expire one batch of due holds; returns how many this sweeper expired."""
    async with deps.uow.transaction() as session:
        return await ledger.expire_due(session, limit=deps.settings.sweep_batch)


async def observe_pending(deps: Deps) -> None:
    async with deps.uow.read() as session:
        metrics.HOLDS_PENDING.set(await ledger.pending_holds(session))


async def sweep_forever(deps: Deps) -> None:
    interval = deps.settings.sweep_interval_s
    # The database away: one line per backoff step, not one per round.
    outage = Outage.from_settings("expiry sweep", log, deps.settings)
    while True:
        pause = interval
        try:
            expired = await sweep_once(deps)
            if expired:
                log.info("holds expired", extra={"count": expired})
            await observe_pending(deps)
            outage.succeeded()
            if expired >= deps.settings.sweep_batch:
                continue  # more are due: no pause
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The next round retries the holds still due.
            pause = outage.failed(exc, interval=interval)
        await asyncio.sleep(pause)
