"""The projection on real PostgreSQL: any arrival order and any duplicates give the same model."""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gallery import repository
from genimage_common import events as ev
from genimage_common.errors import NotFound
from genimage_common.ids import image_id_for, new_id

from .conftest import Model, drop_model, new_model
from .factories import Clock, Events


def mixed_history() -> tuple[list[ev.Event[Any]], dict[str, Any]]:
    """Two users' generations, billing, favorites, publications, trash, purge, boards and a
    deleted user, in the order they happened."""
    clock = Clock()
    a, b = Events(clock=clock), Events(clock=clock)
    g1, g2, g3, g4, g5 = (new_id() for _ in range(5))
    i1, i2, v1, i5 = image_id_for(g1, 0), image_id_for(g1, 1), image_id_for(g4, 0), image_id_for(g5, 0)
    b1, b2, b3 = new_id(), new_id(), new_id()
    history = [
        a.registered(),
        b.registered(),
        a.requested(g1, prompt="a red fox in the snow", n=2, cost=10),
        a.started(g1),
        a.progress(g1, 0.3),
        a.progress(g1, 0.7),
        a.completed(g1, n=2),
        a.committed(g1, 10),
        a.requested(g2, prompt="a blue whale"),
        a.started(g2, provider="remote"),
        a.started(g2, attempt=2, provider="local"),
        a.progress(g2, 0.5),
        a.failed(g2),
        a.refunded(g2, 5),
        a.requested(g3, prompt="never rendered"),
        a.canceled(g3),
        a.refunded(g3, 5, "canceled"),
        a.requested(g4, prompt="waves at dusk", kind="video", cost=10),
        a.started(g4),
        a.completed(g4, kind="video"),
        a.committed(g4, 10),
        a.image(ev.ImageFavorited, i1),
        a.image(ev.ImageUnfavorited, i1),
        a.image(ev.ImageFavorited, i1),
        a.image(ev.ImageFavorited, i2),
        a.image(ev.ImageUnfavorited, i2),
        a.image(ev.ImagePublished, i1),
        a.image(ev.ImagePublished, v1),
        a.image(ev.ImageUnpublished, v1),
        a.board(ev.BoardCreated, b1, board_name="Foxes"),
        a.board(ev.BoardCreated, b2, board_name="Misc"),
        a.board(ev.BoardCreated, b3, board_name="Tmp"),
        a.board(ev.BoardRenamed, b1, board_name="Fox pics"),
        a.board(ev.BoardImageAdded, b1, image_id=i1),
        a.board(ev.BoardImageAdded, b1, image_id=i2),
        a.board(ev.BoardImageRemoved, b1, image_id=i2),
        a.board(ev.BoardImageAdded, b2, image_id=i1),
        a.board(ev.BoardImageAdded, b2, image_id=v1),
        a.board(ev.BoardImageAdded, b3, image_id=i1),
        a.board(ev.BoardRenamed, b1, board_name="Best foxes"),
        a.image(ev.ImageTrashed, i2),
        a.image(ev.ImageRestored, i2),
        a.image(ev.ImageTrashed, i2),
        a.image(ev.ImageTrashed, v1),
        a.purged(v1, ["k1", "k2"]),
        a.board(ev.BoardDeleted, b3),
        b.requested(g5, prompt="a private cat"),
        b.completed(g5),
        b.image(ev.ImageFavorited, i5),
        b.image(ev.ImagePublished, i5),
        b.user_deleted(),
    ]
    ids = {"a": a.user_id, "b": b.user_id, "g": [g1, g2, g3, g4, g5], "i": [i1, i2, v1, i5], "boards": [b1, b2, b3]}
    return history, ids


def shuffled_with_duplicates(history: list[ev.Event[Any]], seed: int) -> list[ev.Event[Any]]:
    rng = random.Random(seed)
    events = history + rng.sample(history, k=len(history) // 3)
    rng.shuffle(events)
    return events


async def test_the_history_in_order_gives_the_expected_model(model: Model) -> None:
    history, ids = mixed_history()
    await model.apply(*history)
    a, (g1, g2, g3, g4, _), (i1, i2, v1, i5) = ids["a"], ids["g"], ids["i"]
    b1, b2, b3 = ids["boards"]
    async with model.sessions() as s:
        gens = {g: await repository.get_generation(s, user_id=a, generation_id=g) for g in (g1, g2, g3, g4)}
        assert [gens[g]["status"] for g in (g1, g2, g3, g4)] == ["succeeded", "failed", "canceled", "succeeded"]
        assert gens[g1]["progress"] == 1.0 and gens[g1]["cost"] == 10 and len(gens[g1]["outputs"]) == 1  # i2 trashed
        assert gens[g2]["provider"] == "local" and gens[g2]["error"]["code"] == "provider_error"
        assert gens[g2]["progress"] == 0.5 and gens[g2]["cost"] == 0 and gens[g2]["refunded"] == 5
        i1_row = await repository.get_image(s, user_id=a, image_id=i1)
        assert i1_row["favorite"] and i1_row["published"] and i1_row["prompt"] == "a red fox in the snow"
        assert sorted(i1_row["board_ids"]) == sorted([str(b1), str(b2)])
        i2_row = await repository.get_image(s, user_id=a, image_id=i2)
        assert not i2_row["favorite"] and i2_row["trashed_at"] is not None
        with pytest.raises(NotFound):
            await repository.get_image(s, user_id=a, image_id=v1)  # purged
        boards = await repository.list_boards(s, user_id=a, limit=10, cursor=None)
        assert [(x["name"], x["image_count"]) for x in boards["items"]] == [("Misc", 1), ("Best foxes", 1)]
        with pytest.raises(NotFound):
            await repository.get_board(s, user_id=a, board_id=b3)
        i5_row = await repository.get_image(s, user_id=ids["b"], image_id=i5)
        assert i5_row["trashed_at"] is not None  # its owner was deleted
        feed = await repository.feed(s, limit=10, cursor=None)
        assert [x["id"] for x in feed["items"]] == [str(i1)]
        stats = await repository.stats(s, user_id=a)
        assert stats["generations"] == {
            "queued": 0,
            "running": 0,
            "succeeded": 2,
            "failed": 1,
            "canceled": 1,
            "total": 4,
        }
        assert (stats["images"], stats["videos"], stats["favorites"], stats["trashed"]) == (1, 0, 1, 1)
        assert stats["credits_spent"] == 20 and stats["boards"] == 2


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_any_order_with_duplicates_converges_to_the_same_model(
    gallery_engine: AsyncEngine, model: Model, seed: int
) -> None:
    history, _ = mixed_history()
    await model.apply(*history)
    expected = await model.snapshot()
    assert sum(len(rows) for rows in expected.values()) > 10

    other = await new_model(gallery_engine)
    try:
        await other.apply(*shuffled_with_duplicates(history, seed))
        assert await other.snapshot() == expected
        assert await other.processed() == await model.processed()
    finally:
        await drop_model(gallery_engine, other)


async def test_a_late_event_never_moves_a_generation_back(model: Model) -> None:
    a = Events()
    gid = new_id()
    requested, started, progress, completed = a.requested(gid), a.started(gid), a.progress(gid, 0.4), a.completed(gid)
    await model.apply(requested, completed, progress, started)
    async with model.sessions() as s:
        got = await repository.get_generation(s, user_id=a.user_id, generation_id=gid)
    assert (got["status"], got["progress"], got["provider"]) == ("succeeded", 1.0, "local")
    assert datetime.fromisoformat(got["started_at"]) == started.time
    assert datetime.fromisoformat(got["finished_at"]) == completed.time


async def test_outputs_seen_before_their_request_show_up_and_learn_the_prompt_later(model: Model) -> None:
    a = Events()
    gid = new_id()
    requested, completed = a.requested(gid, prompt="an owl at night"), a.completed(gid)
    await model.apply(completed)
    async with model.sessions() as s:
        with pytest.raises(NotFound):  # the generation is shown once its request is seen
            await repository.get_generation(s, user_id=a.user_id, generation_id=gid)
        page = await repository.list_images(
            s, user_id=a.user_id, limit=5, cursor=None, filters=repository.ImageFilter()
        )
    assert [(i["id"], i["prompt"]) for i in page["items"]] == [(str(image_id_for(gid, 0)), None)]
    await model.apply(requested)
    async with model.sessions() as s:
        q = repository.ImageFilter(q="owl")
        page = await repository.list_images(s, user_id=a.user_id, limit=5, cursor=None, filters=q)
        got = await repository.get_generation(s, user_id=a.user_id, generation_id=gid)
    assert [i["prompt"] for i in page["items"]] == ["an owl at night"]
    assert got["status"] == "succeeded"
    assert datetime.fromisoformat(got["created_at"]) == requested.data.requested_at


async def test_a_flag_set_before_the_image_is_seen_waits_in_an_invisible_stub(model: Model) -> None:
    a = Events()
    gid = new_id()
    image_id = image_id_for(gid, 0)
    await model.apply(a.image(ev.ImageFavorited, image_id))
    async with model.sessions() as s:
        page = await repository.list_images(
            s, user_id=a.user_id, limit=5, cursor=None, filters=repository.ImageFilter()
        )
        assert page["items"] == []
        with pytest.raises(NotFound):
            await repository.get_image(s, user_id=a.user_id, image_id=image_id)
    await model.apply(a.completed(gid))
    async with model.sessions() as s:
        assert (await repository.get_image(s, user_id=a.user_id, image_id=image_id))["favorite"] is True


async def test_a_purged_image_never_comes_back(model: Model) -> None:
    a = Events()
    gid = new_id()
    image_id = image_id_for(gid, 0)
    completed = a.completed(gid)
    board = new_id()
    await model.apply(
        completed,
        a.board(ev.BoardCreated, board, board_name="b"),
        a.board(ev.BoardImageAdded, board, image_id=image_id),
        a.purged(image_id, ["x"]),
    )
    # Replays and stragglers about the purged image: a redelivered completed, a late favorite.
    late = a.image(ev.ImageFavorited, image_id)
    await model.apply(completed.model_copy(update={"id": uuid.uuid4()}), late, a.image(ev.ImageRestored, image_id))
    snapshot = await model.snapshot()
    assert snapshot["images"] == [] and snapshot["board_images"] == []
    assert [row[0] for row in snapshot["purged_images"]] == [image_id]
