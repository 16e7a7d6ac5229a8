"""Billing's RPC handlers answer their contracts (``genimage_common.contracts.billing``) with the
JSON they always answered — through FastStream's test broker, on a real database — and the
typed client parses those answers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from billing import rpc
from billing.deps import Deps
from genimage_common.contracts import billing as b
from genimage_common.contracts.clients import BillingClient
from genimage_common.ids import new_id
from tests.billing.factories import funded_user
from tests.common.asyncapi import payloads

pytestmark = pytest.mark.timeout(60)


async def ask(broker: NatsBroker, call: b.Rpc[Any, Any], body: dict[str, Any]) -> Any:
    reply = await broker.request(body, call.subject)
    return json.loads(reply.body)


async def test_replies_keep_their_wire_format_and_parse_as_their_contract(deps: Deps) -> None:
    broker = NatsBroker()
    broker.include_router(rpc.router)
    broker.context.set_global("deps", deps)
    user = await funded_user(deps.sessions, 30)
    gid = new_id()
    async with TestNatsBroker(broker) as br:
        reserved = await ask(br, b.RESERVE, {"generation_id": str(gid), "user_id": str(user), "amount": 5})
        assert set(reserved) == {"hold", "balance"}
        assert set(reserved["hold"]) == {"generation_id", "amount", "units", "status", "expires_at"}
        assert reserved["hold"]["expires_at"].endswith("+00:00")  # isoformat(), as it always was
        assert datetime.fromisoformat(reserved["hold"]["expires_at"]).tzinfo is not None
        assert reserved["balance"] == {"available": 25, "reserved": 5}
        released = await ask(br, b.RELEASE, {"generation_id": str(gid), "user_id": str(user)})
        assert released == {
            "released": True,
            "outcome": "voided",
            "amount": 5,
            "balance": {"available": 30, "reserved": 0},
        }
        granted = await ask(br, b.GRANT, {"user_id": str(user), "amount": 3, "reason": "promo", "reference": "x1"})
        assert granted == {"available": 33, "reserved": 0}
        assert await ask(br, b.BALANCE, {"user_id": str(user)}) == granted
        page = await ask(br, b.LEDGER, {"user_id": str(user), "limit": 2})
        assert set(page) == {"items", "next_cursor"} and page["next_cursor"] is not None
        assert set(page["items"][0]) == {"id", "type", "amount", "balance_after", "generation_id", "created_at"}
        assert page["items"][0]["created_at"].endswith("Z")
        plans = await ask(br, b.PLANS, {})
        assert plans == {"items": [p.public() for p in deps.settings.plans]}

        client = BillingClient(br)  # type: ignore[arg-type]
        typed = await client.reserve(b.ReserveRequest(generation_id=new_id(), user_id=user, amount=4, units=2))
        assert typed.hold.status == "pending" and typed.hold.units == 2 and typed.balance.reserved == 4
        lines = await client.ledger(b.LedgerRequest(user_id=user, limit=10))
        assert [line.type for line in lines.items][:2] == ["reserve", "grant"]
        assert (await client.plans()).items == list(deps.settings.plans)


def test_the_asyncapi_document_shows_every_rpc_request_schema() -> None:
    from billing.app import create_app

    got, doc = payloads(create_app())
    for call in (b.RESERVE, b.RELEASE, b.BALANCE, b.LEDGER, b.GRANT, b.PLANS):
        assert got[call.subject] == call.request.__name__, call.subject
    assert set(doc["components"]["schemas"]["ReserveRequest"]["properties"]) == {
        "generation_id",
        "user_id",
        "amount",
        "units",
    }
