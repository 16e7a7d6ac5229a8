"""Voids holds past their expiry. Every replica runs one; row locks keep them from colliding."""

from __future__ import annotations

import asyncio
import logging

from genimage_common.events import utcnow

from . import ledger
from .deps import Deps

log = logging.getLogger(__name__)


async def sweep_forever(deps: Deps) -> None:
    while True:
        try:
            async with deps.sessions.begin() as session:
                expired = await ledger.expire_due(session, now=utcnow())
            if expired:
                log.info("holds expired", extra={"count": expired})
                deps.relay.wake()
                continue
        except asyncio.CancelledError:
            raise
        except Exception:
            # The database may be away; the next round retries the same holds.
            log.exception("expiry sweep failed")
        await asyncio.sleep(deps.settings.sweep_interval_s)
