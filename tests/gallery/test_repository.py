"""Queries on real PostgreSQL: keyset pages under concurrent inserts, filters, full-text search."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from gallery import repository
from genimage_common import events as ev
from genimage_common.errors import NotFound, ValidationFailed
from genimage_common.ids import image_id_for, new_id

from .conftest import Model
from .factories import Events


async def page(model: Model, user_id: uuid.UUID, *, limit: int = 20, cursor: str | None = None, **filters: Any):
    async with model.sessions() as s:
        return await repository.list_images(
            s, user_id=user_id, limit=limit, cursor=cursor, filters=repository.ImageFilter(**filters)
        )


async def all_pages(model: Model, user_id: uuid.UUID, *, limit: int, **filters: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        got = await page(model, user_id, limit=limit, cursor=cursor, **filters)
        ids += [i["id"] for i in got["items"]]
        cursor = got["next_cursor"]
        if cursor is None:
            return ids


async def generate(model: Model, a: Events, prompt: str, *, n: int = 1, kind: str = "image") -> list[uuid.UUID]:
    gid = new_id()
    await model.apply(a.requested(gid, prompt=prompt, n=n, kind=kind), a.completed(gid, n=n, kind=kind))
    return [image_id_for(gid, i) for i in range(n)]


async def test_pages_never_skip_or_repeat_while_images_are_inserted(model: Model) -> None:
    a = Events()
    original: list[uuid.UUID] = []
    for i in range(12):  # 4 outputs per generation: ties on created_at, broken by id
        original += await generate(model, a, f"batch {i}", n=4 if i % 3 == 0 else 1)
    seen: list[dict[str, Any]] = []
    cursor = None
    inserted: list[uuid.UUID] = []
    while True:
        got = await page(model, a.user_id, limit=5, cursor=cursor)
        seen += got["items"]
        cursor = got["next_cursor"]
        if cursor is None:
            break
        # Between two pages: newer images, and late ones whose time ties with the last row seen.
        inserted += await generate(model, a, "newer", n=2)
        late = Events(user_id=a.user_id)
        late.clock.now = datetime.fromisoformat(seen[-1]["created_at"]) - timedelta(seconds=1)  # next tick: a tie
        inserted += await generate(model, late, "late", n=3)
    ids = [i["id"] for i in seen]
    assert len(ids) == len(set(ids)), "a row was repeated"
    assert {str(i) for i in original} <= set(ids), "a row that existed before the first page was skipped"
    keys = [(i["created_at"], i["id"]) for i in seen]
    assert keys == sorted(keys, reverse=True)
    assert inserted  # and the newer ones come first on a fresh first page
    first = await page(model, a.user_id, limit=2)
    assert {i["id"] for i in first["items"]} <= {str(i) for i in inserted}


async def test_filters_narrow_the_list(model: Model) -> None:
    a = Events()
    fav, plain, published, trashed = [await generate(model, a, p) for p in ("fav", "plain", "pub", "trash")]
    video = await generate(model, a, "clip", kind="video")
    since = a.clock.tick()
    later = await generate(model, a, "later")
    board = new_id()
    await model.apply(
        a.image(ev.ImageFavorited, fav[0]),
        a.image(ev.ImagePublished, published[0]),
        a.image(ev.ImageTrashed, trashed[0]),
        a.board(ev.BoardCreated, board, board_name="mine"),
        a.board(ev.BoardImageAdded, board, image_id=plain[0]),
        a.board(ev.BoardImageAdded, board, image_id=later[0]),
        a.board(ev.BoardImageAdded, board, image_id=trashed[0]),
    )
    user = a.user_id

    async def ids(**filters: Any) -> set[uuid.UUID]:
        return {uuid.UUID(i["id"]) for i in (await page(model, user, **filters))["items"]}

    everything = {*fav, *plain, *published, *video, *later}
    assert await ids() == everything
    assert await ids(favorite=True) == set(fav)
    assert await ids(favorite=False) == everything - set(fav)
    assert await ids(published=True) == set(published)
    assert await ids(kind="video") == set(video)
    assert await ids(kind="image") == everything - set(video)
    assert await ids(board_id=board) == {plain[0], later[0]}  # the trashed one is on it, but in the trash
    assert await ids(since=since) == set(later)
    assert await ids(until=since) == everything - set(later)
    assert await ids(trashed=True) == set(trashed)
    assert await ids(trashed=True, board_id=board) == set(trashed)
    assert await ids(kind="image", favorite=False, published=False, until=since) == set(plain)
    with pytest.raises(NotFound):  # another user's board
        await page(model, new_id(), board_id=board)


async def test_full_text_search_ranks_by_relevance_and_filters(model: Model) -> None:
    a = Events()
    once = await generate(model, a, "a red fox")
    thrice = await generate(model, a, "a red fox in a red forest with red leaves")
    whale = await generate(model, a, "a blue whale")
    plural = await generate(model, a, "foxes running in the snow")
    other = Events()
    await generate(model, other, "a red fox of someone else")

    async def search(q: str, **filters: Any) -> list[uuid.UUID]:
        return [uuid.UUID(i["id"]) for i in (await page(model, a.user_id, q=q, **filters))["items"]]

    assert await search("red") == [*thrice, *once]  # more matches rank higher, whatever the age
    assert set(await search("fox")) == {*once, *thrice, *plural}  # stemming: foxes ~ fox
    assert set(await search("fox -forest")) == {*once, *plural}
    assert set(await search('"red fox"')) == {*once, *thrice}
    assert await search("whale or leaves") != [] and set(await search("whale or leaves")) == {*whale, *thrice}
    assert await search("the") == []  # only a stop word: nothing to match
    assert await search("zebra") == []
    await model.apply(a.image(ev.ImageFavorited, once[0]))
    assert await search("red", favorite=True) == once


async def test_search_pages_are_stable_across_equal_ranks(model: Model) -> None:
    a = Events()
    double = await generate(model, a, "a cat and another cat")
    for _ in range(7):
        await generate(model, a, "a sleeping cat", n=3)
    ids = await all_pages(model, a.user_id, limit=4, q="cat")
    assert len(ids) == 22 and len(set(ids)) == 22
    assert ids[0] == str(double[0])  # the double match ranks first although it is the oldest
    newest_first = [i["id"] for i in (await page(model, a.user_id, limit=100, q="sleeping"))["items"]]
    assert ids[1:] == newest_first  # equal ranks: newest first, ties by id


async def test_a_cursor_is_validated(model: Model) -> None:
    a = Events()
    for _ in range(3):
        await generate(model, a, "cat")
    plain = (await page(model, a.user_id, limit=1))["next_cursor"]
    ranked = (await page(model, a.user_id, limit=1, q="cat"))["next_cursor"]
    assert plain and ranked
    with pytest.raises(ValidationFailed):
        await page(model, a.user_id, limit=1, cursor=ranked)  # a search cursor without the search
    with pytest.raises(ValidationFailed):
        await page(model, a.user_id, limit=1, cursor=plain, q="cat")
    with pytest.raises(ValidationFailed):
        await page(model, a.user_id, limit=1, cursor="not-a-cursor")
