"""The dashboard (issue 17): ``/dashboard``, a static single-page app shipped in the package,
and its sign-in.

- ``GET /dashboard`` (and ``/dashboard/<file>``): index.html, app.js, app.css and the vendored
  uPlot, from ``mlgate/http/dashboard/`` — the files known at startup, nothing else. Every
  answer carries a strict Content-Security-Policy (no inline script or style, nothing from
  another origin), ``nosniff`` and ``no-referrer``; HTML is ``no-store``.
- ``POST /dashboard/api/login`` with ``{"api_key"}`` or ``{"username", "password"}``: a
  server-side session (:mod:`mlgate.access.sessions`) and its cookie ``mlgate_session``
  (HttpOnly, SameSite=Strict, Path=/, Max-Age the session's life, Secure over https). Failed
  sign-ins are throttled per client (and per username) like ``/auth/token``.
- ``POST /dashboard/api/logout`` ends it; ``GET /dashboard/api/me`` says who is signed in.

The cookie is a credential only for the read-only ``GET /v1/...`` calls the page makes, sent
with ``X-Mlgate-Dashboard: 1`` (a header no other site can send without a CORS preflight) and
no other credential (:func:`mlgate.access.sessions.dashboard_cookie`, used where credentials
are resolved). The login and logout calls need that header too.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlgate.access.sessions import COOKIE_NAME, DASHBOARD_HEADER, Session
from mlgate.errors import InvalidInput, Throttled
from mlgate.http.deps import server_of
from mlgate.http.gateway import GatewayRejected
from mlgate.http.jsonio import JSONResponse
from mlgate.payloads import parse_json
from mlgate.types import Caller

__all__ = ["CSP", "DASHBOARD_DIR", "router"]

#: Where the dashboard's files are (shipped as package data).
DASHBOARD_DIR = Path(__file__).parent / "dashboard"
#: The Content-Security-Policy of every dashboard answer.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_SECURITY = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    "": "text/plain; charset=utf-8",  # LICENSE
}
_MAX_FIELD = 1024

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)


def _files() -> dict[str, tuple[Path, str]]:
    """``relative path -> (file, media type)`` of every servable file (read once)."""
    found: dict[str, tuple[Path, str]] = {}
    if DASHBOARD_DIR.is_dir():
        for path in sorted(DASHBOARD_DIR.rglob("*")):
            media = _TYPES.get(path.suffix)
            if path.is_file() and media is not None:
                found[path.relative_to(DASHBOARD_DIR).as_posix()] = (path, media)
    return found


_FILES = _files()


def _static(name: str) -> Response:
    entry = _FILES.get(name)
    if entry is None:
        return Response(b"not found", status_code=404, media_type="text/plain", headers=_SECURITY)
    path, media = entry
    headers = dict(_SECURITY)
    headers["Cache-Control"] = "no-store" if media.startswith("text/html") else "no-cache"
    return Response(path.read_bytes(), media_type=media, headers=headers)


def _json(body: Any, status: int = 200, extra: dict[str, str] | None = None) -> JSONResponse:
    headers = {**_SECURITY, "Cache-Control": "no-store", **(extra or {})}
    return JSONResponse(body, status_code=status, headers=headers)


def _refuse(status: int, message: str, extra: dict[str, str] | None = None) -> GatewayRejected:
    return GatewayRejected(status, {"message": message}, {**_SECURITY, **(extra or {})})


def _marked(request: Request) -> None:
    """The dashboard's own calls carry ``X-Mlgate-Dashboard: 1`` (CSRF: see the module)."""
    if request.headers.get(DASHBOARD_HEADER.decode()) != "1":
        raise _refuse(403, "dashboard API calls need the X-Mlgate-Dashboard: 1 header")


def _cookie(request: Request, value: str, max_age: int) -> str:
    secure = "; Secure" if request.url.scheme == "https" else ""
    return f"{COOKIE_NAME}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}"


def _me(session: Session, caller: Caller) -> dict[str, Any]:
    body = session.public()
    body["role"] = caller.role
    body["username"] = caller.username
    return body


@router.api_route("", methods=["GET", "HEAD"])
async def index_bare() -> Response:
    return _static("index.html")


@router.api_route("/", methods=["GET", "HEAD"])
async def index() -> Response:
    return _static("index.html")


@router.post("/api/login")
async def login(request: Request) -> JSONResponse:
    """Sign in with an API key or a username and password; sets the session cookie."""
    _marked(request)
    server = server_of(request)
    try:
        data = parse_json(await request.body())
    except InvalidInput:
        data = None
    if not isinstance(data, dict):
        raise _refuse(400, 'send {"api_key": "..."} or {"username": "...", "password": "..."}')
    api_key, username, password = data.get("api_key"), data.get("username"), data.get("password")
    client = request.client.host if request.client else "unknown"
    guard = server.gate.login
    for name, given in (("api_key", api_key), ("username", username), ("password", password)):
        if given is not None and not isinstance(given, str):
            raise _refuse(400, f"{name} must be a string")
    who: str | None
    if api_key:
        who = None  # a key guess is throttled per client only (no username a client can type)
    elif username and password:
        who = username
    else:
        raise _refuse(400, "an API key, or a username and a password, are required")
    if len(api_key or "") > _MAX_FIELD or len(who or "") > _MAX_FIELD:
        raise _refuse(401, "Sign-in failed: unknown API key or wrong username or password")
    try:
        await guard.admit(client=client, username=who)  # before any hashing work
    except Throttled as exc:
        retry = str(max(1, math.ceil(exc.retry_after)))
        raise _refuse(429, "Too many failed sign-ins: wait and retry", {"Retry-After": retry}) from None
    sessions = server.sessions
    if api_key:
        key = await asyncio.to_thread(server.keys.verify, api_key)
        if key is None:
            raise _refuse(401, "Sign-in failed: unknown, disabled or expired API key")
        value, session = await asyncio.to_thread(
            lambda: sessions.create(kind="key", caller_id=key.id, username=key.owner, role=key.role)
        )
        caller = Caller(kind="key", id=key.id, username=key.owner, role=key.role)
    else:
        assert who is not None and isinstance(password, str)
        async with guard.hashing():
            user = await asyncio.to_thread(server.users.authenticate, who, password)
        if user is None:
            raise _refuse(401, "Sign-in failed: wrong username or password (or the account is disabled)")
        value, session = await asyncio.to_thread(
            lambda: sessions.create(
                kind="user", caller_id=user.username, username=user.username, role=user.role
            )
        )
        caller = Caller(kind="user", id=user.username, username=user.username, role=user.role)
    await guard.succeeded(client=client, username=who)
    return _json(
        {"signed_in": True, **_me(session, caller)},
        extra={"Set-Cookie": _cookie(request, value, int(sessions.life_s))},
    )


@router.post("/api/logout")
async def logout(request: Request) -> JSONResponse:
    """End the session (its cookie is cleared; the session's API calls answer 401 from now on)."""
    _marked(request)
    value = request.cookies.get(COOKIE_NAME)
    ended = False
    if value:
        ended = await asyncio.to_thread(server_of(request).sessions.delete, value)
    return _json({"signed_out": ended}, extra={"Set-Cookie": _cookie(request, "", 0)})


@router.get("/api/me")
async def me(request: Request) -> JSONResponse:
    """Who is signed in: ``{"signed_in": false}`` when nobody is."""
    _marked(request)
    value = request.cookies.get(COOKIE_NAME)
    found = await asyncio.to_thread(server_of(request).sessions.lookup, value) if value else None
    if found is None:  # 200, not 401: the page asks this first, and a browser logs every 4xx
        return _json({"signed_in": False})
    return _json({"signed_in": True, **_me(*found)})


@router.api_route("/{name:path}", methods=["GET", "HEAD"])
async def asset(name: str) -> Response:
    return _static(name)


@router.api_route("/{name:path}", methods=["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def not_allowed(name: str) -> Response:
    """Any other method on the dashboard's files: 405, with the same security headers."""
    return Response(
        b"method not allowed",
        status_code=405,
        media_type="text/plain",
        headers={**_SECURITY, "Allow": "GET, HEAD"},
    )
