"""JSON-lines logging with trace and domain context (trace_id, span_id, generation_id, user_id).

Every line is one JSON object on stdout: ``time``, ``level``, ``logger``, ``message``,
``service``, the fields of the enclosing ``log_context(...)`` blocks, ``trace_id`` / ``span_id``
of the current span when there is one, and the record's ``extra`` fields.

Secrets never reach a line: fields named like a credential (``password``, ``token``,
``authorization``, ``secret``, ``api_key``, ``email``...) are replaced, and the finished line is
scrubbed of e-mail addresses, JWTs, bearer credentials and genimage API keys, wherever they
hide (messages, exception text, nested values).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("genimage_log_context", default=None)

REDACTED = "[redacted]"

# Field names whose values are never logged, whatever they hold.
_SECRET_FIELD = re.compile(
    r"(?:^|[_-])(pass|password|passwd|secret|token|authorization|cookie|api_?key|credentials?|private_?key|e-?mail)"
    r"(?:$|[_-])",
    re.IGNORECASE,
)
# Values that are secrets or personal data wherever they appear in a line.
_SECRET_VALUES = (
    # e-mail addresses
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    # JWTs (access tokens): three base64url segments, the first two JSON objects
    re.compile(r"eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"),
    # Authorization header values
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    # genimage API keys
    re.compile(r"\bgi_[A-Za-z0-9_-]{16,}"),
)


def redact(text: str) -> str:
    """``text`` with e-mail addresses, JWTs, bearer credentials and API keys replaced."""
    for pattern in _SECRET_VALUES:
        text = pattern.sub(REDACTED, text)
    return text


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (``generation_id``, ``user_id``...) to every record logged inside the block."""
    token = _context.set({**(_context.get() or {}), **{k: str(v) for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 5:
        return value
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_FIELD.search(k) else _scrub(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v, depth + 1) for v in value]
    return value


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines without credentials or e-mail addresses (see the module docstring)."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return _scrub(super().process_log_record(log_data))

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # RFC 3339 in UTC with milliseconds: lines of several services sort and join by time.
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def json_formatter() -> logging.Formatter:
    return RedactingJsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(json_formatter())
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python warnings become JSON lines too instead of raw text on stderr.
    logging.captureWarnings(True)
    # Access logs and driver chatter would drown the service's own lines.
    for noisy in ("uvicorn.access", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
