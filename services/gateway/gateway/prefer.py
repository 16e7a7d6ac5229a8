"""``Prefer: wait=N`` (RFC 7240) as a route dependency: the route answers once the generation
it queued is finished, or after N seconds with what it is then.

The watch on the user's terminal events is taken when the dependency is set up, before the
route runs, so the terminal event of what the route queues cannot slip by unseen.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header

from genimage_common.contracts.records import GenerationRecord

from . import generations
from .deps import CurrentUser, Services, ServicesDep
from .live import TerminalWatch

PREFER = r"^[\x20-\x7e]{0,200}$"


def prefer_wait(header: str | None, maximum: float) -> float | None:
    """``Prefer: wait=N``, at most ``maximum`` seconds; None when absent."""
    for preference in (header or "").split(","):
        name, _, value = preference.split(";")[0].strip().partition("=")
        if name.strip().lower() == "wait" and value.strip().isdigit():
            return min(float(value.strip()), maximum)
    return None


class Wait:
    def __init__(
        self, services: Services, user_id: uuid.UUID, seconds: float | None, watch: TerminalWatch | None
    ) -> None:
        self._services = services
        self._user_id = user_id
        self.seconds = seconds
        self._watch = watch

    @property
    def applied(self) -> str | None:
        """The ``Preference-Applied`` header value, when the preference was honoured."""
        return f"wait={int(self.seconds)}" if self.seconds is not None else None

    async def until_terminal(self, generation: GenerationRecord) -> GenerationRecord:
        """The generation once finished, within the time asked for; else as it is then (as
        given, while the gallery has not seen it yet)."""
        if self._watch is None or self.seconds is None:
            return generation
        latest = await generations.wait_terminal(
            self._services, self._watch, user_id=self._user_id, generation_id=generation.id, timeout=self.seconds
        )
        return latest if latest is not None else generation


async def _wait(
    services: ServicesDep,
    user: CurrentUser,
    prefer: Annotated[
        str | None,
        Header(
            pattern=PREFER, description="`wait=N` (N ≤ 60): answer once finished or after N s", examples=["wait=30"]
        ),
    ] = None,
) -> AsyncIterator[Wait]:
    seconds = prefer_wait(prefer, services.settings.prefer_wait_max_s)
    if seconds is None or seconds <= 0:
        yield Wait(services, user.id, seconds, None)
        return
    async with TerminalWatch(services.broker.connection, user.id) as watch:
        yield Wait(services, user.id, seconds, watch)


PreferWaitDep = Annotated[Wait, Depends(_wait, scope="function")]
