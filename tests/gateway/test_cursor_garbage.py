"""Every cursor and id the API parses answers garbage with a fast 422 ``validation_error`` —
never a 500 (an unguarded ``int()``) nor a 503 after the RPC timeout (a peer that crashed on
the value and never replied). Through the public API, and straight at the parsers."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genimage_common.errors import ValidationFailed
from tests.api import TestUser, assert_problem

pytestmark = pytest.mark.timeout(300)


def _b64(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


UID = str(uuid.uuid4())
NASTY = [
    "",
    "²",
    "²-0-0",
    "0-0-²",
    "\u0661\u0662\u0663",  # Arabic-Indic digits: str.isdigit() says yes, int() of a SQL bind says no
    "\U0001d7d7\U0001d7d7",  # mathematical bold nines
    "\u216b",  # Roman numeral twelve
    "99999999999999999999999999",
    "9223372036854775808",  # one past BIGINT
    "-1",
    "-1-0-0",
    "0x10",
    "1e3",
    " 1",
    "1\x00",
    "NaN",
    "💥",
    "AAAA",
    "////",
    "W10",  # base64 of []
    _b64(["x", "y"]),
    _b64([1e308, UID]),
    _b64(["0001-01-01T00:00:00+14:00", UID]),  # before year 1 once in UTC
    _b64(["9999-12-31T23:59:59-14:00", UID]),  # after year 9999 once in UTC
    _b64(["rank", "NaN", "2026-01-01T00:00:00Z", UID]),
    _b64(["rank", 1e400, "2026-01-01T00:00:00Z", UID]),
    _b64({"a": 1}),
    _b64(b"\xff\xfe\x00garbage"),
    _b64("[" * 140),
    "x" * 200,
]

LISTS = [
    "/v1/generations",
    "/v1/images",
    "/v1/images?q=fox",
    "/v1/boards",
    "/v1/feed",
    "/v1/credits/ledger",
]


def _get(
    api: httpx.Client, path: str, user: TestUser, *, headers: dict[str, str | bytes] | None = None, **kw: object
) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    r = api.get(path, headers={**user.auth, **(headers or {})}, **kw)  # type: ignore[arg-type]
    return r, time.monotonic() - start


@pytest.mark.parametrize("path", LISTS)
def test_list_cursors(api: httpx.Client, user: TestUser, path: str) -> None:
    for value in NASTY:
        r, took = _get(api, path.split("?")[0], user, params={**dict(httpx.URL(path).params), "cursor": value})
        body = assert_problem(r, 422, "validation_error")
        assert took < 2.0, (value, took)
        assert body["instance"] == path.split("?")[0]


def test_a_real_cursor_still_pages(api: httpx.Client, user: TestUser) -> None:
    first = api.get("/v1/credits/ledger", headers=user.auth, params={"limit": 1}).json()
    assert first["items"], first  # the signup grant
    board_a = api.post("/v1/boards", headers=user.auth, json={"name": "a"}).json()
    board_b = api.post("/v1/boards", headers=user.auth, json={"name": "b"}).json()
    page = api.get("/v1/boards", headers=user.auth, params={"limit": 1}).json()
    assert page["items"][0]["id"] == board_b["id"] and page["next_cursor"]
    page2 = api.get("/v1/boards", headers=user.auth, params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert page2["items"][0]["id"] == board_a["id"]


LAST_EVENT_IDS = [
    "²-0-0",
    "0-²-0",
    "\u0661-\u0662-\u0663",
    "99999999999999999999-0-0",
    "-1-0-0",
    "1-2",
    "1-2-3-4",
    "a-b-c",
    "💥",
    "0 -0-0",
]


def _header(value: str) -> bytes:
    """As a browser would send it: Latin-1 when it can (the server reads headers as Latin-1,
    so "²" arrives as "²"), UTF-8 bytes otherwise."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


@pytest.mark.parametrize("value", LAST_EVENT_IDS)
def test_last_event_id_of_the_user_feed(api: httpx.Client, user: TestUser, value: str) -> None:
    r, took = _get(api, "/v1/events", user, headers={"Last-Event-ID": _header(value)})
    assert_problem(r, 422, "validation_error")
    assert took < 2.0


@pytest.mark.parametrize("value", ["²", "\u0661\u0662", "99999999999999999999", "-1", "1-2"])
def test_last_event_id_of_a_generation_feed(api: httpx.Client, user: TestUser, value: str) -> None:
    r, took = _get(
        api,
        f"/v1/generations/{uuid.uuid4()}/events",
        user,
        headers={"Last-Event-ID": _header(value)},
    )
    assert_problem(r, 422, "validation_error")
    assert took < 2.0


PATHS_WITH_IDS = [
    ("GET", "/v1/generations/{}"),
    ("POST", "/v1/generations/{}/cancel"),
    ("GET", "/v1/generations/{}/webhooks"),
    ("GET", "/v1/images/{}"),
    ("GET", "/v1/images/{}/content"),
    ("PUT", "/v1/images/{}/favorite"),
    ("DELETE", "/v1/images/{}"),
    ("GET", "/v1/boards/{}"),
    ("DELETE", "/v1/api-keys/{}"),
    ("GET", "/v1/feed/{}/content"),
]


@pytest.mark.parametrize(("method", "template"), PATHS_WITH_IDS)
def test_path_ids(api: httpx.Client, user: TestUser, method: str, template: str) -> None:
    for value in ["²", "\u0661\u0662\u0663", "-1", "99999999999999999999", "not-a-uuid", "💥", UID + "0", "%00"]:
        start = time.monotonic()
        r = api.request(method, template.format(value), headers=user.auth)
        assert_problem(r, 422, "validation_error")
        assert time.monotonic() - start < 2.0


# --- the parsers themselves, against generated garbage (other callers than the gateway) -----

garbage = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=25),
    st.integers().map(str),
    st.binary(max_size=150).map(_b64),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=30),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=8,
    ).map(_b64),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=garbage)
def test_feed_cursor_parser(value: str) -> None:
    from gateway import live

    for parts in (1, 3):
        try:
            seqs = live.parse_cursor(value, parts)
        except ValidationFailed:
            continue
        assert seqs is None or (len(seqs) == parts and all(0 <= s < 2**63 for s in seqs))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=garbage)
def test_gallery_cursor_parser(value: str) -> None:
    from datetime import UTC, datetime

    from gallery import cursors

    for decode in (cursors.decode, cursors.decode_ranked):
        try:
            parsed = decode(value)
        except ValidationFailed:
            continue
        # What a cursor yields must bind as SQL parameters: aware times PostgreSQL can hold.
        at = parsed[-2]
        assert isinstance(at, datetime) and at.tzinfo is not None
        assert datetime(1, 1, 2, tzinfo=UTC) <= at <= datetime(9999, 12, 30, tzinfo=UTC)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=garbage)
def test_billing_ledger_cursor_parser(value: str) -> None:
    from pydantic import ValidationError

    from genimage_common.contracts.billing import LedgerRequest

    try:
        req = LedgerRequest(user_id=uuid.uuid4(), cursor=value)
    except ValidationError:
        return
    assert req.cursor is not None and req.cursor.isascii() and 0 <= int(req.cursor) < 2**63
