"""The status of a generation, in one place: its values, which ones are final, the order a
status only moves forward in, and the status each generation event leads to."""

from __future__ import annotations

from enum import StrEnum

from .. import events as ev


class GenerationStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL_STATUSES = frozenset({GenerationStatus.SUCCEEDED, GenerationStatus.FAILED, GenerationStatus.CANCELED})

# queued < running < terminal: events arrive in any order, a status never moves backwards.
RANK: dict[str, int] = {
    GenerationStatus.QUEUED: 0,
    GenerationStatus.RUNNING: 1,
    GenerationStatus.SUCCEEDED: 2,
    GenerationStatus.FAILED: 2,
    GenerationStatus.CANCELED: 2,
}

# The status a generation has once this event (by name, ``<domain>.<event>``) happened.
STATUS_AFTER: dict[str, GenerationStatus] = {
    ev.GenerationRequested.name: GenerationStatus.QUEUED,
    ev.GenerationStarted.name: GenerationStatus.RUNNING,
    ev.GenerationProgress.name: GenerationStatus.RUNNING,
    ev.GenerationCompleted.name: GenerationStatus.SUCCEEDED,
    ev.GenerationFailed.name: GenerationStatus.FAILED,
    ev.GenerationCanceled.name: GenerationStatus.CANCELED,
}

TERMINAL_EVENTS = frozenset(name for name, status in STATUS_AFTER.items() if status in TERMINAL_STATUSES)


def is_terminal(status: str | None) -> bool:
    return status in TERMINAL_STATUSES
