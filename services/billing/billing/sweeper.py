"""Expires holds past their TTL. Every replica runs one; ``FOR UPDATE SKIP LOCKED`` splits the due
holds between them and the hold's pending → expired update happens once, whoever gets there."""

from __future__ import annotations

import asyncio
import logging

from genimage_common.redelivery import is_transient

from . import ledger, metrics
from .deps import Deps
from .transaction import transaction

log = logging.getLogger(__name__)


async def sweep_once(deps: Deps) -> int:
    """Expire one batch of due holds; returns how many this sweeper expired."""
    async with transaction(deps) as session:
        return await ledger.expire_due(session, limit=deps.settings.sweep_batch)


async def observe_pending(deps: Deps) -> None:
    async with deps.sessions() as session:
        metrics.HOLDS_PENDING.set(await ledger.pending_holds(session))


async def sweep_forever(deps: Deps) -> None:
    while True:
        try:
            expired = await sweep_once(deps)
            if expired:
                log.info("holds expired", extra={"count": expired})
            await observe_pending(deps)
            if expired >= deps.settings.sweep_batch:
                continue  # more are due: no pause
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The database may be away; the next round retries the same holds.
            if is_transient(exc):
                log.warning("expiry sweep failed: database unavailable", extra={"error": repr(exc)[:300]})
            else:
                log.exception("expiry sweep failed")
        await asyncio.sleep(deps.settings.sweep_interval_s)
