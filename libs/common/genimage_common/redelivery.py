"""What a failed delivery of a JetStream message means, for every consumer of every service.

Three kinds of failure, told apart here and nowhere else:

- **poison**: the message itself can never be handled (undecodable, not the event the
  consumer expects): dead-lettered at once, retrying cannot fix it;
- **transient**: a dependency (PostgreSQL, NATS, object storage, a peer service) is away or
  overloaded: retried with capped exponential backoff for as long as it stays away, bounded
  only by a long ceiling (``TRANSIENT_RETRY_CEILING_S``, hours) — a database that blinks
  never dead-letters a credit grant or a completed generation;
- **content**: the message fails for its own reasons (a domain error, a bug that repeats
  while the dependencies answer): a bounded number of deliveries, then the dead-letter stream.

An exception nobody classified is checked against the dependencies themselves: if one of
them does not answer now, the failure is transient, otherwise it is the message's own.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import json
import logging
import math
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from .errors import DomainError, ServiceUnavailable

log = logging.getLogger(__name__)

# Content failures: after this many deliveries the message is dead-lettered.
MAX_DELIVER = 5
# Delay before the next delivery after a content failure, by content-failure number (seconds).
BACKOFF = (0.5, 2.0, 5.0, 15.0, 30.0)

Probe = Callable[[], Awaitable[object]]

# SQLSTATE classes and codes where trying again later helps: connection exceptions (08),
# insufficient resources (53), operator intervention such as a shutdown or a server that is
# starting (57), system errors (58), serialization failures and deadlocks (40001, 40P01).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58")
_TRANSIENT_SQLSTATES = ("40001", "40P01")
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.ENOTCONN,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EADDRNOTAVAIL,
    }
)
# S3 error codes that mean "the service, not the request".
_TRANSIENT_S3_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "OperationAborted", "RequestTimeTooSkewed"}
)


class Failure(enum.StrEnum):
    POISON = "poison"
    TRANSIENT = "transient"
    CONTENT = "content"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what caused it (``__cause__``, SQLAlchemy's ``orig``, the implicit
    ``__context__``) and, for exception groups, their members; each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        cur = todo.pop()
        if id(cur) in seen or len(seen) > 50:
            continue
        seen.add(id(cur))
        yield cur
        if isinstance(cur, BaseExceptionGroup):
            todo.extend(cur.exceptions)
        for nxt in (cur.__cause__, getattr(cur, "orig", None), cur.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _transient_one(exc: BaseException) -> bool:
    if isinstance(exc, ServiceUnavailable):
        return True
    if isinstance(exc, DomainError):
        return False
    if isinstance(exc, OSError | TimeoutError) and _network_error(exc):
        return True
    module = type(exc).__module__ or ""
    if module.startswith("sqlalchemy"):
        from sqlalchemy import exc as sa

        if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
            return True
        # Pool exhausted (TimeoutError), a connection found dead (DisconnectionError), and the
        # DBAPI's connection-level errors; a statement's own error is a DatabaseError/DataError.
        return isinstance(exc, sa.TimeoutError | sa.DisconnectionError | sa.OperationalError | sa.InterfaceError)
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and module.startswith("asyncpg"):
        return sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES) or sqlstate in _TRANSIENT_SQLSTATES
    if module.startswith("asyncpg"):
        import asyncpg

        # "connection is closed", "another operation is in progress" on a broken connection...
        return isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError | asyncpg.InterfaceError)
    if module.startswith("nats"):
        return _transient_nats(exc)
    if module.startswith("urllib3"):
        import urllib3.exceptions as u3

        # Connection refused or reset, timeouts, retries exhausted: the network or the server.
        return isinstance(exc, u3.MaxRetryError | u3.ProtocolError | u3.NewConnectionError | u3.TimeoutError)
    if module.startswith("minio"):
        from minio.error import S3Error, ServerError

        if isinstance(exc, ServerError):
            return exc.status_code >= 500
        if isinstance(exc, S3Error):
            status = getattr(getattr(exc, "response", None), "status", 0) or 0
            return status >= 500 or exc.code in _TRANSIENT_S3_CODES
    if module.startswith("httpx"):
        import httpx

        return isinstance(exc, httpx.TransportError)
    return False


def _network_error(exc: OSError | TimeoutError) -> bool:
    """A failure to reach a server — not a local file problem, which no retry fixes."""
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror | socket.herror):
        return True
    if exc.errno in _NETWORK_ERRNOS:
        return True
    # asyncio's connect to every address of a host at once: "Multiple exceptions: ...".
    return type(exc) is OSError and exc.errno is None and str(exc).startswith("Multiple exceptions")


def _transient_nats(exc: BaseException) -> bool:
    import nats.errors as ne
    import nats.js.errors as je

    if isinstance(exc, je.APIError):
        # 503: no JetStream leader / stream unavailable for now; 500: server error.
        return isinstance(exc, je.ServiceUnavailableError | je.ServerError) or (exc.code or 0) >= 500
    return isinstance(
        exc,
        ne.ConnectionClosedError
        | ne.ConnectionReconnectingError
        | ne.ConnectionDrainingError
        | ne.NoServersError
        | ne.StaleConnectionError
        | ne.OutboundBufferLimitError
        | ne.NoRespondersError
        | ne.TimeoutError
        | ne.SlowConsumerError
        | je.NoStreamResponseError,
    )


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means a dependency is away (retrying later helps), by its type.

    A domain error is the message's own fault, except ``ServiceUnavailable``; a transient
    cause anywhere down the chain makes the whole failure transient (SQLAlchemy wraps
    asyncpg's connection errors, our code wraps library errors).
    """
    if isinstance(exc, DomainError) and not isinstance(exc, ServiceUnavailable):
        return False
    return any(_transient_one(e) for e in _chain(exc))


def is_poison(exc: BaseException) -> bool:
    """A message that can never be decoded: no retry can help."""
    from pydantic import ValidationError

    from .events import UnknownEventType

    return isinstance(exc, ValidationError | json.JSONDecodeError | UnicodeDecodeError | UnknownEventType)


async def dependencies_down(probes: Mapping[str, Probe], *, timeout_s: float = 5.0) -> list[str]:
    """Names of the dependencies that do not answer now (a probe that hangs counts as down)."""
    down: list[str] = []
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(probe(), timeout=timeout_s)
        except Exception:  # a probe reports, it does not raise
            down.append(name)
    return down


async def classify(exc: BaseException, probes: Mapping[str, Probe] | None = None) -> Failure:
    """Poison, transient or content; an unclassified exception is transient while a dependency
    is down (checked now through ``probes``), otherwise the message's own."""
    if is_poison(exc):
        return Failure.POISON
    if is_transient(exc):
        return Failure.TRANSIENT
    if isinstance(exc, DomainError) or not probes:
        return Failure.CONTENT
    down = await dependencies_down(probes)
    if down:
        log.warning("unclassified failure while dependencies are down", extra={"down": down, "error": repr(exc)})
        return Failure.TRANSIENT
    return Failure.CONTENT


@dataclass(frozen=True)
class Decision:
    failure: Failure
    dead_letter: bool
    delay_s: float = 0.0


@dataclass(frozen=True)
class RedeliveryPolicy:
    """When to redeliver a failed message and when to give up on it."""

    max_deliver: int = MAX_DELIVER
    backoff_s: Sequence[float] = BACKOFF
    transient_base_s: float = 0.5
    transient_max_s: float = 30.0
    transient_ceiling_s: float = 6 * 3600.0

    @classmethod
    def from_settings(cls, settings: object, **overrides: object) -> RedeliveryPolicy:
        """The shared knobs of ``CommonSettings`` (``TRANSIENT_RETRY_*``)."""
        values: dict[str, object] = {
            "transient_base_s": getattr(settings, "transient_retry_base_s", 0.5),
            "transient_max_s": getattr(settings, "transient_retry_max_s", 30.0),
            "transient_ceiling_s": getattr(settings, "transient_retry_ceiling_s", 6 * 3600.0),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def transient_delay(self, failures: int) -> float:
        """Capped exponential: base, 2·base, 4·base ... up to ``transient_max_s``."""
        exponent = min(max(failures, 1) - 1, 30)
        return min(self.transient_max_s, self.transient_base_s * 2**exponent)

    @property
    def transient_deliveries(self) -> int:
        """Deliveries that fit in the ceiling when every one fails transiently (the sum of the
        delays between them reaches ``transient_ceiling_s``)."""
        total, n = 0.0, 0
        while total < self.transient_ceiling_s and self.transient_delay(n + 1) < self.transient_max_s:
            n += 1
            total += self.transient_delay(n)
        if total < self.transient_ceiling_s:
            n += math.ceil((self.transient_ceiling_s - total) / self.transient_max_s)
        return n + 1

    def content_delay(self, failures: int) -> float:
        return self.backoff_s[min(max(failures, 1), len(self.backoff_s)) - 1]

    def decide(self, failure: Failure, *, delivered: int, transient_before: int = 0) -> Decision:
        """``delivered``: JetStream's delivery count of this message (this one included);
        ``transient_before``: how many earlier deliveries failed transiently (known to us)."""
        if failure is Failure.POISON:
            return Decision(failure, dead_letter=True)
        if failure is Failure.TRANSIENT:
            # Deliveries count against the ceiling whatever failed them: the ceiling is a time.
            if delivered >= self.transient_deliveries:
                return Decision(failure, dead_letter=True)
            return Decision(failure, dead_letter=False, delay_s=self.transient_delay(transient_before + 1))
        content = max(delivered - transient_before, 1)
        if content >= self.max_deliver:
            return Decision(failure, dead_letter=True)
        return Decision(failure, dead_letter=False, delay_s=self.content_delay(content))


class TransientCounts:
    """How many deliveries of each message failed transiently in this process, so that they do
    not count against its content failures. Bounded: the oldest entries are forgotten (a
    forgotten message only counts its deliveries as content failures again)."""

    def __init__(self, size: int = 10_000) -> None:
        self._counts: OrderedDict[tuple[str, str, int], int] = OrderedDict()
        self._size = size

    def get(self, key: tuple[str, str, int]) -> int:
        return self._counts.get(key, 0)

    def add(self, key: tuple[str, str, int]) -> int:
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        while len(self._counts) > self._size:
            self._counts.popitem(last=False)
        return count

    def forget(self, key: tuple[str, str, int]) -> None:
        self._counts.pop(key, None)
