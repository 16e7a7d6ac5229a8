"""Events as the other services emit them, with explicit times (a clock per test)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from genimage_common import events as ev
from genimage_common.ids import image_id_for, new_id, transition_event_id

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0

    def tick(self, ms: int = 1000) -> datetime:
        self.now += timedelta(milliseconds=ms)
        return self.now


@dataclass
class Events:
    """Builds events of one user; every event gets the next time of ``clock``."""

    user_id: uuid.UUID = field(default_factory=new_id)
    clock: Clock = field(default_factory=Clock)

    def _event(self, data: ev.EventData, *, subject: Any, event_id: uuid.UUID | None = None) -> ev.Event[Any]:
        event = ev.make_event(data, source="tests", subject=subject, event_id=event_id)
        return event.model_copy(update={"time": self.clock.tick()})

    # --- generation -----------------------------------------------------------------------

    def requested(
        self, gid: uuid.UUID, *, prompt: str = "a lighthouse", n: int = 1, kind: str = "image", cost: int = 5
    ) -> ev.Event[Any]:
        requested_at = self.clock.tick()
        data = ev.GenerationRequested(
            user_id=self.user_id,
            generation_id=gid,
            kind=kind,
            prompt=prompt,
            model="local",
            width=64,
            height=64,
            n=n,
            seed=1,
            cost=cost,
            hold_expires_at=requested_at + timedelta(minutes=15),
            requested_at=requested_at,
        )
        return self._event(data, subject=gid, event_id=transition_event_id(gid, "requested"))

    def started(self, gid: uuid.UUID, *, attempt: int = 1, provider: str = "local") -> ev.Event[Any]:
        data = ev.GenerationStarted(user_id=self.user_id, generation_id=gid, provider=provider, attempt=attempt)
        return self._event(data, subject=gid, event_id=transition_event_id(gid, f"started:{attempt}"))

    def progress(self, gid: uuid.UUID, value: float) -> ev.Event[Any]:
        data = ev.GenerationProgress(user_id=self.user_id, generation_id=gid, progress=value, stage="render")
        return self._event(data, subject=gid)

    def completed(self, gid: uuid.UUID, *, n: int = 1, kind: str = "image") -> ev.Event[Any]:
        ext, content_type = ("mp4", "video/mp4") if kind == "video" else ("png", "image/png")
        outputs = [
            ev.Output(
                image_id=image_id_for(gid, i),
                index=i,
                object_key=f"users/{self.user_id}/generations/{gid}/{i}.{ext}",
                thumbnail_key=f"users/{self.user_id}/generations/{gid}/{i}.thumb.webp",
                content_type=content_type,
                width=64,
                height=64,
                bytes=1000 + i,
                sha256=f"{i:064x}",
                duration_s=4.0 if kind == "video" else None,
            )
            for i in range(n)
        ]
        data = ev.GenerationCompleted(
            user_id=self.user_id,
            generation_id=gid,
            outputs=outputs,
            provider="local",
            model="local",
            seed=1,
            timings=ev.Timings(queue_ms=5, run_ms=50),
        )
        return self._event(data, subject=gid, event_id=transition_event_id(gid, "terminal"))

    def failed(self, gid: uuid.UUID) -> ev.Event[Any]:
        data = ev.GenerationFailed(
            user_id=self.user_id, generation_id=gid, error=ev.ErrorInfo(code="provider_error", message="boom")
        )
        return self._event(data, subject=gid, event_id=transition_event_id(gid, "terminal"))

    def canceled(self, gid: uuid.UUID) -> ev.Event[Any]:
        data = ev.GenerationCanceled(user_id=self.user_id, generation_id=gid)
        return self._event(data, subject=gid, event_id=transition_event_id(gid, "terminal"))

    # --- billing and identity -------------------------------------------------------------

    def committed(self, gid: uuid.UUID, amount: int) -> ev.Event[Any]:
        data = ev.CreditsCommitted(user_id=self.user_id, generation_id=gid, amount=amount, released=0, balance=10)
        return self._event(data, subject=gid)

    def refunded(self, gid: uuid.UUID, amount: int, reason: str = "failed") -> ev.Event[Any]:
        data = ev.CreditsRefunded(user_id=self.user_id, generation_id=gid, amount=amount, reason=reason, balance=20)
        return self._event(data, subject=gid)

    def registered(self) -> ev.Event[Any]:
        data = ev.UserRegistered(user_id=self.user_id, email="private@example.com", registered_at=self.clock.now)
        return self._event(data, subject=self.user_id)

    def user_deleted(self) -> ev.Event[Any]:
        return self._event(ev.UserDeleted(user_id=self.user_id), subject=self.user_id)

    # --- gallery --------------------------------------------------------------------------

    def image(self, cls: type[ev.EventData], image_id: uuid.UUID, **fields: Any) -> ev.Event[Any]:
        return self._event(cls(user_id=self.user_id, image_id=image_id, **fields), subject=image_id)

    def purged(self, image_id: uuid.UUID, keys: list[str]) -> ev.Event[Any]:
        data = ev.ImageDeleted(user_id=self.user_id, image_id=image_id, object_keys=keys)
        return self._event(data, subject=image_id, event_id=transition_event_id(image_id, "purged"))

    def board(self, cls: type[ev.EventData], board_id: uuid.UUID, **fields: Any) -> ev.Event[Any]:
        return self._event(cls(user_id=self.user_id, board_id=board_id, **fields), subject=board_id)
