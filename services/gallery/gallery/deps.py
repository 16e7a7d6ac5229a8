"""What handlers need, created by the app's lifespan and reached through FastStream's context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from faststream import Context

from genimage_common.database import SessionMaker
from genimage_common.outbox import OutboxRelay
from genimage_common.unit_of_work import UnitOfWork

from .settings import GallerySettings


@dataclass
class Deps:
    settings: GallerySettings
    sessions: SessionMaker
    relay: OutboxRelay
    # Queries: autocommit sessions (no BEGIN/ROLLBACK round trips around a read).
    readers: SessionMaker
    # Every entry point's unit of work: commands commit, then wake the relay for their events.
    uow: UnitOfWork = field(init=False)

    def __post_init__(self) -> None:
        self.uow = UnitOfWork(self.sessions, relay=self.relay, readers=self.readers)


GalleryDeps = Annotated[Deps, Context("deps")]
