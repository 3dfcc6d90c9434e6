"""Shared route helpers: the server from app state, admin authentication, request bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.responses import Response

from mlgate.access.tokens import authenticate_token
from mlgate.errors import Forbidden, Unauthorized
from mlgate.http.app import Server
from mlgate.http.endpoints import version_ref
from mlgate.http.gateway import bearer_token
from mlgate.http.serving import WireEndpoint
from mlgate.http.wire import WireRequest
from mlgate.payloads import parse_json
from mlgate.types import Caller

__all__ = [
    "caller_of",
    "json_body",
    "require_admin",
    "require_caller",
    "server_of",
    "starlette_endpoint",
    "to_starlette",
    "version_ref",
]


def server_of(request: Request) -> Server:
    server: Server = request.app.state.server
    return server


async def json_body(request: Request) -> Any:
    return parse_json(await request.body())


async def caller_of(request: Request) -> Caller | None:
    """The authenticated caller (no metering), None when no credentials were sent.

    A key in ``x-api-key`` or a bearer token: an admin key, a user's key, or a user's JWT.
    Bad credentials are refused, never silently treated as anonymous.
    """
    server = server_of(request)
    secret = request.headers.get("x-api-key")
    bearer = bearer_token(request)
    if secret:
        key = server.keys.verify_cached(secret)
        if key is None:
            raise Forbidden("Forbidden")
        request.state.key_id = key.id
        return Caller(kind="key", id=key.id, username=key.owner, role=key.role)
    if bearer:
        # A bootstrap/admin key may also arrive as "Authorization: Bearer <key>".
        if bearer.startswith("mlg_"):
            key = server.keys.verify_cached(bearer)
            if key is None:
                raise Forbidden("Forbidden")
            request.state.key_id = key.id
            return Caller(kind="key", id=key.id, username=key.owner, role=key.role)
        user = await asyncio.to_thread(authenticate_token, server.gate.tokens, server.users, bearer)
        return Caller(kind="user", id=user.username, username=user.username, role=user.role)
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


async def to_starlette(endpoint: WireEndpoint, request: Request) -> Response:
    """Run a wire endpoint for a Starlette request (FastAPI's copy of a predict route).

    The request's ``state`` is the scope's, so the edge's wrappers still add the request id and
    rate-limit headers and record usage; errors propagate to the app's handlers.
    """
    wire = WireRequest(
        method=request.method,
        path=request.scope["path"],
        query=request.scope.get("query_string", b""),
        headers=request.scope["headers"],
        body=await request.body(),
        server=request.app.state.server,
        state=request.scope.setdefault("state", {}),
        params=dict(request.path_params),
        content_type=request.headers.get("content-type", ""),
        api_key=request.headers.get("x-api-key"),
        authorization=request.headers.get("authorization"),
    )
    answer = await endpoint(wire)
    response = Response(
        answer.body, status_code=answer.status, media_type=answer.content_type.decode("latin-1")
    )
    response.raw_headers.extend(answer.headers)
    return response


def starlette_endpoint(endpoint: WireEndpoint) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint`` as a FastAPI route endpoint taking only the request."""

    async def route(request: Request) -> Response:
        return await to_starlette(endpoint, request)

    return route
