"""One request/reply call between services, declared once for both sides: the handler
subscribes to ``Rpc.subject`` and takes ``Rpc.request``; the client sends that request and
parses the answer as ``Rpc.reply``. Errors travel as ``{"error": {"code", "message"}}``
(``messaging.rpc_call`` raises them back as domain errors)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ..errors import ValidationFailed
from ..subjects import rpc

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep")


class Request(BaseModel):
    # Unknown fields are ignored: a newer caller can talk to an older replica during a rollout.
    model_config = ConfigDict(extra="ignore")


@dataclass(frozen=True)
class Rpc(Generic[Req, Rep]):
    service: str
    name: str
    request: type[Req]
    reply: Any  # a model, or any type pydantic validates (``Page[ImageRecord]``)

    @property
    def subject(self) -> str:
        return rpc(self.service, self.name)

    @cached_property
    def _reply_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.reply)

    def parse_reply(self, body: Any) -> Rep:
        return self._reply_adapter.validate_python(body)  # type: ignore[no-any-return]


def invalid_request(exc: ValidationError) -> ValidationFailed:
    """The error a request that does not fit its model is answered with (also when the caller
    finds it out before sending): the first locations and messages pydantic gives."""
    details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)]
    return ValidationFailed("invalid request", errors=details[:10])
