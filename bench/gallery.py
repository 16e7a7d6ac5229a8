"""Gallery read path at 100k and 1M images over 1,000 users.

Seeds ``gallery.images`` with COPY, starts the gallery service, then measures p50/p99 of four
requests — a first page, a deep cursor page, the favorites filter and a ``q`` search — over
``rpc.gallery.list_images`` (NATS request/reply to the service process), each beside the very
same SQL (compiled from ``gallery.repository``) run directly with asyncpg in the same run. The
ratio is the service's overhead: NATS round trip, validation, SQLAlchemy, JSON.

    .venv/bin/python bench/gallery.py [--levels 100000,1000000] [--samples 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

# Run as a script, this file's folder comes first on sys.path and this file's name would
# shadow the gallery service's package: put the repository root there instead.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT), *(p for p in sys.path if p and Path(p).resolve() != ROOT / "bench")]

from bench.harness import infrastructure, summary_ms, write_results  # noqa: E402
from gallery import cursors, repository  # noqa: E402
from genimage_devstack.processes import free_port  # noqa: E402
from genimage_devstack.stack import ServiceProcess  # noqa: E402

USERS = 1_000
LIMIT = 20
FAVORITE_SHARE = 0.1
SEARCH_TERM = "lighthouse"  # in about 4% of the prompts
NOW = datetime(2026, 11, 22, tzinfo=UTC)

SUBJECTS = [
    "fox", "cat", "owl", "heron", "whale", "dragon", "robot", "castle", "city", "forest", "mountain", "river",
    "harbour", "garden", "desert", "island", "bridge", "train", "ship", "tower", "market", "temple", "village",
    "portrait", "astronaut", "knight", "wizard", "dancer", "musician", "cyclist",
]  # fmt: skip
STYLES = [
    "watercolor", "oil painting", "pixel art", "photograph", "ink sketch", "3d render", "isometric", "anime",
    "charcoal", "pastel", "low poly", "cinematic", "studio lighting", "long exposure", "vintage poster",
]  # fmt: skip
WORDS = [
    "red", "blue", "golden", "misty", "snowy", "quiet", "ancient", "neon", "rainy", "sunlit", "stormy",
    "tiny", "giant", "glowing", "frozen", "autumn", "spring", "midnight", "dawn", "dusk", "at night", "underwater",
    "floating", "crowded", "empty", "abandoned", "futuristic", "medieval", "tropical", "arctic",
]  # fmt: skip

COLUMNS = (
    "id", "user_id", "generation_id", "index", "object_key", "thumbnail_key", "content_type", "width", "height",
    "bytes", "sha256", "prompt", "kind", "favorite", "published", "published_at", "created_at",
)  # fmt: skip


def prompt(rng: random.Random) -> str:
    parts = [rng.choice(WORDS), rng.choice(SUBJECTS), "by a", rng.choice(WORDS), rng.choice(SUBJECTS)]
    if rng.random() < 0.04:
        parts.insert(2, SEARCH_TERM)
    return f"a {' '.join(parts)}, {rng.choice(STYLES)}, {rng.choice(STYLES)}"


def rows(users: list[uuid.UUID], per_user: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    for user in users:
        for _ in range(per_user):
            gid, iid = uuid.UUID(int=rng.getrandbits(128)), uuid.UUID(int=rng.getrandbits(128))
            created = NOW - timedelta(seconds=rng.randrange(365 * 86400), microseconds=rng.randrange(1000) * 1000)
            key = f"users/{user}/generations/{gid}/0"
            published = rng.random() < 0.02
            yield (
                iid, user, gid, 0, f"{key}.png", f"{key}.thumb.webp", "image/png", 1024, 1024,
                1_500_000, "0" * 64, prompt(rng), "image", rng.random() < FAVORITE_SHARE, published,
                created if published else None, created,
            )  # fmt: skip


async def seed(conn: asyncpg.Connection, users: list[uuid.UUID], per_user: int, rng: random.Random) -> float:
    """COPY ``per_user`` more images for every user, with the secondary indexes rebuilt after."""
    started = time.perf_counter()
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'gallery' AND tablename = 'images' "
        "AND indexname <> 'images_pkey'"
    )
    for index in indexes:
        await conn.execute(f'DROP INDEX gallery."{index["indexname"]}"')
    chunk = 100  # users per COPY
    for i in range(0, len(users), chunk):
        await conn.copy_records_to_table(
            "images", schema_name="gallery", columns=COLUMNS, records=rows(users[i : i + chunk], per_user, rng)
        )
    for index in indexes:
        await conn.execute(index["indexdef"])
    await conn.execute("VACUUM ANALYZE gallery.images")
    return time.perf_counter() - started


def compiled(stmt: Any) -> tuple[str, list[Any]]:
    """The SQL and arguments SQLAlchemy sends for ``stmt`` through asyncpg."""
    c = stmt.compile(dialect=asyncpg_dialect(), compile_kwargs={"render_postcompile": True})
    return str(c), [c.params[name] for name in c.positiontup]


class Case:
    """One kind of request: its RPC payload and its SQL, for a given user."""

    def __init__(self, name: str, **filters: Any) -> None:
        self.name, self.filters = name, filters

    def payload(self, user: uuid.UUID, cursor: str | None) -> dict[str, Any]:
        body = {"user_id": str(user), "limit": LIMIT, "cursor": cursor}
        for key, value in self.filters.items():
            body["board" if key == "board_id" else key] = value
        return body

    def statement(self, user: uuid.UUID, cursor: str | None) -> tuple[str, list[Any]]:
        return compiled(
            repository.images_statement(
                user_id=user, limit=LIMIT, cursor=cursor, filters=repository.ImageFilter(**self.filters)
            )
        )


async def deep_cursor(conn: asyncpg.Connection, user: uuid.UUID, per_user: int) -> str:
    """The cursor of the row 80% down the user's gallery."""
    row = await conn.fetchrow(
        "SELECT created_at, id FROM gallery.images WHERE user_id = $1 ORDER BY created_at DESC, id DESC OFFSET $2",
        user,
        int(per_user * 0.8),
    )
    return cursors.encode(row["created_at"], row["id"])


async def measure(
    conn: asyncpg.Connection, nc: Any, case: Case, users: list[uuid.UUID], per_user: int, samples: int
) -> dict[str, Any]:
    rng = random.Random(case.name)
    picks = [rng.choice(users) for _ in range(samples)]
    deep = case.name == "deep_cursor_page"
    cursor_of = {u: await deep_cursor(conn, u, per_user) for u in set(picks)} if deep else {}
    service: list[float] = []
    direct: list[float] = []
    returned = 0
    for i, user in enumerate([*picks[:20], *picks]):  # the first 20: warm-up
        cursor = cursor_of.get(user)
        payload = json.dumps(case.payload(user, cursor)).encode()
        t0 = time.perf_counter()
        reply = await nc.request("rpc.gallery.list_images", payload, timeout=10)
        t1 = time.perf_counter()
        body = json.loads(reply.data)
        assert "items" in body, body
        sql, args = case.statement(user, cursor)
        t2 = time.perf_counter()
        await conn.fetch(sql, *args)
        t3 = time.perf_counter()
        if i >= 20:
            service.append(t1 - t0)
            direct.append(t3 - t2)
            returned += len(body["items"])
    s, d = summary_ms(service), summary_ms(direct)
    plan = await conn.fetch("EXPLAIN (FORMAT JSON) " + case.statement(picks[0], cursor_of.get(picks[0]))[0],
                            *case.statement(picks[0], cursor_of.get(picks[0]))[1])  # fmt: skip
    return {
        "service": s,
        "direct_sql": d,
        "ratio_p50": round(s["p50_ms"] / d["p50_ms"], 2),
        "ratio_p99": round(s["p99_ms"] / d["p99_ms"], 2),
        "mean_items": round(returned / samples, 1),
        "plan": plan_summary(json.loads(plan[0][0])[0]["Plan"]),
    }


def plan_summary(node: dict[str, Any]) -> str:
    """The plan's node types and indexes, outermost first."""
    label = node["Node Type"] + (f" {node['Index Name']}" if "Index Name" in node else "")
    children = [plan_summary(c) for c in node.get("Plans", [])]
    return label + (f" <- [{'; '.join(children)}]" if children else "")


CASES = [
    Case("first_page"),
    Case("deep_cursor_page"),
    Case("favorites", favorite=True),
    Case("q_search", q=SEARCH_TERM),
]


async def run(env: dict[str, str], levels: list[int], samples: int) -> dict[str, Any]:
    dsn = env["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    nc = await nats.connect(env["NATS_URL"])
    rng = random.Random(7)
    users = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(USERS)]
    results: dict[str, Any] = {}
    seeded = 0
    try:
        for level in levels:
            per_user_more = (level - seeded) // USERS
            seed_s = await seed(conn, users, per_user_more, rng)
            seeded = level
            per_user = level // USERS
            size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('gallery.images'))")
            print(f"seeded {level} images in {seed_s:.1f}s ({size})", flush=True)
            level_results: dict[str, Any] = {"seed_s": round(seed_s, 1), "images_table_size": size}
            for case in CASES:
                level_results[case.name] = await measure(conn, nc, case, users, per_user, samples)
                r = level_results[case.name]
                print(
                    f"  {case.name:17} service p50 {r['service']['p50_ms']:7.2f} ms p99 {r['service']['p99_ms']:7.2f}"
                    f" | direct p50 {r['direct_sql']['p50_ms']:7.2f} ms p99 {r['direct_sql']['p99_ms']:7.2f}"
                    f" | x{r['ratio_p50']}",
                    flush=True,
                )
            results[str(level)] = level_results
            write_results("gallery", {"users": USERS, "limit": LIMIT, "samples": samples, "levels": results})
    finally:
        await nc.close()
        await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="100000,1000000")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    levels = sorted(int(x) for x in args.levels.split(","))
    with infrastructure() as (_endpoints, env):
        gallery = ServiceProcess("gallery", free_port(), {**env, "LOG_LEVEL": "WARNING"})
        gallery.start()
        try:
            gallery.wait_ready()
            asyncio.run(run(env, levels, args.samples))
        finally:
            gallery.stop()


if __name__ == "__main__":
    main()
