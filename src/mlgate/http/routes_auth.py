"""User accounts: the OAuth2 password flow and sign-up, at the paths existing clients use.

``POST /auth/token`` takes the OAuth2 form (``username``, ``password``) — or JSON
``{"username", "password"}`` for the original client — and answers
``{"access_token", "token_type": "bearer", "expires_in"}``. ``POST /auth/create_user``
answers 201; without admin rights it creates ``user`` accounts only (and only when open
sign-up is on). Logins are throttled per client address and per username *before* the
password is checked, and password hashes are capped per process (:mod:`mlgate.access.login`).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from fastapi import APIRouter, Request

from mlgate.errors import Forbidden, InvalidInput, Throttled, Unauthorized
from mlgate.http.deps import caller_of, server_of
from mlgate.http.gateway import GatewayRejected
from mlgate.http.jsonio import JSONResponse
from mlgate.payloads import parse_json

router = APIRouter(prefix="/auth", tags=["users"])

_TOKEN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string"},
                        "password": {"type": "string", "format": "password"},
                        "grant_type": {"type": "string", "enum": ["password"]},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
                }
            },
        },
    }
}
_USER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string"},
                        "password": {"type": "string", "format": "password"},
                        "email": {"type": "string"},
                        "first_name": {"type": "string"},
                        "last_name": {"type": "string"},
                        "role": {"type": "string", "enum": ["user", "admin"]},
                    },
                }
            }
        },
    }
}


async def _credentials(request: Request) -> tuple[str, str]:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    data: Any
    if media in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form(max_files=0, max_fields=8)
        data = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        data = parse_json(await request.body())
    if not isinstance(data, dict):
        raise InvalidInput("send username and password (OAuth2 form or JSON)")
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise InvalidInput("username and password are required")
    return username, password


@router.post("/token", summary="OAuth2 password flow: a short-lived bearer token", openapi_extra=_TOKEN_BODY)
async def token(request: Request) -> JSONResponse:
    server = server_of(request)
    username, password = await _credentials(request)
    client = request.client.host if request.client else "unknown"
    guard = server.gate.login
    try:
        await guard.admit(client=client, username=username)  # before any hashing work
    except Throttled as exc:
        retry = str(max(1, math.ceil(exc.retry_after)))
        raise GatewayRejected(429, {"detail": "Too many failed logins"}, {"Retry-After": retry}) from None
    async with guard.hashing():
        user = await asyncio.to_thread(server.users.authenticate, username, password)
    if user is None:
        raise GatewayRejected(401, {"detail": "Authentication Failed"}, {"WWW-Authenticate": "Bearer"})
    await guard.succeeded(client=client, username=username)
    access = server.gate.tokens.issue(user)
    return JSONResponse(
        {"access_token": access, "token_type": "bearer", "expires_in": server.gate.tokens.expires_in},
        headers={"Cache-Control": "no-store"},
    )


@router.post("/create_user", status_code=201, summary="Create a user account", openapi_extra=_USER_BODY)
async def create_user(request: Request) -> JSONResponse:
    server = server_of(request)
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise InvalidInput("send a JSON object with username and password")
    caller = await caller_of(request)
    is_admin = caller is not None and caller.role == "admin"
    role = body.get("role", "user") or "user"
    if not is_admin:
        if not server.settings.auth.open_signup:
            raise Unauthorized("creating users needs an admin key or token")
        if role != "user":
            raise Forbidden("only an admin can create admin accounts")
    fields = {k: body.get(k) for k in ("email", "first_name", "last_name")}
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{name} must be a string")
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise InvalidInput("username and password must be strings")
    if not isinstance(role, str):
        raise InvalidInput("role must be 'user' or 'admin'")
    async with server.gate.login.hashing():  # the new password's hash
        user = await asyncio.to_thread(
            server.users.create,
            username,
            password,
            role=role,
            email=fields["email"],
            first_name=fields["first_name"],
            last_name=fields["last_name"],
        )
    return JSONResponse(user.public(), status_code=201)
