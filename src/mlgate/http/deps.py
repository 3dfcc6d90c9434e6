"""Shared FastAPI route helpers: the request's exchange and the server, admin authentication,
request bodies, and edge endpoints mounted as FastAPI routes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.responses import Response

from mlgate.access.sessions import dashboard_cookie
from mlgate.access.tokens import authenticate_token
from mlgate.errors import Forbidden, Unauthorized
from mlgate.http.capturing import capture_answer
from mlgate.http.endpoints import version_ref
from mlgate.http.exchange import EXCHANGE, Exchange
from mlgate.http.gateway import bearer_of
from mlgate.http.serving import WireEndpoint
from mlgate.payloads import parse_json
from mlgate.server import Server
from mlgate.types import Caller

__all__ = [
    "actor_of",
    "caller_of",
    "exchange_of",
    "json_body",
    "require_admin",
    "require_caller",
    "route_template",
    "server_of",
    "starlette_endpoint",
    "version_ref",
]


def exchange_of(request: Request) -> Exchange:
    """The request's exchange (the ASGI driver opens one for every request it hands to FastAPI)."""
    x: Exchange = request.scope[EXCHANGE]
    return x


def server_of(request: Request) -> Server:
    return exchange_of(request).server


async def json_body(request: Request) -> Any:
    return parse_json(await request.body())


def route_template(request: Request) -> str | None:
    """The matched route's template (``/v1/models/{name}/batch``), for data capture."""
    path = getattr(request.scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


async def caller_of(request: Request) -> Caller | None:
    """The authenticated caller (no metering), None when no credentials were sent.

    A key in ``x-api-key`` or a bearer token: an admin key, a user's key, or a user's JWT.
    Bad credentials are refused, never silently treated as anonymous.
    """
    x = exchange_of(request)
    server = x.server
    secret = x.api_key
    bearer = bearer_of(x.authorization)
    if secret:
        key = server.keys.verify_cached(secret)
        if key is None:
            raise Forbidden("Forbidden")
        x.key_id = key.id
        return Caller(kind="key", id=key.id, username=key.owner, role=key.role)
    if bearer:
        # A bootstrap/admin key may also arrive as "Authorization: Bearer <key>".
        if bearer.startswith("mlg_"):
            key = server.keys.verify_cached(bearer)
            if key is None:
                raise Forbidden("Forbidden")
            x.key_id = key.id
            return Caller(kind="key", id=key.id, username=key.owner, role=key.role)
        user = await asyncio.to_thread(authenticate_token, server.gate.tokens, server.users, bearer)
        return Caller(kind="user", id=user.username, username=user.username, role=user.role)
    # -- a /dashboard session (issue 17): only read-only /v1 GETs marked X-Mlgate-Dashboard: 1 --
    # (any Authorization header, even one that is not a bearer token, is another credential)
    cookie = None if x.authorization else dashboard_cookie(x.method, x.path, x.headers)
    if cookie is not None:
        session = await server.sessions.resolve_async(cookie)
        if session is None:
            raise Unauthorized("the dashboard session has ended: sign in again")
        if session.kind == "key":
            x.key_id = session.id
        return session
    return None


async def require_caller(request: Request) -> Caller:
    caller = await caller_of(request)
    if caller is None:
        raise Unauthorized("send an API key (x-api-key) or a bearer token")
    return caller


async def require_admin(request: Request) -> Caller:
    """Admin routes are never open: an admin key, or an admin user's bearer token."""
    caller = await caller_of(request)
    if caller is None:
        raise Unauthorized("admin routes need an admin key in the x-api-key header or an admin token")
    if caller.role != "admin":
        raise Forbidden("Forbidden")
    return caller


def actor_of(caller: Caller) -> str:
    """Who did it, for a model's history: ``key:<id>`` or ``user:<name>``."""
    return f"user:{caller.username}" if caller.kind == "user" else f"key:{caller.id}"


def starlette_endpoint(endpoint: WireEndpoint) -> Callable[[Request], Awaitable[Response]]:
    """An edge endpoint as a FastAPI route (the OpenAPI docs; requests the edge passes on to
    FastAPI: cross-origin ones when CORS is configured, a ``root_path``). It runs on the same
    exchange; the ASGI driver adds the edge's headers and closes it."""

    async def route(request: Request) -> Response:
        x = exchange_of(request)
        x.body = await request.body()
        x.params = dict(request.path_params)
        answer = await endpoint(x)
        if x.model is not None and answer.status < 300:  # data capture, as Edge.serve does it
            rate = x.server.capture.rate(x.model)
            if rate > 0.0:
                capture_answer(x, answer, rate, getattr(request.scope.get("route"), "path", None))
        response = Response(
            answer.body, status_code=answer.status, media_type=answer.content_type.decode("latin-1")
        )
        response.raw_headers.extend(answer.headers)
        return response

    return route
