"""Identity: JWT attacks, rotating refresh tokens, API keys, OIDC, roles and admin routes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.settings import DEV_JWT_SECRET
from tests.api import TestUser, assert_problem, signup
from tests.gateway.conftest import OIDC_AUDIENCE
from tests.gateway.servers import JwksServer, new_rsa_key
from tests.polling import eventually


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(user_id: str, **overrides: object) -> dict:
    now = datetime.now(UTC)
    base = {"sub": user_id, "role": "user", "iss": "genimage", "iat": now, "exp": now + timedelta(minutes=5)}
    return base | overrides


def _me(api: httpx.Client, token: str) -> httpx.Response:
    return api.get("/v1/api-keys", headers={"Authorization": f"Bearer {token}"})


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the HS512 forgery
def test_forged_tokens_are_refused(api: httpx.Client, stack_env: dict[str, str]) -> None:
    user = signup(api, wait_for_credits=None)
    secret = stack_env.get("GATEWAY_JWT_SECRET", DEV_JWT_SECRET)
    assert _me(api, user.token).status_code == 200

    head, body, sig = user.token.split(".")
    tampered_body = _b64(json.loads(base64.urlsafe_b64decode(body + "==")) | {"role": "admin"})
    forged = {
        "tampered payload": f"{head}.{tampered_body}.{sig}",
        "tampered signature": f"{head}.{body}.{sig[:-4]}AAAA",
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{body}.",
        "alg none, empty sig": _b64({"alg": "none", "typ": "JWT"}) + "." + body,
        "expired": jwt.encode(_claims(user.id, exp=datetime.now(UTC) - timedelta(seconds=5)), secret, "HS256"),
        "other secret": jwt.encode(_claims(user.id), "another-secret-of-at-least-32-bytes!!", "HS256"),
        "other issuer": jwt.encode(_claims(user.id, iss="someone-else"), secret, "HS256"),
        "no exp": jwt.encode({k: v for k, v in _claims(user.id).items() if k != "exp"}, secret, "HS256"),
        "sub not a uuid": jwt.encode(_claims("admin"), secret, "HS256"),
        "unknown user": jwt.encode(_claims(str(uuid.uuid4())), secret, "HS256"),
        "HS512": jwt.encode(_claims(user.id), secret, "HS512"),
        "garbage": "not.a.jwt",
    }
    for what, token in forged.items():
        r = _me(api, token)
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer", what
    # A correctly signed token of ours is accepted (the cases above fail for their flaw only).
    assert _me(api, jwt.encode(_claims(user.id), secret, "HS256")).status_code == 200
    assert_problem(api.get("/v1/me", headers={"Authorization": f"Basic {user.token}"}), 401, "unauthorized")


def test_refresh_rotates_and_reuse_revokes_the_family(api: httpx.Client) -> None:
    user = signup(api, wait_for_credits=None)
    login = api.post("/v1/auth/login", json={"email": user.email, "password": "correct horse battery"})
    assert login.status_code == 200
    first = login.json()["refresh_token"]

    r = api.post("/v1/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 200
    second = r.json()["refresh_token"]
    assert second != first and _me(api, r.json()["access_token"]).status_code == 200

    # The spent token again: reuse → refused and the whole family is revoked.
    reuse = assert_problem(api.post("/v1/auth/refresh", json={"refresh_token": first}), 401, "unauthorized")
    assert reuse["reuse_detected"] is True
    assert_problem(api.post("/v1/auth/refresh", json={"refresh_token": second}), 401, "unauthorized")

    # Another login (another family) is untouched; logout revokes it.
    other = api.post("/v1/auth/login", json={"email": user.email, "password": "correct horse battery"}).json()
    assert api.post("/v1/auth/logout", json={"refresh_token": other["refresh_token"]}).status_code == 204
    r = api.post("/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
    assert_problem(r, 401, "unauthorized")
    assert_problem(
        api.post("/v1/auth/login", json={"email": user.email, "password": "wrong password!"}), 401, "unauthorized"
    )


def test_api_keys_are_shown_once_and_revocable(api: httpx.Client) -> None:
    user = signup(api, wait_for_credits=None)
    r = api.post("/v1/api-keys", headers=user.auth, json={"name": "ci"})
    assert r.status_code == 201
    created = r.json()
    key = created["key"]
    assert key.startswith("gi_") and created["prefix"] == key[:10]

    listed = api.get("/v1/api-keys", headers=user.auth).json()["items"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]

    with_key = {"Authorization": f"Bearer {key}"}
    me = api.get("/v1/me", headers=with_key)
    assert me.status_code == 200 and me.json()["user"]["id"] == user.id
    assert api.get("/v1/api-keys", headers=user.auth).json()["items"][0]["last_used_at"] is not None

    assert api.delete(f"/v1/api-keys/{created['id']}", headers=user.auth).status_code == 204
    assert_problem(api.get("/v1/me", headers=with_key), 401, "unauthorized")
    assert_problem(api.delete(f"/v1/api-keys/{created['id']}", headers=user.auth), 404, "not_found")
    assert api.get("/v1/api-keys", headers=user.auth).json()["items"] == []
    assert_problem(api.get("/v1/me", headers={"Authorization": "Bearer gi_made-up-key"}), 401, "unauthorized")


def test_admin_grants_credits_once_per_key(api: httpx.Client, admin: TestUser) -> None:
    user = signup(api)
    path = f"/v1/admin/users/{user.id}/credits"
    assert_problem(api.post(path, headers=user.auth, json={"amount": 50}), 403, "forbidden")

    key = {"Idempotency-Key": f"grant-{uuid.uuid4()}"}
    first = api.post(path, headers=admin.auth | key, json={"amount": 50})
    assert first.status_code == 200, first.text
    assert first.json()["available"] == 70
    again = api.post(path, headers=admin.auth | key, json={"amount": 50})
    assert again.status_code == 200 and again.json() == first.json()
    assert_problem(api.post(path, headers=admin.auth | key, json={"amount": 60}), 409, "conflict")
    assert api.get("/v1/credits", headers=user.auth).json() == {"available": 70, "reserved": 0}
    entries = api.get("/v1/credits/ledger", headers=user.auth).json()["items"]
    assert [e["type"] for e in entries].count("grant") == 2

    r = api.post(f"/v1/admin/users/{uuid.uuid4()}/credits", headers=admin.auth, json={"amount": 1})
    assert_problem(r, 404, "not_found")
    assert_problem(api.post(path, headers=admin.auth, json={"amount": 0}), 422, "validation_error")


def test_login_attempts_are_limited_per_email(strict: list[httpx.Client]) -> None:
    gateway = strict[0]
    user = signup(gateway, wait_for_credits=None)
    for _ in range(3):  # GATEWAY_RATE_LIMIT_LOGIN=3
        r = gateway.post("/v1/auth/login", json={"email": user.email, "password": "not the password"})
        assert_problem(r, 401, "unauthorized")
    # Now even the right password waits: guessing stops here, on every replica.
    r = strict[1].post("/v1/auth/login", json={"email": user.email, "password": "correct horse battery"})
    problem = assert_problem(r, 429, "rate_limited")
    assert problem["policy"] == "login" and int(r.headers["retry-after"]) >= 1


class TestOidc:
    def test_first_sight_creates_the_user_and_grants_signup_credits(
        self, strict: list[httpx.Client], jwks: JwksServer
    ) -> None:
        email = f"oidc-{uuid.uuid4().hex[:10]}@example.com"
        sub = f"user_{uuid.uuid4().hex}"
        token = jwks.token(sub=sub, email=email, audience=OIDC_AUDIENCE)
        auth = {"Authorization": f"Bearer {token}"}
        r = strict[0].get("/v1/me", headers=auth)
        assert r.status_code == 200, r.text
        me = r.json()["user"]
        assert me["email"] == email and me["role"] == "user"
        # Same subject, other replica, new token: the same user.
        again = strict[1].get("/v1/me", headers={"Authorization": f"Bearer {jwks.token(sub=sub)}"})
        assert again.json()["user"]["id"] == me["id"]
        eventually(
            lambda: strict[0].get("/v1/credits", headers=auth).json().get("available") == 20,
            what="signup credits for the OIDC user",
        )

    def test_unverified_email_gets_a_placeholder(self, strict: list[httpx.Client], jwks: JwksServer) -> None:
        token = jwks.token(email="victim@example.com", email_verified=False)
        r = strict[0].get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert r.json()["user"]["email"].endswith("@oidc.invalid")

    def test_bad_tokens_are_refused(self, strict: list[httpx.Client], jwks: JwksServer) -> None:
        public_pem = jwks.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        tokens = {
            "wrong audience": jwks.token(audience="someone-else"),
            "expired": jwks.token(expires_in=-120),
            "other key, same kid": jwks.token(key=new_rsa_key()),
            "unknown kid": jwks.token(kid="nope"),
            "other issuer": jwks.token(issuer="http://127.0.0.1:9/evil"),
        }
        # Algorithm confusion: HMAC keyed with the issuer's public key.
        header = _b64({"alg": "HS256", "typ": "JWT", "kid": jwks.kid})
        payload = _b64(
            {
                "iss": jwks.issuer,
                "sub": "x",
                "aud": OIDC_AUDIENCE,
                "exp": int((datetime.now(UTC) + timedelta(minutes=5)).timestamp()),
            }
        )
        mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        tokens["HS256 with the public key"] = f"{header}.{payload}.{signature}"
        tokens["alg none"] = f"{_b64({'alg': 'none', 'kid': jwks.kid})}.{payload}."
        for what, token in tokens.items():
            r = strict[0].get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, (what, r.text)
        assert strict[0].get("/v1/me", headers={"Authorization": f"Bearer {jwks.token()}"}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/me", "/v1/api-keys", "/v1/webhooks/secret", "/v1/credits"])
def test_every_private_route_wants_a_credential(api: httpx.Client, path: str) -> None:
    assert_problem(api.get(path), 401, "unauthorized")
