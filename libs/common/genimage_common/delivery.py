"""What a failed delivery of a JetStream message becomes, for every consumer of every service
(the FastStream middleware of ``messaging.py`` and the generation worker's job intake alike):
classified (``redelivery.classify``), decided by the ``RedeliveryPolicy``, then either handed
back for another delivery after a delay, or copied to ``dlq.<stream>.<consumer>`` and
terminated. The caller only carries the verdict out (a nak or a term, in its own way).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter

from .redelivery import Failure, Probe, RedeliveryPolicy, classify, is_transient
from .streams import DLQ
from .subjects import dead_letter

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter("genimage_dead_letters_total", "Messages moved to the DLQ stream", ["stream", "consumer"])
REDELIVERIES = Counter(
    "genimage_redeliveries_total",
    "Failed deliveries handed back for another try, by kind of failure (transient: a dependency was away)",
    ["stream", "consumer", "failure"],
)


@dataclass(frozen=True)
class Verdict:
    """``terminate``: the message is recorded in the DLQ (or cannot ever be handled) and must be
    terminated; otherwise it is handed back (nak) to be delivered again after ``delay_s``."""

    terminate: bool
    delay_s: float = 0.0


async def handle_failure(
    js: JetStreamContext,
    msg: Msg,
    exc: BaseException,
    *,
    policy: RedeliveryPolicy,
    probes: Mapping[str, Probe] | None = None,
    failure: Failure | None = None,
    transient_before: int = 0,
    on_transient: Callable[[], Awaitable[object]] | None = None,
    before_dead_letter: Callable[[], Awaitable[object]] | None = None,
    on_dead_lettered: Callable[[], object] | None = None,
) -> Verdict:
    """Decide what becomes of ``msg``, whose handling raised ``exc``.

    ``failure``: the caller's classification (else ``classify`` with ``probes``);
    ``transient_before``: how many earlier deliveries of it failed transiently (they do not count
    against its content bound) and ``on_transient`` records one more; ``before_dead_letter``
    runs before the copy to the DLQ (a transient failure of it keeps the message for later);
    ``on_dead_lettered`` runs once it is in the DLQ.
    """
    meta = msg.metadata
    delivered = meta.num_delivered
    if failure is None:
        failure = await classify(exc, probes)
    decision = policy.decide(failure, delivered=delivered, transient_before=transient_before)
    if failure is Failure.TRANSIENT and on_transient is not None:
        try:
            await on_transient()
        except Exception as count_exc:  # the count is an optimisation; the decision stands
            log.warning("could not count a transient failure", extra={"error": repr(count_exc)[:300]})
    if not decision.dead_letter:
        return _redeliver(msg, exc, failure, decision.delay_s)
    if before_dead_letter is not None:
        try:
            await before_dead_letter()
        except Exception as hook_exc:
            if is_transient(hook_exc):
                # What must precede the dead letter (a job's failure event) cannot be done now.
                return _redeliver(msg, hook_exc, Failure.TRANSIENT, policy.transient_delay(1))
            log.exception("could not record the end of a message given up")
    try:
        await dead_letter_message(js, msg, exc, delivered=delivered, failure=failure.value)
    except Exception as dlq_exc:
        # The DLQ is on NATS too: keep the message rather than terminate it unrecorded.
        log.warning("dead-lettering failed, will retry", extra={"error": repr(dlq_exc)})
        return Verdict(terminate=False, delay_s=policy.transient_delay(transient_before + 1))
    if on_dead_lettered is not None:
        on_dead_lettered()
    return Verdict(terminate=True)


def _redeliver(msg: Msg, exc: BaseException, failure: Failure, delay_s: float) -> Verdict:
    meta = msg.metadata
    REDELIVERIES.labels(stream=meta.stream, consumer=meta.consumer, failure=failure.value).inc()
    extra = {
        "subject": msg.subject,
        "delivered": meta.num_delivered,
        "failure": failure.value,
        "delay_s": delay_s,
        "error": repr(exc)[:500],
    }
    if failure is Failure.TRANSIENT:
        # Expected while a dependency is away: one line, no stack trace per message.
        log.warning("dependency unavailable, message will be redelivered", extra=extra)
    else:
        log.warning("message handling failed, will be redelivered", extra=extra, exc_info=exc)
    return Verdict(terminate=False, delay_s=delay_s)


async def dead_letter_message(
    js: JetStreamContext, msg: Msg, exc: BaseException, *, delivered: int, failure: str = "content"
) -> None:
    """Copy a JetStream message to ``dlq.<stream>.<consumer>`` with why and how often it failed.

    The caller then terminates the original. Deduplicated per stream sequence, so a crash
    between the copy and the termination does not dead-letter it twice.
    """
    meta = msg.metadata
    stream, consumer = meta.stream, meta.consumer
    headers = {k: v for k, v in (msg.headers or {}).items() if k != "Nats-Msg-Id"}
    headers.update(
        {
            "Genimage-Dlq-Subject": msg.subject,
            "Genimage-Dlq-Stream-Seq": str(meta.sequence.stream),
            "Genimage-Dlq-Deliveries": str(delivered),
            # poison (undecodable), content (failed on its own), transient (ceiling reached).
            "Genimage-Dlq-Failure": failure,
            "Genimage-Dlq-Error": repr(exc)[:500],
            "Nats-Msg-Id": f"dlq:{stream}:{consumer}:{meta.sequence.stream}",
        }
    )
    await js.publish(dead_letter(stream, consumer), msg.data, headers=headers, stream=DLQ)
    DEAD_LETTERS.labels(stream=stream, consumer=consumer).inc()
    log.error(
        "message dead-lettered",
        extra={
            "subject": msg.subject,
            "stream": stream,
            "consumer": consumer,
            "failure": failure,
            "error": repr(exc)[:300],
        },
    )
