"""What handlers need, created by the app's lifespan and reached through FastStream's context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from faststream import Context

from genimage_common.database import SessionMaker
from genimage_common.outbox import OutboxRelay

from .settings import GallerySettings


@dataclass
class Deps:
    settings: GallerySettings
    sessions: SessionMaker
    relay: OutboxRelay
    # Queries: autocommit sessions (no BEGIN/ROLLBACK round trips around a read).
    readers: SessionMaker


GalleryDeps = Annotated[Deps, Context("deps")]
