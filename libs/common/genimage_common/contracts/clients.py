"""A typed client per service: one method per RPC, taking the call's request model and
returning its reply model (``contracts.billing`` / ``contracts.gallery``). An error reply is
raised as the domain error it names (``NotFound``, ``InsufficientCredits``...); no answer in
time as ``ServiceUnavailable``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar, overload

from faststream.nats import NatsBroker

from ..messaging import rpc_call
from . import billing as b
from . import gallery as g
from .rpc import Rpc

Req = TypeVar("Req", bound=Any)
Rep = TypeVar("Rep")


class RpcClient:
    def __init__(self, broker: NatsBroker, *, timeout: float = 5.0) -> None:
        self._broker = broker
        self._timeout = timeout

    async def call(self, rpc: Rpc[Req, Rep], request: Req) -> Rep:
        body = await rpc_call(self._broker, rpc.subject, request.model_dump(mode="json"), timeout=self._timeout)
        return rpc.parse_reply(body)


class Method(Generic[Req, Rep]):
    """The client method of one call: ``reserve = Method(billing.RESERVE)`` makes
    ``await client.reserve(ReserveRequest(...)) -> ReserveReply``."""

    def __init__(self, rpc: Rpc[Req, Rep]) -> None:
        self.rpc = rpc

    @overload
    def __get__(self, client: None, owner: type[RpcClient]) -> Method[Req, Rep]: ...
    @overload
    def __get__(self, client: RpcClient, owner: type[RpcClient]) -> Callable[[Req], Awaitable[Rep]]: ...
    def __get__(self, client: RpcClient | None, owner: type[RpcClient]) -> Any:
        return self if client is None else partial(client.call, self.rpc)


class BillingClient(RpcClient):
    reserve = Method(b.RESERVE)
    release = Method(b.RELEASE)
    balance = Method(b.BALANCE)
    ledger = Method(b.LEDGER)
    grant = Method(b.GRANT)

    async def plans(self, request: b.PlansRequest | None = None) -> b.PlansReply:
        return await self.call(b.PLANS, request or b.PlansRequest())


class GalleryClient(RpcClient):
    # queries
    get_generation = Method(g.GET_GENERATION)
    list_generations = Method(g.LIST_GENERATIONS)
    get_image = Method(g.GET_IMAGE)
    list_images = Method(g.LIST_IMAGES)
    stats = Method(g.STATS)
    feed = Method(g.FEED)
    get_published_image = Method(g.GET_PUBLISHED_IMAGE)
    list_boards = Method(g.LIST_BOARDS)
    get_board = Method(g.GET_BOARD)
    # commands
    set_favorite = Method(g.SET_FAVORITE)
    set_published = Method(g.SET_PUBLISHED)
    trash_image = Method(g.TRASH_IMAGE)
    restore_image = Method(g.RESTORE_IMAGE)
    create_board = Method(g.CREATE_BOARD)
    rename_board = Method(g.RENAME_BOARD)
    delete_board = Method(g.DELETE_BOARD)
    set_board_image = Method(g.SET_BOARD_IMAGE)
