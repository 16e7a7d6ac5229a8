"""What must hold after a fault and quiescence, checked for every request sent.

Sources of truth, each read independently: the JetStream streams (what happened), the public
API (what a user sees: statuses, credits, ledger, downloads) and the gallery read model compared
with a rebuild of it from the streams. Each check counts what passed and keeps evidence of
what did not (ids, the events seen, DLQ headers), so a failure can be traced to its cause.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from genimage_common.pricing import share
from genimage_common.streams import BILLING, DLQ, GALLERY, GENERATION, IDENTITY, SUBJECTS
from tests.api import TestUser
from tests.faults.driver import Driver, Sent
from tests.faults.stack import SIGNUP_GRANT, FaultStack

TERMINAL_EVENTS = {"completed": "succeeded", "failed": "failed", "canceled": "canceled"}
CHECKS = (
    "recovered",
    "quiescent",
    "terminal_once",
    "accounted",
    "credits",
    "downloads",
    "gallery_rebuild",
    "dlq_empty",
)
MAX_DETAILS = 12


@dataclass
class Check:
    name: str
    ok: int = 0
    failed: int = 0
    details: list[str] = field(default_factory=list)

    def good(self, n: int = 1) -> None:
        self.ok += n

    def fail(self, detail: str) -> None:
        self.failed += 1
        if len(self.details) < MAX_DETAILS:
            self.details.append(detail)

    @property
    def passed(self) -> bool:
        return self.failed == 0

    def cell(self) -> str:
        total = self.ok + self.failed
        return f"pass {self.ok}/{total}" if self.passed else f"FAIL {self.failed}/{total}"

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "ok": self.ok, "failed": self.failed, "details": self.details}


# --- reading the streams -------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamMsg:
    seq: int
    subject: str
    data: dict[str, Any]
    headers: dict[str, str]

    @property
    def name(self) -> str:
        return self.subject.split(".")[1]


async def read_stream(js: JetStreamContext, stream: str, *, start: int = 1) -> list[StreamMsg]:
    """Every message of ``stream`` from ``start`` to its last sequence now, with an ephemeral
    unacknowledged consumer (as the gallery rebuild reads)."""
    last = int((await js.stream_info(stream)).state.last_seq)
    if last < start:
        return []
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
    )
    sub = await js.pull_subscribe(SUBJECTS[stream][0], stream=stream, config=config)
    out: list[StreamMsg] = []
    try:
        seq = start - 1
        while seq < last:
            try:
                msgs = await sub.fetch(500, timeout=5)
            except NatsTimeout:
                break
            for m in msgs:
                seq = m.metadata.sequence.stream
                if seq > last:
                    break
                try:
                    data = json.loads(m.data)
                except ValueError:
                    data = {"undecodable": m.data[:200].decode(errors="replace")}
                out.append(StreamMsg(seq, m.subject, data, dict(m.headers or {})))
    finally:
        await sub.unsubscribe()
    return out


async def last_seq(nats_url: str, stream: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.last_seq)
    finally:
        await nc.close()


@dataclass
class Generations:
    """The GENERATION stream seen per generation, for a set of users."""

    requested: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> requested data
    events: dict[str, list[StreamMsg]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, msgs: list[StreamMsg], user_ids: set[str]) -> Generations:
        view = cls()
        for m in msgs:
            if m.subject.split(".")[-1] not in user_ids:
                continue
            gid = str(m.data.get("data", {}).get("generation_id") or m.data.get("subject"))
            view.events[gid].append(m)
            if m.name == "requested":
                view.requested[gid] = m.data["data"]
        return view

    def terminal(self, gid: str) -> list[StreamMsg]:
        return [m for m in self.events.get(gid, []) if m.name in TERMINAL_EVENTS]

    def non_terminal(self) -> list[str]:
        return [g for g in self.requested if not self.terminal(g)]

    def trail(self, gid: str) -> str:
        return ",".join(m.name for m in self.events.get(gid, []))


# --- quiescence ----------------------------------------------------------------------------------


async def _drained(js: JetStreamContext) -> list[str]:
    busy = []
    for stream in (IDENTITY, GENERATION, BILLING, GALLERY):
        for info in await js.consumers_info(stream):
            if info.config.durable_name and (info.num_pending or info.num_ack_pending):
                busy.append(f"{stream}/{info.name}: pending={info.num_pending} ack_pending={info.num_ack_pending}")
    return busy


async def _unrelayed(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        schemas = await conn.fetch("SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox'")
        out = []
        for row in schemas:
            schema = row["table_schema"]
            n = await conn.fetchval(f'SELECT count(*) FROM "{schema}".outbox WHERE published_at IS NULL')
            if n:
                out.append(f"{schema}.outbox: {n} unrelayed")
        return out
    finally:
        await conn.close()


async def quiesce(
    stack: FaultStack, users: list[TestUser], *, timeout: float, waited_on: set[str] | None = None
) -> tuple[Check, float]:
    """Poll until no generation of ``users`` is non-terminal, every durable consumer has
    acknowledged everything and every outbox is relayed; a Check saying whether that happened
    within ``timeout``, and how long it took. ``waited_on`` collects what was still busy."""
    check = Check("quiescent")
    waited_on = waited_on if waited_on is not None else set()
    ids = {u.id for u in users}
    started = time.monotonic()
    last: list[str] = []
    nc = await nats.connect(stack.nats_url, max_reconnect_attempts=-1)
    try:
        js = nc.jetstream()
        while True:
            try:
                view = Generations.of(await read_stream(js, GENERATION), ids)
                open_ = view.non_terminal()
                last = [f"non-terminal {g}: {view.trail(g)}" for g in open_[:MAX_DETAILS]]
                last += await _drained(js)
                last += await _unrelayed(stack.pg_dsn)
            except Exception as exc:  # a dependency still coming back
                last = [f"probe failed: {exc!r}"]
            waited_on.update(d.split(":")[0] if not d.startswith("non-terminal") else "generations" for d in last)
            if not last:
                check.good()
                return check, round(time.monotonic() - started, 1)
            if time.monotonic() - started > timeout:
                for d in last:
                    check.fail(d)
                return check, round(time.monotonic() - started, 1)
            await asyncio.sleep(1.0)
    finally:
        await nc.close()


# --- the checks ----------------------------------------------------------------------------------


@dataclass
class Phase:
    """What one fault's checks need: its users and requests, and where its DLQ started."""

    name: str
    users: list[TestUser]
    sent: list[Sent]
    dlq_from: int


async def check_phase(stack: FaultStack, driver: Driver, phase: Phase) -> dict[str, Check]:
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()
        gen_msgs = await read_stream(js, GENERATION)
        dlq_msgs = await read_stream(js, DLQ, start=phase.dlq_from + 1)
    finally:
        await nc.close()
    view = Generations.of(gen_msgs, {u.id for u in phase.users})
    api = driver.http
    statuses = await _statuses(api, phase, view)
    return {
        "terminal_once": terminal_once(view, statuses),
        "accounted": accounted(view, phase),
        "credits": await credits(api, phase, view, statuses),
        "downloads": await downloads(api, phase, view, statuses),
        "gallery_rebuild": await gallery_rebuild(stack),
        "dlq_empty": dlq_empty(dlq_msgs),
    }


async def _statuses(api: httpx.AsyncClient, phase: Phase, view: Generations) -> dict[str, dict[str, Any] | None]:
    owner = {}
    by_id = {u.id: u for u in phase.users}
    for gid, data in view.requested.items():
        owner[gid] = by_id[str(data["user_id"])]
    # Accepted ids the stream does not know are looked up too (an accepted request that vanished).
    for s in phase.sent:
        if s.generation_id and s.generation_id not in owner:
            owner[s.generation_id] = s.user
    sem = asyncio.Semaphore(8)

    async def one(gid: str) -> tuple[str, dict[str, Any] | None]:
        async with sem:
            r = await api.get(f"/v1/generations/{gid}", headers=owner[gid].auth)
            return gid, r.json() if r.status_code == 200 else {"status": f"http {r.status_code}"}

    return dict(await asyncio.gather(*(one(g) for g in owner)))


def terminal_once(view: Generations, statuses: dict[str, dict[str, Any] | None]) -> Check:
    """Every accepted generation ended exactly once: one terminal event in the stream, and the
    API shows the status that event means."""
    check = Check("terminal_once")
    for gid in view.requested:
        terminal = view.terminal(gid)
        api_status = (statuses.get(gid) or {}).get("status")
        if len(terminal) != 1:
            check.fail(f"{gid}: {len(terminal)} terminal events in the stream ({view.trail(gid)}); API {api_status}")
        elif TERMINAL_EVENTS[terminal[0].name] != api_status:
            check.fail(f"{gid}: stream says {terminal[0].name}, API says {api_status}")
        else:
            check.good()
    return check


def accounted(view: Generations, phase: Phase) -> Check:
    """Every request maps to what its client was told: an accepted one to exactly its generation,
    a refused one to none, a lost answer to at most one; and no generation comes from nowhere."""
    check = Check("accounted")
    by_prompt: dict[str, list[str]] = defaultdict(list)
    for gid, data in view.requested.items():
        by_prompt[data["prompt"]].append(gid)
    prompts = set()
    for s in phase.sent:
        prompts.add(s.prompt)
        gens = by_prompt.get(s.prompt, [])
        what = f"{s.rid} ({s.outcome}, key={'yes' if s.key else 'no'}, attempts={'/'.join(s.attempts)})"
        if s.outcome == "accepted":
            if gens == [s.generation_id]:
                check.good()
            else:
                check.fail(f"{what}: answered {s.generation_id}, stream has {gens}")
        elif s.outcome in ("lost", "gave_up"):
            if len(gens) <= 1:
                check.good()
            else:
                check.fail(f"{what}: {len(gens)} generations {gens}")
        elif not gens:
            check.good()
        else:
            check.fail(f"{what}: refused with {s.status} but generation {gens} was requested")
    for prompt, gens in by_prompt.items():
        if prompt not in prompts:
            check.fail(f"generations {gens} match no request sent (prompt {prompt!r})")
    return check


async def _ledger(api: httpx.AsyncClient, user: TestUser) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        r = await api.get("/v1/credits/ledger", headers=user.auth, params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def expected_charge(requested: dict[str, Any], completed: StreamMsg | None) -> int:
    """Credits a generation costs: the delivered outputs' share of its reservation for a success,
    nothing otherwise (billing's own formula, ``pricing.share``)."""
    if completed is None or completed.name != "completed":
        return 0
    delivered = len(completed.data["data"]["outputs"])
    return share(int(requested["cost"]), int(requested["n"]), delivered)


async def credits(
    api: httpx.AsyncClient, phase: Phase, view: Generations, statuses: dict[str, dict[str, Any] | None]
) -> Check:
    """Per user: granted - charged = available, nothing reserved; per generation one hold, at most
    one charge, a success charged its delivered outputs, a failure refunded in full. Counted per
    generation and per user balance."""
    check = Check("credits")
    for user in phase.users:
        balance = (await api.get("/v1/credits", headers=user.auth)).json()
        ledger = await _ledger(api, user)
        per_gen: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in ledger:
            if e.get("generation_id"):
                per_gen[e["generation_id"]].append(e)
        mine = {g: d for g, d in view.requested.items() if str(d["user_id"]) == user.id}
        charged = 0
        for gid, requested in mine.items():
            terminal = view.terminal(gid)
            expected = expected_charge(requested, terminal[0] if len(terminal) == 1 else None)
            charged += expected
            entries = per_gen.pop(gid, [])
            kinds = Counter(e["type"] for e in entries)
            net = -sum(int(e["amount"]) for e in entries)
            if kinds["reserve"] != 1 or kinds["commit"] + kinds["late_charge"] > 1:
                check.fail(f"user {user.id}: {gid}: ledger {dict(kinds)}")
            elif net != expected:
                check.fail(
                    f"user {user.id}: {gid}: charged {net}, expected {expected} ({view.trail(gid)}; "
                    f"ledger {[e['type'] for e in reversed(entries)]}; API {(statuses.get(gid) or {}).get('status')})"
                )
            else:
                check.good()
        for gid, entries in per_gen.items():
            # A hold for a generation never queued: the gateway reserved, could not publish and
            # gave the credits back at once (or the hold expired). Fine when exactly that.
            kinds = Counter(e["type"] for e in entries)
            if kinds["reserve"] == 1 and kinds["refund"] + kinds["expire"] == 1 and len(entries) == 2:
                if sum(int(e["amount"]) for e in entries) == 0:
                    check.good()
                    continue
            check.fail(f"user {user.id}: {gid}: ledger {[e['type'] for e in entries]} but no generation.requested")
        # The balance: one more unit per user.
        grants = sum(int(e["amount"]) for e in ledger if e["type"] == "grant")
        if grants != SIGNUP_GRANT:
            check.fail(f"user {user.id}: granted {grants}, expected {SIGNUP_GRANT}")
        elif balance != {"available": grants - charged, "reserved": 0}:
            check.fail(f"user {user.id}: balance {balance}, expected available={grants - charged} reserved=0")
        else:
            check.good()
    return check


async def downloads(
    api: httpx.AsyncClient, phase: Phase, view: Generations, statuses: dict[str, dict[str, Any] | None]
) -> Check:
    """Every output of every success is served, through its presigned URL, with the sha256 its
    ``generation.completed`` event carries."""
    check = Check("downloads")
    by_id = {u.id: u for u in phase.users}
    sem = asyncio.Semaphore(6)
    async with httpx.AsyncClient(timeout=30) as raw:

        async def one(gid: str, user: TestUser, out: dict[str, Any]) -> None:
            async with sem:
                r = await api.get(f"/v1/images/{out['image_id']}/content", headers=user.auth)
                if r.status_code != 302:
                    check.fail(f"{gid} image {out['image_id']}: content answered {r.status_code} {r.text[:200]}")
                    return
                body = await raw.get(r.headers["location"])
                digest = hashlib.sha256(body.content).hexdigest()
                if body.status_code != 200 or digest != out["sha256"]:
                    check.fail(
                        f"{gid} image {out['image_id']} ({out['object_key']}): S3 {body.status_code}, "
                        f"{len(body.content)} bytes, sha256 {digest[:12]} != {out['sha256'][:12]}"
                    )
                    return
                check.good()

        jobs = []
        for gid, requested in view.requested.items():
            terminal = view.terminal(gid)
            if len(terminal) != 1 or terminal[0].name != "completed":
                continue
            outputs = terminal[0].data["data"]["outputs"]
            shown = {o["id"] for o in (statuses.get(gid) or {}).get("outputs", [])}
            if shown != {o["image_id"] for o in outputs}:
                check.fail(f"{gid}: API outputs {sorted(shown)} != event outputs")
            user = by_id[str(requested["user_id"])]
            jobs += [one(gid, user, o) for o in outputs]
        await asyncio.gather(*jobs)
    return check


async def gallery_rebuild(stack: FaultStack) -> Check:
    """The live read model equals one rebuilt from the streams into a scratch schema (the same
    replay ``python -m gallery rebuild`` does, without the swap)."""
    from alembic.script import ScriptDirectory

    from gallery.models import SCHEMA
    from gallery.rebuild import MIGRATIONS, STREAMS, Replayer, apply_events, create_schema
    from genimage_common.database import make_engine, make_sessionmaker
    from tests.gallery.conftest import Model

    check = Check("gallery_rebuild")
    scratch = f"{SCHEMA}_faultcheck"
    engine = make_engine(stack.endpoints.database_url, pool_size=2)
    nc = await nats.connect(stack.nats_url)
    try:
        await create_schema(engine, scratch, ScriptDirectory(str(MIGRATIONS)).get_current_head() or "")
        sessions = make_sessionmaker(engine.execution_options(schema_translate_map={SCHEMA: scratch}))
        replayer = Replayer(nc.jetstream(), 500)
        for stream in STREAMS:
            head = await replayer.last_seq(stream)
            async for events, _skipped in replayer.batches(stream, 1, head):
                for event in events:  # one by one: an event that cannot be applied is evidence
                    try:
                        async with sessions.begin() as session:
                            await apply_events(session, stream, [event])
                    except Exception as exc:
                        check.fail(f"rebuild could not apply {event.type} {event.id}: {exc!r}"[:300])
        live = await Model(SCHEMA, make_sessionmaker(engine)).snapshot()
        rebuilt = await Model(scratch, sessions).snapshot()
        differences = Model.differences(live, rebuilt)
        for table, diff in differences.items():
            check.fail(f"{table}: live-only {diff['left'][:2]} rebuilt-only {diff['right'][:2]}"[:600])
        rows = sum(len(v) for v in live.values())
        if not differences:
            check.good(rows)
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{scratch}" CASCADE')
        await engine.dispose()
        await nc.close()
    return check


def dlq_empty(msgs: list[StreamMsg]) -> Check:
    """The driver sends no poison: anything dead-lettered during the phase is a failure."""
    check = Check("dlq_empty")
    for m in msgs:
        check.fail(
            f"{m.subject}: {m.headers.get('Genimage-Dlq-Subject')} after "
            f"{m.headers.get('Genimage-Dlq-Deliveries')} deliveries: {m.headers.get('Genimage-Dlq-Error', '')[:200]}"
        )
    if not msgs:
        check.good()
    return check
