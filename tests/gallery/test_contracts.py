"""What the gallery answers over ``rpc.gallery.*`` is exactly its contract: every field the
repository produces is a field of the shared read model (none dropped, none missing), and
the model gives back the same JSON (the wire format did not change when the handlers were
typed)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import TypeAdapter

from gallery import boards, commands, repository
from genimage_common import events as ev
from genimage_common.contracts import gallery as g
from genimage_common.contracts.rpc import Rpc
from genimage_common.ids import image_id_for, new_id
from tests.common.asyncapi import payloads

from .conftest import Model
from .factories import Events


def assert_contract(call: Rpc[Any, Any], answer: dict[str, Any]) -> None:
    parsed = call.parse_reply(answer)
    assert TypeAdapter(call.reply).dump_python(parsed, mode="json") == answer, call.name


def fields(record: dict[str, Any], model: Any) -> None:
    assert set(record) == set(model.model_fields), sorted(set(record) ^ set(model.model_fields))


async def test_every_answer_is_its_contract_field_for_field(model: Model) -> None:
    a = Events()
    done, failed, queued = new_id(), new_id(), new_id()
    await model.apply(
        a.requested(done, prompt="a lighthouse", n=2),
        a.started(done),
        a.completed(done, n=2),
        a.committed(done, 10),
        a.requested(failed, prompt="a storm"),
        a.failed(failed),
        a.refunded(failed, 5),
        a.requested(queued, prompt="later"),
    )
    image = image_id_for(done, 0)
    async with model.sessions.begin() as s:
        board = await boards.create(s, user_id=a.user_id, name="harbours", max_boards=10)
        board_id = uuid.UUID(board["id"])
        await boards.set_membership(s, user_id=a.user_id, board_id=board_id, image_id=image, member=True)
        favorite = await commands.set_favorite(s, user_id=a.user_id, image_id=image, favorite=True)
        published = await commands.set_published(s, user_id=a.user_id, image_id=image, published=True)
        trashed = await commands.trash(s, user_id=a.user_id, image_id=image_id_for(done, 1))
    await model.apply(a.image(ev.ImageFavorited, image))
    user = a.user_id
    async with model.sessions() as s:
        answers = {
            g.GET_GENERATION: await repository.get_generation(s, user_id=user, generation_id=done),
            g.LIST_GENERATIONS: await repository.list_generations(s, user_id=user, limit=2, cursor=None),
            g.GET_IMAGE: await repository.get_image(s, user_id=user, image_id=image),
            g.LIST_IMAGES: await repository.list_images(
                s, user_id=user, limit=10, cursor=None, filters=repository.ImageFilter()
            ),
            g.STATS: await repository.stats(s, user_id=user),
            g.FEED: await repository.feed(s, limit=10, cursor=None),
            g.GET_PUBLISHED_IMAGE: await repository.get_published_image(s, image_id=image),
            g.LIST_BOARDS: await repository.list_boards(s, user_id=user, limit=10, cursor=None),
            g.GET_BOARD: await repository.get_board(s, user_id=user, board_id=board_id),
            g.SET_FAVORITE: favorite,
            g.SET_PUBLISHED: published,
            g.TRASH_IMAGE: trashed,
            g.CREATE_BOARD: board,
        }
        failed_one = await repository.get_generation(s, user_id=user, generation_id=failed)
        queued_one = await repository.get_generation(s, user_id=user, generation_id=queued)
    for call, answer in answers.items():
        assert_contract(call, answer)
    for generation in (answers[g.GET_GENERATION], failed_one, queued_one):
        assert_contract(g.GET_GENERATION, generation)
        fields(generation, g.GET_GENERATION.reply)
    assert answers[g.GET_GENERATION]["outputs"] and answers[g.GET_IMAGE]["board_ids"] == [str(board_id)]
    assert failed_one["error"] is not None and queued_one["queue_position"] == 0
    fields(answers[g.GET_IMAGE], g.GET_IMAGE.reply)
    fields(answers[g.GET_BOARD], g.GET_BOARD.reply)
    fields(answers[g.GET_PUBLISHED_IMAGE], g.GET_PUBLISHED_IMAGE.reply)
    fields(answers[g.FEED]["items"][0], g.FEED.reply.model_fields["items"].annotation.__args__[0])
    fields(answers[g.STATS], g.STATS.reply)
    assert trashed["trashed_at"] is not None


def test_the_asyncapi_document_shows_every_rpc_request_schema() -> None:
    from gallery.app import create_app

    got, _ = payloads(create_app())
    calls = [value for value in vars(g).values() if isinstance(value, Rpc)]
    assert len(calls) == 17
    for call in calls:
        assert got[call.subject] == call.request.__name__, call.subject


class Relay:
    def wake(self) -> None:
        pass


async def test_the_typed_client_reaches_the_handlers(model: Model) -> None:
    from faststream.nats import TestNatsBroker
    from prometheus_client import CollectorRegistry

    from gallery import rpc
    from gallery.deps import Deps
    from gallery.settings import GallerySettings
    from genimage_common.contracts.clients import GalleryClient
    from genimage_common.errors import NotFound, ValidationFailed
    from genimage_common.messaging import make_broker

    a = Events()
    gid = new_id()
    await model.apply(a.requested(gid, prompt="a lighthouse"), a.completed(gid))
    image = image_id_for(gid, 0)
    # The services' broker: its error policy turns a domain error into the error reply.
    broker = make_broker("nats://127.0.0.1:1", service="gallery-test", registry=CollectorRegistry())
    broker.include_router(rpc.router)
    deps = Deps(settings=GallerySettings(), sessions=model.sessions, relay=Relay(), readers=model.sessions)  # type: ignore[arg-type]
    broker.context.set_global("deps", deps)
    async with TestNatsBroker(broker) as br:
        client = GalleryClient(br)  # type: ignore[arg-type]
        favorite = await client.set_favorite(g.SetFavorite(user_id=a.user_id, image_id=image, favorite=True))
        assert favorite.id == image and favorite.favorite is True
        page = await client.list_images(g.ImageQuery(user_id=a.user_id, favorite=True))
        assert [i.id for i in page.items] == [image] and page.next_cursor is None
        generation = await client.get_generation(g.GenerationRef(user_id=a.user_id, generation_id=gid))
        assert generation.status == "succeeded" and [o.id for o in generation.outputs] == [image]
        with pytest.raises(NotFound):
            await client.get_image(g.ImageRef(user_id=new_id(), image_id=image))
        with pytest.raises(ValidationFailed):  # what the handler answers for a request it refuses
            await client.call(g.LIST_IMAGES, g.ImageQuery.model_construct(user_id=a.user_id, limit=0))
