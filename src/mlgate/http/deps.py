"""Shared route helpers: the server from app state, admin authentication, request bodies."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from mlgate.access.keys import ApiKey
from mlgate.errors import Forbidden, InvalidInput, Unauthorized
from mlgate.http.app import Server
from mlgate.http.jsonio import parse_json

__all__ = ["json_body", "require_admin", "server_of", "version_ref"]


def server_of(request: Request) -> Server:
    server: Server = request.app.state.server
    return server


async def json_body(request: Request) -> Any:
    return parse_json(await request.body())


def _credential(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_admin(request: Request) -> ApiKey:
    """Admin routes are never open: an admin key in ``x-api-key`` (or a Bearer header)."""
    secret = _credential(request)
    if secret is None:
        raise Unauthorized("admin routes need an admin key in the x-api-key header")
    key = await asyncio.to_thread(server_of(request).keys.verify, secret)
    if key is None or key.role != "admin":
        raise Forbidden("Forbidden")
    request.state.key_id = key.id
    return key


def version_ref(raw: str | None) -> str | int | None:
    """A version path/query parameter: digits are a version number, anything else an alias."""
    if raw is None or raw == "":
        return None
    if raw.isdigit():
        number = int(raw)
        if number < 1:
            raise InvalidInput("version numbers start at 1")
        return number
    return raw
