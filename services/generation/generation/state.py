"""State the replicas share, in a NATS KV bucket (JetStream, so as durable as the streams):

- ``cancel.<generation_id>``: a cancel was requested. Checked before a job runs (a queued job
  never runs) and watched by every replica (a running job stops wherever it runs).
- ``transient.<generation_id>``: how many deliveries of the job failed because a dependency
  (object storage, NATS) was away. They do not count against the job's bounded deliveries:
  every replica sees the same count, also after a restart.
- ``terminal.<generation_id>``: the terminal event (completed, failed or canceled), written with
  create-if-absent. Whoever creates it publishes it; everyone else re-publishes *that* event.
  So a generation has exactly one outcome even when a cancel races a completion or a job is
  redelivered after its worker died, and a redelivered job never renders again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from genimage_common.events import Event, parse_event

log = logging.getLogger(__name__)


class JobState:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._watcher: Any = None
        self._watch_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, *, bucket: str, ttl_s: float, replicas: int = 1) -> JobState:
        """Bind the bucket, creating it when missing (safe when replicas start together)."""
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            config = KeyValueConfig(
                bucket=bucket,
                description="genimage generation: cancel requests and terminal outcomes",
                history=1,
                ttl=ttl_s,
                storage=StorageType.FILE,
                replicas=replicas,
            )
            kv = await js.create_key_value(config)
        return cls(kv)

    # --- cancel requests ----------------------------------------------------------------------

    async def request_cancel(self, generation_id: uuid.UUID) -> None:
        await self.kv.put(f"cancel.{generation_id}", b"1")

    async def cancel_requested(self, generation_id: uuid.UUID) -> bool:
        try:
            await self.kv.get(f"cancel.{generation_id}")
        except (KeyNotFoundError, KeyDeletedError):
            return False
        return True

    async def watch_cancels(self, on_cancel: Callable[[uuid.UUID], None]) -> None:
        """Call ``on_cancel`` for every cancel request, from now on (and those already there)."""
        self._watcher = await self.kv.watch("cancel.*", ignore_deletes=True, headers_only=True)

        async def pump() -> None:
            async for entry in self._watcher:
                if entry is None:  # end of the initial values
                    continue
                with contextlib.suppress(ValueError):
                    on_cancel(uuid.UUID(entry.key.removeprefix("cancel.")))

        self._watch_task = asyncio.create_task(pump(), name="cancel-watch")

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task

    # --- transient failures -------------------------------------------------------------------

    async def transient_failures(self, generation_id: uuid.UUID) -> int:
        try:
            entry = await self.kv.get(f"transient.{generation_id}")
        except (KeyNotFoundError, KeyDeletedError):
            return 0
        return int(entry.value or b"0")

    async def record_transient_failure(self, generation_id: uuid.UUID) -> int:
        """Count one more transiently failed delivery; compare-and-set, so that two replicas
        that fail the same job at once both count."""
        key = f"transient.{generation_id}"
        for _ in range(5):
            try:
                entry = await self.kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                try:
                    await self.kv.create(key, b"1")
                    return 1
                except KeyWrongLastSequenceError:
                    continue
            count = int(entry.value or b"0") + 1
            try:
                await self.kv.update(key, str(count).encode(), last=entry.revision)
                return count
            except KeyWrongLastSequenceError:
                continue
        raise RuntimeError(f"could not count a transient failure of {generation_id}")

    # --- terminal outcomes --------------------------------------------------------------------

    async def terminal(self, generation_id: uuid.UUID) -> Event[Any] | None:
        try:
            entry = await self.kv.get(f"terminal.{generation_id}")
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return parse_event(entry.value) if entry.value else None

    async def settle(self, generation_id: uuid.UUID, event: Event[Any]) -> tuple[Event[Any], bool]:
        """Record ``event`` as the outcome unless one is recorded: (the outcome, whether it is ours)."""
        try:
            await self.kv.create(f"terminal.{generation_id}", event.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            existing = await self.terminal(generation_id)
            if existing is None:  # pragma: no cover - created and deleted in between: nothing deletes
                raise
            return existing, False
        return event, True
