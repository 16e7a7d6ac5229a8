"""The walking skeleton, through HTTP only: signup → credits → generation → image → favorite,
across four service processes on real NATS, PostgreSQL and S3."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from genimage_devstack.stack import ServiceProcess
from tests.api import PROBLEM, signup, wait_terminal
from tests.polling import eventually

pytestmark = pytest.mark.e2e


def test_the_whole_path(api: httpx.Client) -> None:
    user = signup(api)  # waits for the 20 signup credits

    r = api.post(
        "/v1/generations",
        headers=user.auth,
        json={"kind": "image", "prompt": "a lighthouse on a cliff at sunset", "width": 512, "height": 384, "seed": 7},
    )
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["status"] == "queued" and created["cost"] == 5
    assert r.headers["location"] == f"/v1/generations/{created['id']}"

    done = wait_terminal(api, user, created["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0
    assert done["provider"] == "local" and done["started_at"] and done["finished_at"]
    assert len(done["outputs"]) == 1
    image = done["outputs"][0]
    assert (image["width"], image["height"], image["content_type"]) == (512, 384, "image/png")
    assert "object_key" not in image

    listed = api.get("/v1/images", headers=user.auth).json()
    assert [i["id"] for i in listed["items"]] == [image["id"]]

    r = api.get(f"/v1/images/{image['id']}/content", headers=user.auth)
    assert r.status_code == 302
    png = httpx.get(r.headers["location"]).content
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.size == (512, 384)
        assert "a lighthouse on a cliff at sunset" in img.text["parameters"]
    r = api.get(f"/v1/images/{image['id']}/content", params={"variant": "thumbnail"}, headers=user.auth)
    thumb = httpx.get(r.headers["location"]).content
    with Image.open(io.BytesIO(thumb)) as img:
        assert img.format == "WEBP" and max(img.size) <= 256

    # Billing committed the hold: 20 - 5.
    eventually(
        lambda: api.get("/v1/credits", headers=user.auth).json() == {"available": 15, "reserved": 0},
        what="credits committed",
    )
    ledger = api.get("/v1/credits/ledger", headers=user.auth).json()["items"]
    assert [e["type"] for e in ledger][-2:] == ["reserve", "grant"]

    # Favorites.
    assert api.put(f"/v1/images/{image['id']}/favorite", headers=user.auth).json()["favorite"] is True
    assert api.put(f"/v1/images/{image['id']}/favorite", headers=user.auth).status_code == 200  # idempotent
    favs = api.get("/v1/images", params={"favorite": "true"}, headers=user.auth).json()["items"]
    assert [i["id"] for i in favs] == [image["id"]]
    assert api.delete(f"/v1/images/{image['id']}/favorite", headers=user.auth).json()["favorite"] is False
    assert api.get("/v1/images", params={"favorite": "true"}, headers=user.auth).json()["items"] == []

    # Another user sees none of it.
    other = signup(api, wait_for_credits=None)
    for method, path in [
        ("GET", f"/v1/generations/{created['id']}"),
        ("GET", f"/v1/images/{image['id']}"),
        ("GET", f"/v1/images/{image['id']}/content"),
        ("PUT", f"/v1/images/{image['id']}/favorite"),
        ("DELETE", f"/v1/images/{image['id']}/favorite"),
    ]:
        r = api.request(method, path, headers=other.auth)
        assert r.status_code == 404, (method, path, r.text)
        assert r.headers["content-type"] == PROBLEM and r.json()["code"] == "not_found"
    assert api.get("/v1/images", headers=other.auth).json()["items"] == []
    assert api.get("/v1/generations", headers=other.auth).json()["items"] == []


def test_same_prompt_and_seed_render_identical_bytes(api: httpx.Client) -> None:
    user = signup(api)
    body = {"prompt": "blue ocean waves", "width": 256, "height": 256, "seed": 1234}
    first = wait_terminal(api, user, api.post("/v1/generations", headers=user.auth, json=body).json()["id"])
    second = wait_terminal(api, user, api.post("/v1/generations", headers=user.auth, json=body).json()["id"])
    other = wait_terminal(
        api, user, api.post("/v1/generations", headers=user.auth, json={**body, "prompt": "green forest"}).json()["id"]
    )
    assert first["outputs"][0]["sha256"] == second["outputs"][0]["sha256"]
    assert first["outputs"][0]["sha256"] != other["outputs"][0]["sha256"]


def test_insufficient_credits_is_402_and_nothing_is_queued(api: httpx.Client) -> None:
    user = signup(api)
    r = api.post("/v1/generations", headers=user.auth, json={"prompt": "x", "n": 4, "width": 256, "height": 256})
    assert r.status_code == 202  # 4 x 5 = 20: exactly the signup grant
    r = api.post("/v1/generations", headers=user.auth, json={"prompt": "one more", "width": 256, "height": 256})
    assert r.status_code == 402
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["code"] == "insufficient_credits" and problem["status"] == 402
    assert problem["requested"] == 5 and problem["available"] == 0
    wait_terminal(api, user, api.get("/v1/generations", headers=user.auth).json()["items"][0]["id"])
    prompts = [g["prompt"] for g in api.get("/v1/generations", headers=user.auth).json()["items"]]
    assert prompts == ["x"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prompt": ""},
        {"prompt": "x", "n": 5},
        {"prompt": "x", "width": 100, "height": 100},
        {"prompt": "x", "width": 512},
        {"prompt": "x", "model": "no-such-model"},
        {"prompt": "x", "kind": "sculpture"},
        {"prompt": "x", "unexpected": 1},
        {"prompt": "x", "aspect_ratio": "5:1"},
        {"prompt": "x", "kind": "video", "duration_s": 30},
    ],
)
def test_invalid_input_is_422_problem(api: httpx.Client, body: dict) -> None:
    user = signup(api, wait_for_credits=None)
    r = api.post("/v1/generations", headers=user.auth, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/me"),
        ("GET", "/v1/credits"),
        ("GET", "/v1/images"),
        ("POST", "/v1/generations"),
        ("GET", "/v1/generations"),
    ],
)
def test_no_token_is_401(api: httpx.Client, method: str, path: str) -> None:
    r = api.request(method, path, json={"prompt": "x"})
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    r = api.request(method, path, json={"prompt": "x"}, headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401


def test_unknown_route_is_problem_json(api: httpx.Client) -> None:
    r = api.get("/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM and r.json()["code"] == "not_found"


def test_health_ready_and_metrics_on_every_service(services: dict[str, ServiceProcess]) -> None:
    for name, proc in services.items():
        assert httpx.get(f"{proc.url}/healthz").status_code == 200, name
        ready = httpx.get(f"{proc.url}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ok", (name, ready.text)
        metrics = httpx.get(f"{proc.url}/metrics")
        assert metrics.status_code == 200
        assert f'genimage_build_info{{service="{name}"' in metrics.text, name


def test_me_shows_user_and_credits(api: httpx.Client) -> None:
    user = signup(api)
    me = api.get("/v1/me", headers=user.auth).json()
    assert me["user"]["email"] == user.email and me["user"]["role"] == "user"
    assert me["credits"] == {"available": 20, "reserved": 0}
