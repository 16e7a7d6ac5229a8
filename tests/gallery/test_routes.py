"""The gallery routes through the gateway, against the four services on real NATS, PostgreSQL
and S3: ownership on every route, commands, boards, the public feed and stats."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.api import PROBLEM, TestUser, signup
from tests.polling import eventually

from .flows import generate, image_ids

pytestmark = pytest.mark.e2e


@pytest.fixture()
def owner(api: httpx.Client) -> tuple[TestUser, list[dict]]:
    user = signup(api)
    return user, generate(api, user, "a lighthouse on a cliff, oil painting", n=2)


def test_every_gallery_route_is_scoped_to_its_owner(api: httpx.Client, owner: tuple[TestUser, list[dict]]) -> None:
    user, images = owner
    image = images[0]["id"]
    board = api.post("/v1/boards", headers=user.auth, json={"name": "mine"}).json()["id"]
    assert api.put(f"/v1/boards/{board}/images/{image}", headers=user.auth).status_code == 204
    assert api.put(f"/v1/images/{image}/publish", headers=user.auth).status_code == 200
    other = signup(api, wait_for_credits=None)
    their_board = api.post("/v1/boards", headers=other.auth, json={"name": "theirs"}).json()["id"]

    routes = [
        ("GET", f"/v1/images/{image}"),
        ("GET", f"/v1/images/{image}/content"),
        ("PUT", f"/v1/images/{image}/favorite"),
        ("DELETE", f"/v1/images/{image}/favorite"),
        ("PUT", f"/v1/images/{image}/publish"),
        ("DELETE", f"/v1/images/{image}/publish"),
        ("DELETE", f"/v1/images/{image}"),
        ("POST", f"/v1/images/{image}/restore"),
        ("GET", f"/v1/images?board={board}"),
        ("GET", f"/v1/boards/{board}"),
        ("PATCH", f"/v1/boards/{board}"),
        ("DELETE", f"/v1/boards/{board}"),
        ("PUT", f"/v1/boards/{board}/images/{image}"),
        ("DELETE", f"/v1/boards/{board}/images/{image}"),
        ("PUT", f"/v1/boards/{their_board}/images/{image}"),  # their board, my image
        ("DELETE", f"/v1/boards/{their_board}/images/{image}"),
    ]
    for method, path in routes:
        body = {"name": "taken over"} if method == "PATCH" else None
        r = api.request(method, path, headers=other.auth, json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.headers["content-type"] == PROBLEM and r.json()["code"] == "not_found", (method, path)
    for method, path in [*routes, ("GET", "/v1/images"), ("GET", "/v1/boards"), ("GET", "/v1/stats")]:
        r = api.request(method, path, json={"name": "x"} if method == "PATCH" else None)
        assert r.status_code == 401, (method, path, r.status_code)
    # Nothing of the owner's changed, and the stranger sees nothing of it.
    got = api.get(f"/v1/images/{image}", headers=user.auth).json()
    assert (got["favorite"], got["published"], got["trashed_at"], got["board_ids"]) == (False, True, None, [board])
    assert api.get(f"/v1/boards/{board}", headers=user.auth).json()["name"] == "mine"
    assert image_ids(api, other) == []
    assert [b["id"] for b in api.get("/v1/boards", headers=other.auth).json()["items"]] == [their_board]


def test_favorite_publish_trash_and_restore(api: httpx.Client, owner: tuple[TestUser, list[dict]]) -> None:
    user, images = owner
    first, second = images[0]["id"], images[1]["id"]
    for _ in range(2):  # idempotent
        r = api.put(f"/v1/images/{first}/publish", headers=user.auth)
        assert r.status_code == 200 and r.json()["published"] is True and r.json()["published_at"]
    assert image_ids(api, user, published="true") == [first]
    assert api.put(f"/v1/images/{second}/favorite", headers=user.auth).json()["favorite"] is True
    assert image_ids(api, user, favorite="true") == [second]

    feed = lambda: [i["id"] for i in api.get("/v1/feed", params={"limit": 100}).json()["items"]]  # noqa: E731
    assert first in feed()
    trashed = api.delete(f"/v1/images/{first}", headers=user.auth)
    assert trashed.status_code == 200 and trashed.json()["trashed_at"] is not None
    assert api.delete(f"/v1/images/{first}", headers=user.auth).json()["trashed_at"] == trashed.json()["trashed_at"]
    assert first not in image_ids(api, user) and first not in feed()
    assert image_ids(api, user, trashed="true") == [first]
    r = api.put(f"/v1/images/{first}/favorite", headers=user.auth)
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    assert api.get(f"/v1/images/{first}/content", params={"variant": "thumbnail"}, headers=user.auth).status_code == 302

    restored = api.post(f"/v1/images/{first}/restore", headers=user.auth)
    assert restored.status_code == 200 and restored.json()["trashed_at"] is None
    assert set(image_ids(api, user)) == {first, second}
    assert first in feed()  # still published
    assert api.delete(f"/v1/images/{first}/publish", headers=user.auth).json()["published"] is False
    assert first not in feed()
    assert api.get(f"/v1/feed/{first}/content").status_code == 404


def test_the_feed_is_public_and_shows_nothing_private(api: httpx.Client, owner: tuple[TestUser, list[dict]]) -> None:
    user, images = owner
    image = images[0]["id"]
    api.put(f"/v1/images/{image}/favorite", headers=user.auth)
    api.put(f"/v1/images/{image}/publish", headers=user.auth)
    board = api.post("/v1/boards", headers=user.auth, json={"name": "private board"}).json()["id"]
    api.put(f"/v1/boards/{board}/images/{image}", headers=user.auth)

    r = api.get("/v1/feed", params={"limit": 100})  # no Authorization header at all
    assert r.status_code == 200
    items = r.json()["items"]
    mine = next(i for i in items if i["id"] == image)
    assert set(mine) == {
        "id",
        "kind",
        "prompt",
        "content_type",
        "width",
        "height",
        "duration_s",
        "created_at",
        "published_at",
        "url",
        "thumbnail_url",
    }
    for secret in (user.id, user.email, images[0]["generation_id"], board, "object_key", "users/", "favorite"):
        assert secret not in r.text, secret
    published = [i["published_at"] for i in items]
    assert published == sorted(published, reverse=True)

    content = api.get(mine["thumbnail_url"].removeprefix(str(api.base_url).rstrip("/")))
    assert content.status_code == 302
    assert httpx.get(content.headers["location"]).status_code == 200
    assert api.get(f"/v1/feed/{images[1]['id']}/content").status_code == 404  # not published
    r = api.get("/v1/feed", params={"limit": 1})
    assert r.json()["next_cursor"] is not None
    nxt = api.get("/v1/feed", params={"limit": 1, "cursor": r.json()["next_cursor"]}).json()["items"]
    assert nxt and nxt[0]["id"] != r.json()["items"][0]["id"]


def test_boards(api: httpx.Client, owner: tuple[TestUser, list[dict]]) -> None:
    user, images = owner
    first, second = images[0]["id"], images[1]["id"]
    r = api.post("/v1/boards", headers=user.auth, json={"name": "Lighthouses"})
    assert r.status_code == 201 and r.headers["location"] == f"/v1/boards/{r.json()['id']}"
    one = r.json()
    two = api.post("/v1/boards", headers=user.auth, json={"name": "Cliffs"}).json()
    assert one["image_count"] == 0
    for board in (one["id"], two["id"]):
        assert api.put(f"/v1/boards/{board}/images/{first}", headers=user.auth).status_code == 204
        assert api.put(f"/v1/boards/{board}/images/{first}", headers=user.auth).status_code == 204
    api.put(f"/v1/boards/{one['id']}/images/{second}", headers=user.auth)
    assert sorted(api.get(f"/v1/images/{first}", headers=user.auth).json()["board_ids"]) == sorted(
        [one["id"], two["id"]]
    )
    assert set(image_ids(api, user, board=one["id"])) == {first, second}
    assert image_ids(api, user, board=two["id"]) == [first]
    r = api.patch(f"/v1/boards/{one['id']}", headers=user.auth, json={"name": "Lighthouses at dusk"})
    assert r.status_code == 200 and r.json()["name"] == "Lighthouses at dusk" and r.json()["image_count"] == 2
    listed = api.get("/v1/boards", headers=user.auth).json()["items"]
    assert [b["name"] for b in listed] == ["Cliffs", "Lighthouses at dusk"]

    assert api.delete(f"/v1/boards/{one['id']}/images/{second}", headers=user.auth).status_code == 204
    assert image_ids(api, user, board=one["id"]) == [first]
    assert api.delete(f"/v1/boards/{two['id']}", headers=user.auth).status_code == 204
    assert api.get(f"/v1/boards/{two['id']}", headers=user.auth).status_code == 404
    assert set(image_ids(api, user)) == {first, second}  # deleting a board keeps its images
    assert api.get(f"/v1/images/{first}", headers=user.auth).json()["board_ids"] == [one["id"]]

    for bad in ({"name": ""}, {"name": "x" * 101}, {}, {"name": "ok", "extra": 1}):
        r = api.post("/v1/boards", headers=user.auth, json=bad)
        assert r.status_code == 422 and r.json()["code"] == "validation_error", bad
    assert api.get(f"/v1/boards/{uuid.uuid4()}", headers=user.auth).status_code == 404
    assert api.put(f"/v1/boards/{one['id']}/images/{uuid.uuid4()}", headers=user.auth).status_code == 404


def test_search_filters_and_stats(api: httpx.Client) -> None:
    user = signup(api)
    fox = generate(api, user, "a red fox in a red forest")[0]["id"]
    car = generate(api, user, "a red car")[0]["id"]
    whale = generate(api, user, "a blue whale")[0]["id"]
    assert image_ids(api, user, q="red") == [fox, car]
    assert image_ids(api, user, q="whale") == [whale]
    assert image_ids(api, user, q="red -car") == [fox]
    created = api.get(f"/v1/images/{car}", headers=user.auth).json()["created_at"]
    assert image_ids(api, user, since=created) == [whale, car]
    assert image_ids(api, user, until=created) == [fox]
    assert image_ids(api, user, kind="video") == []
    page = api.get("/v1/images", headers=user.auth, params={"q": "red", "limit": 1}).json()
    rest = api.get("/v1/images", headers=user.auth, params={"q": "red", "limit": 1, "cursor": page["next_cursor"]})
    assert [i["id"] for i in page["items"] + rest.json()["items"]] == [fox, car]
    for bad in ({"q": ""}, {"q": "x" * 201}, {"since": "2026-01-01T00:00:00"}, {"cursor": "%%%"}, {"kind": "gif"}):
        r = api.get("/v1/images", headers=user.auth, params=bad)
        assert r.status_code == 422 and r.json()["code"] == "validation_error", (bad, r.text)

    api.put(f"/v1/images/{fox}/favorite", headers=user.auth)
    api.put(f"/v1/images/{car}/publish", headers=user.auth)
    api.delete(f"/v1/images/{whale}", headers=user.auth)
    api.post("/v1/boards", headers=user.auth, json={"name": "b"})
    expected = {
        "generations": {"queued": 0, "running": 0, "succeeded": 3, "failed": 0, "canceled": 0, "total": 3},
        "images": 2,
        "videos": 0,
        "favorites": 1,
        "published": 1,
        "trashed": 1,
        "boards": 1,
        "credits_spent": 15,
    }
    # Credits spent come from billing's commit events, projected a moment later.
    eventually(lambda: api.get("/v1/stats", headers=user.auth).json() == expected, what="stats")
