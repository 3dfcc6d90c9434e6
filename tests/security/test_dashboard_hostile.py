"""Issue 17's dashboard (``/dashboard``: static app, sign-in sessions) and ``/v1/stats`` APIs
against a hostile client that has only network access, over a real ``mlgate serve``.

- Sign-in: the ``X-Mlgate-Dashboard: 1`` header is required; the cookie is HttpOnly,
  SameSite=Strict, Path=/, Max-Age the session life, Secure only over https (a trusted proxy's
  ``X-Forwarded-Proto``); the server chooses its value (no fixation); junk bodies are 4xx.
- The cookie counts only on read-only ``GET /v1/...`` calls marked with the header: never on
  writes (CSRF), never on predict routes, never over another credential. Forged, empty, huge or
  non-ASCII values are 401/431. A session ends with its key (disabled, rotated, owner disabled),
  its user (disabled) and logout.
- Failed sign-ins are throttled per client and per username (429 + Retry-After).
- Static files: nothing outside the shipped set (traversal, encodings, NUL, long paths), no
  listings, CSP + nosniff on every answer, the right types and caching.
- ``/v1/stats``: admin-only endpoints refuse everyone else; ``/v1/stats/keys`` shows a user
  only their own keys and subject, an ownerless key only itself; bad windows 400, unknown models
  404; nothing a client types (model names, paths, keys) becomes a stats row; a throttled count
  cannot be pinned on someone else's key by sending its id with a wrong secret.

Client addresses are told with ``X-Forwarded-For`` (the loopback peer is a trusted proxy by
default), so each check has its own login-throttle buckets. Waits poll with deadlines.
The review's five findings (a 500 on a non-string key, a crafted username locking an address
out of key sign-in, a non-bearer Authorization header not disqualifying the cookie, 405s
without the CSP and HEAD refused, unbounded sessions per caller) are fixed and asserted here.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import ADMIN, admin, create_key, create_plan, create_user_token, start_server
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.e2e]

DASH = {"x-mlgate-dashboard": "1"}
LOGIN = "/dashboard/api/login"
PASSWORD = "una clave bastante larga"
SESSION_LIFE_S = 8 * 3600
_addresses = count(1)


def _addr() -> str:
    """A fresh client address (its own login-throttle bucket)."""
    n = next(_addresses)
    return f"10.77.{n // 250}.{n % 250 + 1}"


def _cookie(value: str) -> dict[str, str]:
    return {"cookie": f"mlgate_session={value}"}


def _raw_cookie(value: str) -> dict[bytes, bytes]:
    """The dashboard header and a session cookie of any (latin-1) value."""
    return {b"x-mlgate-dashboard": b"1", b"cookie": f"mlgate_session={value}".encode("latin-1")}


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error", body.get("message", body.get("detail")))
    if isinstance(error, dict):
        return str(error.get("message", ""))
    return str(error or "")


def _clean(r: httpx.Response, server: ServerProcess) -> None:
    text = r.text
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    assert str(server.data_dir) not in text and "/site-packages/" not in text, text[:500]
    assert "/work/" not in text and "/tmp/" not in text, text[:500]


def _clear_4xx(r: httpx.Response, server: ServerProcess, *what: Any) -> None:
    assert 400 <= r.status_code < 500, (*what, r.status_code, r.text[:400])
    message = _message(r)
    assert message and message != "internal server error", (*what, r.text[:400])
    _clean(r, server)


def _secure_headers(r: httpx.Response, *what: Any) -> None:
    csp = r.headers.get("content-security-policy", "")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, (*what, dict(r.headers))
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert r.headers.get("x-content-type-options") == "nosniff", (*what, dict(r.headers))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("dashboard-hostile")
    with start_server(tmp / "data", env={"MLGATE_STATS__FLUSH_S": "0.5"}) as s:
        yield s


@pytest.fixture
def a(server: ServerProcess) -> Iterator[httpx.Client]:
    with admin(server) as c:
        yield c


@pytest.fixture
def c(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


def _login(c: httpx.Client, body: Any, *, address: str | None = None, **headers: str) -> httpx.Response:
    return c.post(LOGIN, json=body, headers={**DASH, "x-forwarded-for": address or _addr(), **headers})


def _session(c: httpx.Client, body: Any) -> str:
    r = _login(c, body)
    assert r.status_code == 200, r.text
    value = r.cookies.get("mlgate_session")
    assert value, r.headers
    return value


def _user(c: httpx.Client) -> tuple[str, str]:
    name = f"u{uuid.uuid4().hex[:8]}"
    return name, create_user_token(c, name, PASSWORD)


def _wait_for(probe: Callable[[], Any], ok: Callable[[Any], bool], what: str, timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if ok(value):
            return value
        assert time.monotonic() < deadline, (what, value)
        time.sleep(0.2)


# -- (a) sign-in ------------------------------------------------------------------------------------


def test_dashboard_api_calls_need_the_dashboard_header(server: ServerProcess, c: httpx.Client) -> None:
    for method, path, body in (
        ("POST", LOGIN, {"api_key": server.api_key}),
        ("POST", "/dashboard/api/logout", None),
        ("GET", "/dashboard/api/me", None),
    ):
        for headers in ({}, {"x-mlgate-dashboard": "0"}, {"x-mlgate-dashboard": "true"}):
            r = c.request(method, path, json=body, headers={"x-forwarded-for": _addr(), **headers})
            assert r.status_code == 403, (method, path, headers, r.status_code, r.text)
            assert "set-cookie" not in r.headers, (path, r.headers)
            _clear_4xx(r, server, path)
            _secure_headers(r, path)


def test_the_cookie_is_httponly_strict_and_secure_only_over_https(
    server: ServerProcess, c: httpx.Client
) -> None:
    r = _login(c, {"api_key": server.api_key})
    assert r.status_code == 200, r.text
    attrs = [p.strip() for p in r.headers["set-cookie"].split(";")]
    assert attrs[0].startswith("mlgate_session=") and len(attrs[0]) > len("mlgate_session=") + 30, attrs
    assert {"HttpOnly", "SameSite=Strict", "Path=/", f"Max-Age={SESSION_LIFE_S}"} <= set(attrs), attrs
    assert "Secure" not in attrs, attrs  # plain http from the client
    assert r.headers.get("cache-control") == "no-store", r.headers
    _secure_headers(r, "login")
    # behind a trusted proxy that terminated TLS
    r = _login(c, {"api_key": server.api_key}, **{"x-forwarded-proto": "https"})
    assert r.status_code == 200, r.text
    assert "Secure" in [p.strip() for p in r.headers["set-cookie"].split(";")], r.headers["set-cookie"]
    # logout clears it with the same attributes
    value = r.cookies["mlgate_session"]
    out = c.post("/dashboard/api/logout", headers={**DASH, **_cookie(value)})
    assert out.status_code == 200 and out.json() == {"signed_out": True}, out.text
    cleared = [p.strip() for p in out.headers["set-cookie"].split(";")]
    assert cleared[0] == "mlgate_session=" and "Max-Age=0" in cleared and "HttpOnly" in cleared, cleared


def test_a_client_cannot_choose_its_session_value(server: ServerProcess, c: httpx.Client) -> None:
    chosen = "chosen-by-the-attacker-" + "x" * 20
    r = _login(c, {"api_key": server.api_key}, cookie=f"mlgate_session={chosen}")
    assert r.status_code == 200, r.text
    issued = r.cookies["mlgate_session"]
    assert issued != chosen
    assert c.get("/v1/stats/keys", headers={**DASH, **_cookie(chosen)}).status_code == 401
    assert c.get("/v1/stats/keys", headers={**DASH, **_cookie(issued)}).status_code == 200
    me = c.get("/dashboard/api/me", headers={**DASH, **_cookie(chosen)})
    assert me.status_code == 200 and me.json() == {"signed_in": False}, me.text


JUNK_LOGINS: list[Any] = [
    [],
    [1, 2],
    "text",
    42,
    None,
    {},
    {"api_key": ""},
    {"api_key": None},
    {"api_key": 5},
    {"api_key": ["mlg_x"]},
    {"api_key": {"k": "v"}},
    {"username": "bob"},
    {"password": "x"},
    {"username": 5, "password": "x"},
    {"username": "bob", "password": 5},
    {"username": ["bob"], "password": ["x"]},
    {"username": "", "password": ""},
    {"username": "b" * 5000, "password": "x"},
    {"api_key": "mlg_" + "k" * 5000},
    {"api_key": "mlg_\u00e9\u4e2d"},
    {"username": "bob\u0000", "password": "x"},
]


def test_junk_login_bodies_are_clear_4xx(server: ServerProcess, c: httpx.Client) -> None:
    for body in JUNK_LOGINS:
        r = _login(c, body)
        _clear_4xx(r, server, body)
        assert "set-cookie" not in r.headers, body
        _secure_headers(r, body)
    raw = [b"", b"{", b"[" * 100_000 + b"]" * 100_000, b'{"api_key": "\\ud800"}', b"\xff\xfe", b"null"]
    for content in raw:
        r = c.post(
            LOGIN,
            content=content,
            headers={**DASH, "x-forwarded-for": _addr(), "content-type": "application/json"},
        )
        _clear_4xx(r, server, content[:20])


@pytest.mark.parametrize("api_key", [5, True, 1.5])
def test_a_non_string_api_key_with_a_username_is_a_4xx_not_a_500(
    server: ServerProcess, c: httpx.Client, api_key: Any
) -> None:
    r = _login(c, {"api_key": api_key, "username": "bob", "password": "x"})
    _clear_4xx(r, server, api_key)


def test_failed_sign_ins_are_throttled_per_client_and_per_username(
    server: ServerProcess, c: httpx.Client
) -> None:
    guesser = _addr()
    statuses = [
        _login(c, {"api_key": "mlg_guess_" + "g" * 40}, address=guesser).status_code for _ in range(12)
    ]
    assert statuses == [401] * 10 + [429] * 2, statuses
    r = _login(c, {"api_key": "mlg_guess_" + "g" * 40}, address=guesser)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, (r.status_code, r.headers)
    _clear_4xx(r, server, "throttled")
    # one username guessed from twelve addresses: throttled from anywhere
    victim = f"t{uuid.uuid4().hex[:8]}"
    statuses = [_login(c, {"username": victim, "password": f"guess{i}"}).status_code for i in range(12)]
    assert statuses == [401] * 10 + [429] * 2, statuses
    # the /auth/token login shares the budget
    r = c.post(
        "/auth/token", data={"username": victim, "password": "x"}, headers={"x-forwarded-for": _addr()}
    )
    assert r.status_code == 429, r.text


def test_password_guesses_on_a_crafted_username_do_not_lock_out_a_clients_key_sign_in(
    server: ServerProcess, c: httpx.Client
) -> None:
    victim = _addr()
    for _ in range(12):  # from attacker addresses, each well within its own client budget
        _login(c, {"username": f"api-key@{victim}", "password": "wrong"})
    r = _login(c, {"api_key": server.api_key}, address=victim)
    assert r.status_code == 200, (r.status_code, r.headers.get("retry-after"), r.text)


# -- (b) the cookie as a credential ---------------------------------------------------------------


def test_the_cookie_is_no_credential_without_the_header_or_on_writes(
    server: ServerProcess, c: httpx.Client, a: httpx.Client
) -> None:
    session = _session(c, {"api_key": ADMIN["x-api-key"]})
    keys_before = len(a.get("/v1/keys").json()["keys"])
    plans_before = a.get("/v1/plans").json()
    assert c.get("/v1/keys", headers={**DASH, **_cookie(session)}).status_code == 200  # the allowed read
    # without the header: no credential
    for path in ("/v1/keys", "/v1/stats/models", "/v1/stats/keys", "/v1/users"):
        r = c.get(path, headers=_cookie(session))
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
        _clear_4xx(r, server, path)
    # writes, with the header (what a CSRF would need) — and a predict route (edge-served)
    plan = create_plan(a)
    user_key = create_key(a)
    writes: list[tuple[str, str, Any]] = [
        ("POST", "/v1/keys", {"name": "csrf", "role": "admin"}),
        ("POST", "/v1/plans", {"name": f"csrf{uuid.uuid4().hex[:6]}", "rate": 1, "burst": 1}),
        ("PATCH", f"/v1/plans/{plan}", {"rate": 5}),
        ("DELETE", f"/v1/plans/{plan}", None),
        ("POST", f"/v1/keys/{user_key['id']}/disable", None),
        ("POST", f"/v1/keys/{user_key['id']}/rotate", None),
        ("DELETE", "/v1/models/sleepy", None),
        ("PUT", "/v1/models/sleepy/aliases/production", {"version": 1}),
        ("POST", "/v1/models/sleepy/predict", {"sleep": 0}),
        ("POST", "/v1/models/sleepy/batch", {"inputs": [{"sleep": 0}]}),
        (
            "POST",
            "/auth/create_user",
            {"username": f"csrf{uuid.uuid4().hex[:6]}", "password": PASSWORD, "role": "admin"},
        ),
    ]
    for method, path, body in writes:
        for headers in (DASH, {}):
            r = c.request(method, path, json=body, headers={**headers, **_cookie(session)})
            assert r.status_code in (401, 403), (method, path, headers, r.status_code, r.text[:200])
            _clean(r, server)
    assert len(a.get("/v1/keys").json()["keys"]) == keys_before + 1  # only create_key above
    names = {p["name"] for p in a.get("/v1/plans").json()["plans"]}
    assert names == {p["name"] for p in plans_before["plans"]} | {plan}, names
    assert next(k for k in a.get("/v1/keys").json()["keys"] if k["id"] == user_key["id"])["disabled"] is False
    assert a.get("/v1/models/sleepy").status_code == 200


def test_another_credential_wins_over_the_cookie(
    server: ServerProcess, c: httpx.Client, a: httpx.Client
) -> None:
    session = _session(c, {"api_key": ADMIN["x-api-key"]})
    with_cookie = {**DASH, **_cookie(session)}
    assert c.get("/v1/stats/models", headers=with_cookie).status_code == 200
    # a user's key next to an admin's cookie: the key decides (403), the cookie adds nothing
    r = c.get("/v1/stats/models", headers={**with_cookie, "x-api-key": server.api_key})
    assert r.status_code == 403, r.text
    r = c.get("/v1/stats/models", headers={**with_cookie, "x-api-key": "mlg_forged_" + "x" * 40})
    assert r.status_code in (401, 403), r.text
    r = c.get("/v1/stats/models", headers={**with_cookie, "authorization": "Bearer junk"})
    assert r.status_code == 401, r.text
    _, token = _user(c)
    r = c.get("/v1/stats/models", headers={**with_cookie, "authorization": f"Bearer {token}"})
    assert r.status_code == 403, r.text
    # model metadata (the gateway's authenticate): a key for another caller decides there too
    r = c.get("/v1/models/sleepy", headers={**with_cookie, "x-api-key": "mlg_forged_" + "x" * 40})
    assert r.status_code in (401, 403), r.text


def test_a_non_bearer_authorization_header_also_disqualifies_the_cookie(
    server: ServerProcess, c: httpx.Client
) -> None:
    session = _session(c, {"api_key": ADMIN["x-api-key"]})
    for auth in ("Basic YWRtaW46YWRtaW4=", "Bearer", "Digest x"):
        r = c.get("/v1/stats/models", headers={**DASH, **_cookie(session), "authorization": auth})
        assert r.status_code == 401, (auth, r.status_code, r.text[:200])


def test_forged_cookie_values_are_refused_cleanly(server: ServerProcess, c: httpx.Client) -> None:
    values = [
        "x",
        "A" * 43,
        "a" * 128,
        "a" * 129,
        "a" * 4000,
        "\u00e9\u00e9\u00e9",
        "%00%00",
        "'; DROP TABLE x;--",
        "==",
    ]
    for value in values:
        for path in ("/v1/stats/keys", "/v1/keys", "/v1/models/sleepy", "/v1/models"):
            r = c.get(path, headers=_raw_cookie(value))
            assert r.status_code == 401, (value[:20], path, r.status_code, r.text[:200])
            _clear_4xx(r, server, value[:20], path)
        me = c.get("/dashboard/api/me", headers=_raw_cookie(value))
        assert me.status_code == 200 and me.json() == {"signed_in": False}, (value[:20], me.text)
        out = c.post("/dashboard/api/logout", headers=_raw_cookie(value))
        assert out.status_code == 200 and out.json() == {"signed_out": False}, (value[:20], out.text)
    r = c.get("/v1/stats/keys", headers={**DASH, **_cookie("")})
    assert r.status_code == 401, r.text
    r = c.get("/v1/stats/keys", headers={**DASH, **_cookie("a" * 60_000)})
    assert r.status_code == 431, r.status_code


def test_a_session_ends_with_its_key_its_user_and_logout(
    server: ServerProcess, c: httpx.Client, a: httpx.Client
) -> None:
    def works(value: str) -> int:
        return c.get("/v1/stats/keys", headers={**DASH, **_cookie(value)}).status_code

    def me(value: str) -> Any:
        return c.get("/dashboard/api/me", headers={**DASH, **_cookie(value)}).json()

    disabled = create_key(a)
    s1 = _session(c, {"api_key": disabled["key"]})
    assert works(s1) == 200 and me(s1)["signed_in"] is True
    assert a.post(f"/v1/keys/{disabled['id']}/disable").status_code == 200
    assert works(s1) == 401 and me(s1) == {"signed_in": False}
    assert _login(c, {"api_key": disabled["key"]}).status_code == 401

    rotated = create_key(a)
    s2 = _session(c, {"api_key": rotated["key"]})
    assert a.post(f"/v1/keys/{rotated['id']}/rotate").status_code == 201
    assert works(s2) == 401

    name, _ = _user(c)
    owned = create_key(a, owner=name)
    s3 = _session(c, {"api_key": owned["key"]})
    s4 = _session(c, {"username": name, "password": PASSWORD})
    assert works(s3) == 200 and works(s4) == 200
    assert me(s4)["username"] == name and me(s4)["role"] == "user"
    assert a.post(f"/v1/users/{name}/disable").status_code == 200
    assert works(s3) == 401 and works(s4) == 401 and me(s4) == {"signed_in": False}
    r = _login(c, {"username": name, "password": PASSWORD})
    assert r.status_code == 401, r.text
    r = _login(c, {"api_key": owned["key"]})  # a disabled owner's key signs nobody in
    assert r.status_code == 401, r.text
    expired = create_key(a, expires_at="2020-01-01T00:00:00Z")
    r = _login(c, {"api_key": expired["key"]})
    assert r.status_code == 401, r.text

    admin_user = f"adm{uuid.uuid4().hex[:6]}"
    assert (
        a.post(
            "/auth/create_user", json={"username": admin_user, "password": PASSWORD, "role": "admin"}
        ).status_code
        == 201
    )
    s5 = _session(c, {"username": admin_user, "password": PASSWORD})
    assert c.get("/v1/stats/models", headers={**DASH, **_cookie(s5)}).status_code == 200
    out = c.post("/dashboard/api/logout", headers={**DASH, **_cookie(s5)})
    assert out.status_code == 200 and out.json() == {"signed_out": True}
    assert c.get("/v1/stats/models", headers={**DASH, **_cookie(s5)}).status_code == 401
    again = c.post("/dashboard/api/logout", headers={**DASH, **_cookie(s5)})
    assert again.status_code == 200 and again.json() == {"signed_out": False}


# -- (c) static files -----------------------------------------------------------------------------

SHIPPED = {
    "/dashboard": "text/html; charset=utf-8",
    "/dashboard/": "text/html; charset=utf-8",
    "/dashboard/index.html": "text/html; charset=utf-8",
    "/dashboard/app.js": "text/javascript; charset=utf-8",
    "/dashboard/app.css": "text/css; charset=utf-8",
}
TRAVERSAL = [
    "/dashboard/%2e%2e/%2e%2e/etc/passwd",
    "/dashboard/%2e%2e%2fpyproject.toml",
    "/dashboard/..%2f..%2f..%2fsettings.py",
    "/dashboard/..%5c..%5crouter.py",
    "/dashboard/%252e%252e/%252e%252e/etc/passwd",
    "/dashboard//etc/passwd",
    "/dashboard//app.js",
    "/dashboard/app.js%00.html",
    "/dashboard/app.js%00",
    "/dashboard/./app.js/",
    "/dashboard/APP.JS",
    "/dashboard/vendor",
    "/dashboard/vendor/",
    "/dashboard/__init__.py",
    "/dashboard/../dashboard/../routes_dashboard.py",
    "/dashboard/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/dashboard/" + "a" * 6000,
    "/dashboard/api/",
    "/dashboard/api/login",
]


def test_only_the_shipped_files_are_served_with_strict_headers(
    server: ServerProcess, c: httpx.Client
) -> None:
    for path, media in SHIPPED.items():
        r = c.get(path)
        assert r.status_code == 200, (path, r.status_code)
        assert r.headers["content-type"] == media, (path, r.headers["content-type"])
        _secure_headers(r, path)
        assert (
            r.headers.get("referrer-policy") == "no-referrer" and r.headers.get("x-frame-options") == "DENY"
        )
        expected = "no-store" if media.startswith("text/html") else "no-cache"
        assert r.headers.get("cache-control") == expected, (path, r.headers.get("cache-control"))
        assert "set-cookie" not in r.headers
    html = c.get("/dashboard").text
    assert (
        "<script>" not in html and " style=" not in html and "http://" not in html and "https://" not in html
    )
    for path in TRAVERSAL:
        r = httpx.get(server.url + path, timeout=30.0)  # httpx keeps the path as written
        assert r.status_code in (404, 400, 414), (path[:80], r.status_code)
        assert b"root:" not in r.content and b"import " not in r.content and b"[project]" not in r.content
        assert b"<a href" not in r.content  # no directory listing
        if r.status_code == 404 and r.url.path.startswith("/dashboard"):
            _secure_headers(r, path[:80])
        _clean(r, server)


def test_every_dashboard_answer_carries_the_csp_and_head_works(
    server: ServerProcess, c: httpx.Client
) -> None:
    for method in ("HEAD", "OPTIONS", "POST", "PUT", "DELETE"):
        r = c.request(method, "/dashboard/app.js")
        _secure_headers(r, method)
    head = c.head("/dashboard")
    assert head.status_code == 200, head.status_code
    _secure_headers(head, "HEAD")


# -- (d) /v1/stats -----------------------------------------------------------------------------------

ADMIN_STATS = [
    "/v1/stats/models",
    "/v1/stats/models/sleepy",
    "/v1/stats/workflows",
    "/v1/stats/models?window=7d",
]


def test_admin_stats_refuse_everyone_but_an_admin(
    server: ServerProcess, c: httpx.Client, a: httpx.Client
) -> None:
    name, token = _user(c)
    owned = create_key(a, owner=name)
    ownerless = create_key(a)
    user_session = _session(c, {"username": name, "password": PASSWORD})
    key_session = _session(c, {"api_key": ownerless["key"]})
    callers = {
        "user key": {"x-api-key": owned["key"]},
        "ownerless key": {"x-api-key": ownerless["key"]},
        "bearer": {"authorization": f"Bearer {token}"},
        "user session": {**DASH, **_cookie(user_session)},
        "key session": {**DASH, **_cookie(key_session)},
    }
    for path in ADMIN_STATS:
        r = c.get(path)
        assert r.status_code == 401, (path, r.status_code)
        _clear_4xx(r, server, path)
        for who, headers in callers.items():
            r = c.get(path, headers=headers)
            assert r.status_code == 403, (path, who, r.status_code, r.text[:200])
            assert "sleepy" not in r.text and "requests" not in r.text, (path, who)
        assert a.get(path).status_code == 200, path
    assert c.get("/v1/stats/keys").status_code == 401


def test_stats_keys_shows_a_caller_only_its_own_keys(
    server: ServerProcess, c: httpx.Client, a: httpx.Client
) -> None:
    alice, alice_token = _user(c)
    bob, bob_token = _user(c)
    alice_key = create_key(a, owner=alice)
    bob_key = create_key(a, owner=bob)
    loner = create_key(a)
    other = create_key(a)
    for secret in (alice_key["key"], bob_key["key"], loner["key"], other["key"]):
        assert (
            c.post("/v1/models/sleepy/predict", json={"sleep": 0}, headers={"x-api-key": secret}).status_code
            == 200
        )
    assert c.post(
        "/v1/models/sleepy/predict", json={"sleep": 0}, headers={"authorization": f"Bearer {bob_token}"}
    ).status_code in (200, 403)
    everyone = {alice_key["id"], bob_key["id"], loner["id"], other["id"]}
    _wait_for(
        lambda: {k["key_id"] for k in a.get("/v1/stats/keys").json()["keys"]},
        lambda ids: everyone <= ids,
        "usage flushed",
    )
    alice_session = _session(c, {"username": alice, "password": PASSWORD})
    alice_key_session = _session(c, {"api_key": alice_key["key"]})
    loner_session = _session(c, {"api_key": loner["key"]})
    views = {
        "alice key": ({"x-api-key": alice_key["key"]}, {alice_key["id"], f"user:{alice}"}, {alice}),
        "alice bearer": (
            {"authorization": f"Bearer {alice_token}"},
            {alice_key["id"], f"user:{alice}"},
            {alice},
        ),
        "alice session": ({**DASH, **_cookie(alice_session)}, {alice_key["id"], f"user:{alice}"}, {alice}),
        "alice key session": (
            {**DASH, **_cookie(alice_key_session)},
            {alice_key["id"], f"user:{alice}"},
            {alice},
        ),
        "ownerless key": ({"x-api-key": loner["key"]}, {loner["id"]}, {None}),
        "ownerless session": ({**DASH, **_cookie(loner_session)}, {loner["id"]}, {None}),
    }
    for window in ("1h", "24h", "7d"):
        for who, (headers, ids, owners) in views.items():
            r = c.get("/v1/stats/keys", params={"window": window}, headers=headers)
            assert r.status_code == 200, (who, r.text[:200])
            body = r.json()
            assert {k["key_id"] for k in body["keys"]} == ids, (who, window, body["keys"])
            assert {o["owner"] for o in body["owners"]} == owners, (who, window, body["owners"])
            for stranger in (bob, bob_key["id"], other["id"], "e2eadmin", "(other)"):
                if stranger not in ids:
                    assert stranger not in r.text, (who, window, stranger)
            if who.startswith("ownerless"):
                assert body["keys"][0]["totals"]["requests"] == 1, body["keys"]


def test_bad_windows_and_unknown_models_are_clear_4xx(server: ServerProcess, a: httpx.Client) -> None:
    for path in ("/v1/stats/models", "/v1/stats/models/sleepy", "/v1/stats/keys", "/v1/stats/workflows"):
        for window in ("1H", "30d", "0", "-1h", "1h ", "x" * 3000, "\u0661h", "1h\u0000", "24h;drop"):
            r = a.get(path, params={"window": window})
            assert r.status_code == 400, (path, window[:20], r.status_code, r.text[:200])
            _clear_4xx(r, server, path, window[:20])
            assert "1h, 24h or 7d" in _message(r)
        r = a.get(path, params=[("window", "7d"), ("window", "bogus")])
        assert r.status_code in (200, 400), (path, r.status_code)
    for name in (
        "nope",
        "x" * 300,
        "Sleepy",
        "sleepy%00",
        "%2e%2e",
        "sl eepy",
        "\u00e9",
        "sleepy'--",
        "(other)",
    ):
        r = a.get(f"/v1/stats/models/{name}")
        assert r.status_code in (404, 400), (name[:20], r.status_code, r.text[:200])
        _clean(r, server)
        assert r.status_code == 404 or _message(r), r.text


def _db_rows(server: ServerProcess) -> tuple[set[str], set[str], set[str]]:
    con = sqlite3.connect(f"file:{server.data_dir / 'mlgate.db'}?mode=ro", uri=True, timeout=10)
    try:
        models = {r[0] for r in con.execute("select distinct model from stats_traffic")}
        models |= {r[0] for r in con.execute("select distinct model from stats_usage")}
        routes = {r[0] for r in con.execute("select distinct route from stats_traffic")}
        keys = {r[0] for r in con.execute("select distinct key_id from stats_usage")}
    finally:
        con.close()
    return models, routes, keys


def test_nothing_a_client_types_becomes_a_stats_row(
    server: ServerProcess, c: httpx.Client, a: httpx.Client
) -> None:
    key = create_key(a)
    marker = uuid.uuid4().hex[:6]
    junk_keys = [f"mlg_{marker}{i:02d}_" + "z" * 43 for i in range(5)]
    with httpx.Client(base_url=server.url, timeout=30.0, headers={"x-api-key": key["key"]}) as k:
        for i in range(20):
            name = f"n{marker}{i:02d}"
            k.post(f"/v1/models/{name}/predict", json={"sleep": 0})
            k.post(f"/v1/models/{name}/versions/1/predict", json={"sleep": 0})
            k.get(f"/v1/models/{name}")
            k.post(f"/v2/models/{name}/infer", json={})
            k.get(f"/v1/{marker}/{i}/anything")
            k.get(f"/dashboard/{marker}{i}")
            c.post("/v1/models/sleepy/predict", json={"sleep": 0}, headers={"x-api-key": junk_keys[i % 5]})
            c.get("/v1/stats/keys", headers={"x-api-key": junk_keys[i % 5]})
        assert k.post("/v1/models/sleepy/predict", json={"sleep": 0}).status_code == 200
    _wait_for(lambda: _db_rows(server)[2], lambda ids: key["id"] in ids, "usage flushed")
    models, routes, keys = _db_rows(server)
    assert not [m for m in models if marker in m], models
    assert not [r for r in routes if marker in r], routes
    assert not [k for k in keys if marker in k], keys
    known = {"", "sleepy", "(other)"}
    assert models <= known, models
    assert all(r in ("", "unmatched", "(other)") or "{" in r or r.count("/") <= 3 for r in routes), routes
    listed = [m["model"] for m in a.get("/v1/stats/models").json()["models"]]
    assert listed == ["sleepy"], listed


def test_a_throttled_count_cannot_be_pinned_on_someone_elses_key(
    server: ServerProcess, c: httpx.Client, a: httpx.Client
) -> None:
    plan = create_plan(a, rate=0.001, burst=1)
    victim = create_key(a, plan=plan)
    statuses = [
        c.post(
            "/v1/models/sleepy/predict", json={"sleep": 0}, headers={"x-api-key": victim["key"]}
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 429, 429], statuses
    # the attacker knows the victim's key id (it is the key's visible prefix), not its secret
    forged = f"mlg_{victim['id']}_" + "Z" * 43
    for headers in (
        {"x-api-key": forged},
        {"authorization": f"Bearer {forged}"},
        {"x-api-key": f"mlg_{victim['id']}"},
    ):
        for _ in range(4):
            r = c.post("/v1/models/sleepy/predict", json={"sleep": 0}, headers=headers)
            assert r.status_code in (401, 403), (headers, r.status_code, r.text[:200])

    def totals() -> Any:
        for k in a.get("/v1/stats/keys").json()["keys"]:
            if k["key_id"] == victim["id"]:
                return k["totals"]
        return None

    got = _wait_for(totals, lambda t: t is not None and t["throttled"] >= 2, "throttled flushed")
    time.sleep(1.2)  # two more flush periods: nothing else arrives
    assert totals() == {"requests": 1, "units": 1, "throttled": 2, "errors": 0}, got


def test_live_sessions_per_caller_are_bounded(
    server: ServerProcess, c: httpx.Client, a: httpx.Client
) -> None:
    _, token = _user(c)
    own = c.post("/v1/keys", json={"name": "mine"}, headers={"authorization": f"Bearer {token}"})
    assert own.status_code == 201, own.text  # no admin needed: open sign-up, then a key of one's own
    secret = own.json()["key"]
    address = _addr()  # one client address: the per-client throttle would apply if it counted
    cookies = []
    for _ in range(100):
        r = _login(c, {"api_key": secret}, address=address)
        assert r.status_code in (200, 429), r.text
        if r.status_code == 200:
            cookies.append(r.cookies["mlgate_session"])
    live = sum(c.get("/v1/stats/keys", headers={**DASH, **_cookie(v)}).status_code == 200 for v in cookies)
    assert live < 100, (len(cookies), live)


def test_untrusted_forwarded_headers_neither_make_the_cookie_secure_nor_dodge_the_throttle(
    tmp_path: Path,
) -> None:
    """With the loopback peer not a trusted proxy, its ``X-Forwarded-Proto`` and
    ``X-Forwarded-For`` are ignored: no ``Secure`` on plain http, one throttle bucket."""
    env = {"MLGATE_HTTP__FORWARDED_ALLOW_IPS": '["10.255.255.1"]'}
    with (
        start_server(tmp_path / "data", env=env, sleepy=False) as s,
        httpx.Client(base_url=s.url, timeout=30.0) as c,
    ):
        r = c.post(LOGIN, json={"api_key": s.api_key}, headers={**DASH, "x-forwarded-proto": "https"})
        assert r.status_code == 200, r.text
        assert "Secure" not in [p.strip() for p in r.headers["set-cookie"].split(";")], r.headers
        statuses = [
            c.post(
                LOGIN,
                json={"api_key": "mlg_guess_" + "g" * 40},
                headers={**DASH, "x-forwarded-for": f"10.1.{i}.1"},
            ).status_code
            for i in range(12)
        ]
        assert statuses == [401] * 10 + [429] * 2, statuses
