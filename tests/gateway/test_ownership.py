"""User B against every gateway route that takes user A's ids: 404 (never 403, never data)."""

from __future__ import annotations

import io

import httpx
from PIL import Image

from tests.api import assert_problem, signup, wait_terminal
from tests.gateway.flows import SMALL, generate


def test_another_users_ids_are_not_found(api: httpx.Client) -> None:
    a = signup(api)
    b = signup(api)
    generation = generate(api, a, prompt="a's picture")
    wait_terminal(api, a, generation["id"])
    key = api.post("/v1/api-keys", headers=a.auth, json={"name": "a's key"}).json()
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    upload = api.post("/v1/uploads", headers=a.auth, files={"file": ("a.png", png.getvalue(), "image/png")}).json()
    gid = generation["id"]

    for method, path in [
        ("GET", f"/v1/generations/{gid}"),
        ("POST", f"/v1/generations/{gid}/cancel"),
        ("GET", f"/v1/generations/{gid}/events"),
        ("GET", f"/v1/generations/{gid}/webhooks"),
        ("DELETE", f"/v1/api-keys/{key['id']}"),
    ]:
        r = api.request(method, path, headers=b.auth)
        problem = assert_problem(r, 404, "not_found")
        assert problem.pop("instance") == path
        assert gid not in str(problem) and key["id"] not in str(problem)

    # A's resources are untouched by B's attempts.
    assert api.get("/v1/me", headers={"Authorization": f"Bearer {key['key']}"}).status_code == 200
    assert api.get(f"/v1/generations/{gid}", headers=a.auth).json()["status"] == "succeeded"
    # B cannot use A's upload as an input (nor learn that it exists).
    r = api.post("/v1/generations", headers=b.auth, json={"prompt": "x", **SMALL, "input_image_ids": [upload["id"]]})
    assert_problem(r, 422, "validation_error")
    # B sees nothing of A in lists.
    assert api.get("/v1/generations", headers=b.auth).json()["items"] == []
    assert api.get("/v1/api-keys", headers=b.auth).json()["items"] == []
    # Admin routes are not for users.
    assert_problem(api.post(f"/v1/admin/users/{a.id}/credits", headers=b.auth, json={"amount": 5}), 403, "forbidden")
