"""Reading a JetStream stream from a test, as a consumer starting now would see it."""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy


async def stream_messages(js: JetStreamContext, subject: str, stream: str, *, idle_s: float = 0.5) -> list[Msg]:
    """Every message of ``stream`` on ``subject`` so far, in stream order; ``idle_s`` is how long
    an empty stream is waited on."""
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    out: list[Msg] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_s)
            except NatsTimeout:
                break
            out.append(msg)
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out
