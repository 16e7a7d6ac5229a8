"""How a background loop (outbox relay, hold sweeper, trash purge, job intake) paces and reports
rounds that fail because a dependency is away.

A loop that logged every failed round with its traceback wrote ~60 stack traces per service in
a 30 s PostgreSQL outage and retried as fast as it polls. With ``Outage``:

- a transient failure (``redelivery.is_transient``: PostgreSQL, NATS, S3 away) is one warning
  line, without a stack trace, when the outage starts and at each backoff step; the loop pauses
  ``base_s``, ``2·base_s``... capped at ``max_s`` (never less than its own interval) until the
  dependency answers; a reminder every ``remind_s`` while it stays away at the cap;
- the first round that works again logs one "recovered" line (how long, how many rounds);
- any other failure is the loop's own (a bug, bad data): logged with its traceback, every
  time, and the loop keeps its normal interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .redelivery import is_transient


def root_cause(exc: BaseException) -> str:
    """``Type: message`` of the innermost cause that says something, short: what a log line
    needs to tell which dependency failed how, without SQL statements or their parameters
    (event payloads) that the outer exceptions carry."""
    found = exc
    cur: BaseException | None = exc
    for _ in range(20):
        if cur is None:
            break
        if str(cur).strip():
            found = cur
        nxt = cur.__cause__ or getattr(cur, "orig", None) or cur.__context__
        cur = nxt if isinstance(nxt, BaseException) and nxt is not cur else None
    lines = str(found).strip().splitlines()
    return f"{type(found).__name__}: {lines[0] if lines else ''}"[:200]


class Outage:
    """The state of one loop against its dependencies (one instance per loop, not shared)."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        base_s: float = 0.5,
        max_s: float = 30.0,
        remind_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.log = logger
        self.base_s = base_s
        self.max_s = max(max_s, base_s)
        self.remind_s = remind_s
        self._clock = clock
        self.failures = 0
        self._since = 0.0
        self._delay = 0.0
        self._reminded = 0.0

    @classmethod
    def from_settings(cls, what: str, logger: logging.Logger, settings: Any, **overrides: Any) -> Outage:
        """Paced by the shared ``TRANSIENT_RETRY_BASE_S`` / ``TRANSIENT_RETRY_MAX_S``."""
        kw: dict[str, Any] = {
            "base_s": getattr(settings, "transient_retry_base_s", 0.5),
            "max_s": getattr(settings, "transient_retry_max_s", 30.0),
        }
        kw.update(overrides)
        return cls(what, logger, **kw)

    @property
    def active(self) -> bool:
        """Whether the last rounds failed transiently (the dependency is still away)."""
        return self.failures > 0

    def backoff(self, failures: int) -> float:
        return min(self.max_s, self.base_s * 2 ** min(max(failures, 1) - 1, 30))

    def failed(self, exc: BaseException, *, interval: float) -> float:
        """Report a failed round; the pause before the next one (``interval``: the loop's
        normal pause, which a backoff never shortens)."""
        if not is_transient(exc):
            # Not a dependency: a bug or bad data, which a stack trace helps to find.
            self.log.error("%s: round failed", self.what, exc_info=exc)
            return interval
        now = self._clock()
        self.failures += 1
        delay = max(interval, self.backoff(self.failures))
        extra = {"failures": self.failures, "retry_in_s": delay, "error": root_cause(exc)}
        if self.failures == 1:
            self._since = self._reminded = now
            self.log.warning("%s: dependency unavailable, backing off", self.what, extra=extra)
        elif delay > self._delay:
            self._reminded = now
            extra["down_s"] = round(now - self._since, 1)
            self.log.warning("%s: dependency still unavailable, backing off further", self.what, extra=extra)
        elif now - self._reminded >= self.remind_s:
            self._reminded = now
            extra["down_s"] = round(now - self._since, 1)
            self.log.warning("%s: dependency still unavailable", self.what, extra=extra)
        self._delay = delay
        return delay

    def succeeded(self) -> None:
        """A round worked: ends the outage (and says so once) if there was one."""
        if not self.failures:
            return
        # A warning like the line that opened the outage, so that a WARNING filter shows its end.
        self.log.warning(
            "%s: dependency recovered",
            self.what,
            extra={"down_s": round(self._clock() - self._since, 1), "failed_rounds": self.failures},
        )
        self.failures = 0
        self._delay = 0.0
