"""Who may read the portal: the token rules (cookie from ``?token=``, bearer
header), the loopback ``Host`` check that stops DNS rebinding, and ``serve``
refusing, before anything listens, to expose a store without a token."""

from __future__ import annotations

from typing import Any

import pytest

from steptrace.portal import serve
from steptrace.portal._security import COOKIE_NAME, Guard, is_loopback
from steptrace.store import SQLiteStore

from .conftest import Demo, call, portal

TOKEN = "s3cret-token"


@pytest.fixture
def guarded(demo_store: SQLiteStore) -> Any:
    with portal(demo_store, token=TOKEN) as app:
        yield app


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "127.0.0.1"])
def test_no_token_on_loopback_works(app: Any, host: str) -> None:
    assert call(app, "GET", "/api/runs", host=host).status == 200
    assert call(app, "GET", "/", host=host).status == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:8765",
        "evil.example",
        "192.168.1.5:8765",
        "127.0.0.1.evil.example",
        "",
        # Text after the bracketed address that is not a port: another name.
        "[::1]evil.example",
        "[::1].evil.example:8765",
        "[::1]:8765evil.example",
        "127.0.0.1:80evil.example",
    ],
)
def test_a_host_that_is_not_loopback_is_refused(app: Any, host: str) -> None:
    # A page on another site that rebinds its name to 127.0.0.1 sends its own Host.
    api = call(app, "GET", "/api/runs", host=host)
    assert api.status == 403
    assert api.json()["error"] == "forbidden"
    assert "answers only to a loopback address" in api.json()["message"]
    page = call(app, "GET", "/", host=host)
    assert page.status == 403
    assert page.body.startswith(b"403 this portal answers only to a loopback address")


def test_with_a_token_a_request_without_it_is_401(guarded: Any) -> None:
    api = call(guarded, "GET", "/api/runs")
    assert api.status == 401
    assert api.json()["error"] == "unauthorized"
    assert "needs its token" in api.json()["message"]
    page = call(guarded, "GET", "/")
    assert page.status == 401
    assert page.headers["content-type"].startswith("text/plain")
    assert call(guarded, "GET", "/static/app.js").status == 401


def test_the_token_in_the_address_sets_the_cookie_and_redirects(guarded: Any, demo: Demo) -> None:
    response = call(guarded, "GET", f"/runs/{demo.run_id}?token={TOKEN}&x=1")
    assert response.status == 303
    assert response.headers["location"] == f"/runs/{demo.run_id}?x=1"  # the token is dropped
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert TOKEN not in cookie  # an HMAC of it, not the token
    value = cookie.split(";", 1)[0]
    assert call(guarded, "GET", "/api/runs", {"Cookie": value}).status == 200
    assert call(guarded, "GET", "/", {"Cookie": f"other=1; {value}"}).status == 200
    bare = call(guarded, "GET", f"/?token={TOKEN}")
    assert bare.headers["location"] == "/"


@pytest.mark.parametrize(
    ("target", "location"),
    [
        (f"//evil.example/x?token={TOKEN}", "/evil.example/x"),  # no open redirect
        (f"/runs/a%0d%0aSet-Cookie:%20x=1?token={TOKEN}", "/runs/a%0D%0ASet-Cookie:%20x=1"),
        (f"/runs/a%20b?token={TOKEN}&q=%C3%A9", "/runs/a%20b?q=%C3%A9"),
    ],
)
def test_the_redirect_stays_on_the_portal(guarded: Any, target: str, location: str) -> None:
    response = call(guarded, "GET", target)
    assert response.status == 303
    assert response.headers["location"] == location


def test_the_bearer_header_works(guarded: Any) -> None:
    ok = call(guarded, "GET", "/api/runs", {"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200
    assert ok.json()["total"] == 3
    assert call(guarded, "GET", "/api/runs", {"Authorization": f"bearer {TOKEN}"}).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer "},
        {"Cookie": f"{COOKIE_NAME}={TOKEN}"},  # the raw token is not the cookie
        {"Cookie": f"{COOKIE_NAME}={Guard.cookie_value('wrong')}"},
        {"Cookie": 'bad"cookie; ;;'},
    ],
)
def test_a_wrong_token_is_refused(guarded: Any, headers: dict[str, str]) -> None:
    assert call(guarded, "GET", "/api/runs", headers).status == 401


def test_a_wrong_token_in_the_address_sets_no_cookie(guarded: Any) -> None:
    response = call(guarded, "GET", "/?token=wrong")
    assert response.status == 401
    assert "set-cookie" not in response.headers
    assert "wrong" in response.body.decode()


def test_with_a_token_any_host_may_ask(guarded: Any) -> None:
    # Served on another address on purpose: the token, not the Host, decides.
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert call(guarded, "GET", "/api/runs", headers, host="portal.lan:8765").status == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "portal.lan"])
def test_serve_refuses_another_address_without_a_token(demo: Demo, host: str) -> None:
    with pytest.raises(ValueError, match=f"refusing to serve the portal on {host}, which is not"):
        serve(str(demo.path), host=host, port=0)


def test_serve_refuses_a_blank_token_and_a_missing_store(tmp_path: Any, demo: Demo) -> None:
    with pytest.raises(ValueError, match="must not be empty or blank"):
        serve(str(demo.path), host="0.0.0.0", port=0, token="  ")
    with pytest.raises(ValueError, match="port must be from 0 to 65535, got 70000"):
        serve(str(demo.path), port=70000)
    missing = tmp_path / "none.db"
    with pytest.raises(FileNotFoundError, match=f"no run store at {missing}"):
        serve(str(missing), port=0)
    assert not missing.exists()  # no empty store made on the way


def test_loopback_names() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "localhost.evil", ""]))


@pytest.mark.parametrize(
    "span", ["99999999999999999999999999", str(2**63), "-1", "1e3", "x" * 1000]
)
def test_a_span_id_no_store_can_hold_is_a_400(app: Any, demo: Demo, span: str) -> None:
    # Past 2**63 - 1 the store's integer column overflows: a client error, not a 500.
    response = call(app, "GET", f"/api/runs/{demo.run_id}/spans/{span}/children")
    assert response.status == 400, response.body
    assert response.json()["error"] == "bad_parameter"
    assert "span id must be an integer from 0 to" in response.json()["message"]
    assert len(response.json()["message"]) < 200  # the raw value is not echoed whole
