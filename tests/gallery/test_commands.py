"""Commands on real PostgreSQL: idempotent, owner-scoped, emitted as events that a replay turns
into the very same model; trash, restore and purge after the retention period; boards."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gallery import boards, commands, purge, repository
from genimage_common import events as ev
from genimage_common.errors import Conflict, NotFound, ValidationFailed
from genimage_common.ids import image_id_for, new_id

from .conftest import Model, drop_model, new_model
from .factories import Events

RETENTION = timedelta(days=30)


async def images_of(model: Model, a: Events, n: int = 2) -> tuple[ev.Event, list[uuid.UUID]]:
    gid = new_id()
    completed = a.completed(gid, n=n)
    await model.apply(a.requested(gid, prompt="a quiet harbour", n=n), completed)
    return completed, [image_id_for(gid, i) for i in range(n)]


async def test_favorite_and_publish_are_idempotent_and_emit_once(model: Model) -> None:
    a = Events()
    _, (image, _) = await images_of(model, a)
    for _ in range(2):
        async with model.sessions.begin() as s:
            got = await commands.set_favorite(s, user_id=a.user_id, image_id=image, favorite=True)
        assert got["favorite"] is True
    async with model.sessions.begin() as s:
        await commands.set_published(s, user_id=a.user_id, image_id=image, published=True)
        await commands.set_published(s, user_id=a.user_id, image_id=image, published=True)
    async with model.sessions.begin() as s:
        got = await commands.set_favorite(s, user_id=a.user_id, image_id=image, favorite=False)
        assert got["favorite"] is False and got["published"] is True
    names = [e.data.name for e in await model.outbox_events()]
    assert names == ["gallery.image_favorited", "gallery.image_published", "gallery.image_unfavorited"]
    assert {e.id for e in await model.outbox_events()} <= await model.processed()


async def test_every_command_is_scoped_to_its_owner(model: Model) -> None:
    a, stranger = Events(), Events()
    _, (image, _) = await images_of(model, a)
    async with model.sessions.begin() as s:
        board = await boards.create(s, user_id=a.user_id, name="mine", max_boards=10)
        theirs = await boards.create(s, user_id=stranger.user_id, name="theirs", max_boards=10)
    board_id, their_board = uuid.UUID(board["id"]), uuid.UUID(theirs["id"])
    attempts = [
        lambda s: commands.set_favorite(s, user_id=stranger.user_id, image_id=image, favorite=True),
        lambda s: commands.set_published(s, user_id=stranger.user_id, image_id=image, published=True),
        lambda s: commands.trash(s, user_id=stranger.user_id, image_id=image),
        lambda s: commands.restore(s, user_id=stranger.user_id, image_id=image),
        lambda s: boards.rename(s, user_id=stranger.user_id, board_id=board_id, name="x"),
        lambda s: boards.delete(s, user_id=stranger.user_id, board_id=board_id),
        lambda s: boards.set_membership(s, user_id=stranger.user_id, board_id=board_id, image_id=image, member=True),
        lambda s: boards.set_membership(s, user_id=stranger.user_id, board_id=their_board, image_id=image, member=True),
        lambda s: repository.get_image(s, user_id=stranger.user_id, image_id=image),
        lambda s: repository.get_board(s, user_id=stranger.user_id, board_id=board_id),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound):
            async with model.sessions.begin() as s:
                await attempt(s)
    async with model.sessions() as s:
        untouched = await repository.get_image(s, user_id=a.user_id, image_id=image)
        assert (await repository.get_board(s, user_id=a.user_id, board_id=board_id))["name"] == "mine"
    assert (untouched["favorite"], untouched["published"], untouched["trashed_at"]) == (False, False, None)
    assert [e.data.name for e in await model.outbox_events()] == ["gallery.board_created"] * 2


async def test_trash_restore_and_purge_after_the_retention_period(model: Model) -> None:
    a = Events()
    completed, (image, kept) = await images_of(model, a)
    async with model.sessions.begin() as s:
        trashed = await commands.trash(s, user_id=a.user_id, image_id=image)
        again = await commands.trash(s, user_id=a.user_id, image_id=image)
    assert trashed["trashed_at"] is not None and again["trashed_at"] == trashed["trashed_at"]
    async with model.sessions() as s:
        listed = await repository.list_images(
            s, user_id=a.user_id, limit=10, cursor=None, filters=repository.ImageFilter()
        )
        in_trash = await repository.list_images(
            s, user_id=a.user_id, limit=10, cursor=None, filters=repository.ImageFilter(trashed=True)
        )
    assert [i["id"] for i in listed["items"]] == [str(kept)]
    assert [i["id"] for i in in_trash["items"]] == [str(image)]
    with pytest.raises(Conflict):  # in the trash: restore first
        async with model.sessions.begin() as s:
            await commands.set_favorite(s, user_id=a.user_id, image_id=image, favorite=True)

    async with model.sessions.begin() as s:
        restored = await commands.restore(s, user_id=a.user_id, image_id=image)
        assert restored["trashed_at"] is None
        await commands.trash(s, user_id=a.user_id, image_id=image)
    trashed_at = (await model.outbox_events())[-1].time

    async with model.sessions.begin() as s:
        assert await purge.purge_expired(s, now=trashed_at + RETENTION - timedelta(seconds=1), retention=RETENTION) == 0
    async with model.sessions.begin() as s:
        assert await purge.purge_expired(s, now=trashed_at + RETENTION + timedelta(seconds=1), retention=RETENTION) == 1
    deleted = (await model.outbox_events())[-1]
    assert isinstance(deleted.data, ev.ImageDeleted) and deleted.data.image_id == image
    output = completed.data.outputs[0]
    assert deleted.data.object_keys == [output.object_key, output.thumbnail_key]
    with pytest.raises(NotFound):
        async with model.sessions.begin() as s:
            await commands.restore(s, user_id=a.user_id, image_id=image)
    async with model.sessions.begin() as s:  # nothing left to purge
        assert await purge.purge_expired(s, now=trashed_at + 2 * RETENTION, retention=RETENTION) == 0
    await model.apply(completed.model_copy(update={"id": uuid.uuid4()}))  # a redelivery brings nothing back
    async with model.sessions() as s:
        with pytest.raises(NotFound):
            await repository.get_image(s, user_id=a.user_id, image_id=image)
        assert (await repository.get_image(s, user_id=a.user_id, image_id=kept))["trashed_at"] is None


async def test_boards(model: Model) -> None:
    a = Events()
    _, (first, second) = await images_of(model, a)
    async with model.sessions.begin() as s:
        one = await boards.create(s, user_id=a.user_id, name="  Harbours   at night ", max_boards=3)
        two = await boards.create(s, user_id=a.user_id, name="Favourites", max_boards=3)
    assert one["name"] == "Harbours at night" and one["image_count"] == 0
    one_id, two_id = uuid.UUID(one["id"]), uuid.UUID(two["id"])
    async with model.sessions.begin() as s:
        for board in (one_id, two_id):  # an image on several boards; adding twice changes nothing
            await boards.set_membership(s, user_id=a.user_id, board_id=board, image_id=first, member=True)
            await boards.set_membership(s, user_id=a.user_id, board_id=board, image_id=first, member=True)
        await boards.set_membership(s, user_id=a.user_id, board_id=one_id, image_id=second, member=True)
        renamed = await boards.rename(s, user_id=a.user_id, board_id=one_id, name="Harbours")
    assert renamed == {**one, "name": "Harbours", "image_count": 2}
    async with model.sessions() as s:
        image = await repository.get_image(s, user_id=a.user_id, image_id=first)
        assert sorted(image["board_ids"]) == sorted([one["id"], two["id"]])
        listed = await repository.list_boards(s, user_id=a.user_id, limit=1, cursor=None)
        rest = await repository.list_boards(s, user_id=a.user_id, limit=1, cursor=listed["next_cursor"])
    assert [b["name"] for b in listed["items"] + rest["items"]] == ["Favourites", "Harbours"]
    assert rest["next_cursor"] is None

    async with model.sessions.begin() as s:
        await boards.set_membership(s, user_id=a.user_id, board_id=one_id, image_id=second, member=False)
        await boards.set_membership(s, user_id=a.user_id, board_id=one_id, image_id=second, member=False)
        await boards.delete(s, user_id=a.user_id, board_id=two_id)
    async with model.sessions() as s:
        assert (await repository.get_board(s, user_id=a.user_id, board_id=one_id))["image_count"] == 1
        assert (await repository.get_image(s, user_id=a.user_id, image_id=first))["board_ids"] == [one["id"]]
        with pytest.raises(NotFound):
            await repository.get_board(s, user_id=a.user_id, board_id=two_id)
        remaining = await repository.list_images(
            s, user_id=a.user_id, limit=10, cursor=None, filters=repository.ImageFilter()
        )
    assert {i["id"] for i in remaining["items"]} == {str(first), str(second)}  # a deleted board keeps its images

    with pytest.raises(ValidationFailed):
        async with model.sessions.begin() as s:
            await boards.create(s, user_id=a.user_id, name="   ", max_boards=3)
    async with model.sessions.begin() as s:  # a deleted board does not count
        await boards.create(s, user_id=a.user_id, name="third", max_boards=3)
        await boards.create(s, user_id=a.user_id, name="fourth", max_boards=3)
    with pytest.raises(Conflict):
        async with model.sessions.begin() as s:
            await boards.create(s, user_id=a.user_id, name="fifth", max_boards=3)
    names = [e.data.name for e in await model.outbox_events()]
    assert names.count("gallery.board_image_added") == 3 and names.count("gallery.board_image_removed") == 1


async def test_replaying_the_emitted_events_gives_the_live_model(gallery_engine: AsyncEngine, model: Model) -> None:
    """Commands decide on the live model; their events alone rebuild it exactly."""
    a = Events()
    inputs: list[ev.Event] = []
    gid = new_id()
    inputs += [a.requested(gid, prompt="boats", n=3), a.completed(gid, n=3)]
    await model.apply(*inputs)
    first, second, third = (image_id_for(gid, i) for i in range(3))
    async with model.sessions.begin() as s:
        board = uuid.UUID((await boards.create(s, user_id=a.user_id, name="b", max_boards=5))["id"])
    for favorite in (True, False, True):  # within one millisecond: the clocks still order them
        async with model.sessions.begin() as s:
            await commands.set_favorite(s, user_id=a.user_id, image_id=first, favorite=favorite)
    async with model.sessions.begin() as s:
        await commands.set_published(s, user_id=a.user_id, image_id=second, published=True)
        await commands.trash(s, user_id=a.user_id, image_id=second)
        await commands.restore(s, user_id=a.user_id, image_id=second)
        await commands.trash(s, user_id=a.user_id, image_id=third)
        await boards.set_membership(s, user_id=a.user_id, board_id=board, image_id=first, member=True)
        await boards.set_membership(s, user_id=a.user_id, board_id=board, image_id=second, member=True)
        await boards.set_membership(s, user_id=a.user_id, board_id=board, image_id=second, member=False)
        await boards.rename(s, user_id=a.user_id, board_id=board, name="renamed")
    async with model.sessions.begin() as s:
        await purge.purge_expired(s, now=a.clock.now + 2 * RETENTION, retention=RETENTION)
    live = await model.snapshot()

    replay = await new_model(gallery_engine)
    try:
        await replay.apply(*(await model.outbox_events()), *inputs)
        assert await replay.snapshot() == live
    finally:
        await drop_model(gallery_engine, replay)
