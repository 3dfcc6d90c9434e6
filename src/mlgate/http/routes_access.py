"""API keys, usage plans, usage reports and users.

Admins manage everything. A user (by token, or by one of their own keys) sees and
manages only their own keys and usage: another user's key id answers 404, exactly like
a key that does not exist, so ids cannot be probed (BOLA).
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request

from mlgate.access.keys import ApiKey
from mlgate.access.usage import user_subject
from mlgate.errors import Conflict, Forbidden, InvalidInput, MlgateError, NotFound
from mlgate.http.deps import json_body, require_admin, require_caller, server_of
from mlgate.http.jsonio import JSONResponse
from mlgate.types import Caller

router = APIRouter(prefix="/v1", tags=["keys, plans and usage"])

_OBJECT = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}


def key_json(key: ApiKey, secret: str | None = None, plans: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "owner": key.owner,
        "created_at": key.created_at.isoformat(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "disabled": key.disabled,
    }
    if plans is not None:
        body["plans"] = plans  # {scope: plan}; "*" is the default plan when nothing is attached
    if secret is not None:
        body["key"] = secret  # shown once, here and nowhere else
    return body


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    return value


def _expiry(body: dict[str, Any]) -> datetime | None:
    raw = _optional_str(body, "expires_at")
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput("expires_at must be an ISO 8601 timestamp with a timezone") from None
    if when.tzinfo is None:
        raise InvalidInput("expires_at must carry a timezone (e.g. 2027-01-01T00:00:00Z)")
    return when


async def _own_key(request: Request, caller: Caller, key_id: str) -> ApiKey:
    keys = server_of(request).keys
    try:
        key = await asyncio.to_thread(keys.get, key_id)
    except NotFound:
        raise NotFound(f"no key '{key_id}'") from None
    if caller.role != "admin" and (caller.username is None or key.owner != caller.username):
        raise NotFound(f"no key '{key_id}'")
    return key


@router.post("/keys", status_code=201, summary="Create an API key (shown once)", openapi_extra=_OBJECT)
async def create_key(request: Request, caller: Caller = Depends(require_caller)) -> JSONResponse:
    server = server_of(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput("send a JSON object")
    name = _optional_str(body, "name") or "key"
    if caller.role == "admin":
        role = _optional_str(body, "role") or "user"
        owner = _optional_str(body, "owner")
        plan = _optional_str(body, "plan")
    else:
        if caller.username is None:
            raise Forbidden("only users and admins can create keys")
        role, owner, plan = "user", caller.username, None
        if any(body.get(k) is not None for k in ("role", "owner", "plan")):
            raise Forbidden("only an admin can set a key's role, owner or plan")
    scope = _optional_str(body, "scope") or "*"
    if plan is not None:  # validated before anything is created
        _check_plan_scope(request, scope)
        if not (await asyncio.to_thread(server.plans.get, plan)).metered and role != "admin":
            raise InvalidInput(f"usage plan {plan!r} has no limits: only an admin key may be unmetered")
    if owner is not None:
        user = await asyncio.to_thread(server.users.get, owner)
        if user.disabled:
            raise Conflict(f"user {owner!r} is disabled: enable them before giving them a key")
    expires_at = _expiry(body)
    new = await asyncio.to_thread(
        server.keys.create, name=name, role=role, owner=owner, expires_at=expires_at
    )
    if plan is not None:
        try:
            await asyncio.to_thread(server.plans.attach, new.key.id, plan, scope=scope)
        except MlgateError:  # the plan changed meanwhile: no key is left without the plan it asked for
            await asyncio.to_thread(server.keys.set_disabled, new.key.id, True)
            raise
    plans = await asyncio.to_thread(_plans_of, server, new.key)
    return JSONResponse(key_json(new.key, new.secret, plans), status_code=201)


def _plans_of(server: Any, key: ApiKey) -> dict[str, str]:
    attached: dict[str, str] = server.plans.attachments(key.id)
    if "*" not in attached and server.plans.default_plan is not None:
        attached["*"] = server.plans.default_plan
    return attached


def _check_plan_scope(request: Request, scope: str) -> None:
    """A route scope must name a route the gateway meters by its path (a service's original
    route): a plan attached to any other path would be accepted and never applied."""
    if not scope.startswith("/"):
        return
    routes = sorted({a.path for s in server_of(request).services for a in s.routes})
    if scope not in routes:
        raise InvalidInput(
            f"a route scope must be one of the service routes ({', '.join(routes) or 'none mounted'}); "
            "for a model's routes use the model's name",
            details={"scope": scope[:128]},
        )


@router.get("/keys", summary="List keys (a user sees only their own)")
async def list_keys(request: Request, caller: Caller = Depends(require_caller)) -> JSONResponse:
    keys = server_of(request).keys
    owner = request.query_params.get("owner") if caller.role == "admin" else caller.username
    if caller.role != "admin" and owner is None:
        return JSONResponse({"keys": []})
    server = server_of(request)

    def listing() -> list[dict[str, Any]]:
        return [key_json(k, None, _plans_of(server, k)) for k in keys.list(owner=owner)]

    return JSONResponse({"keys": await asyncio.to_thread(listing)})


@router.post("/keys/{key_id}/disable", summary="Disable a key")
async def disable_key(
    key_id: str, request: Request, caller: Caller = Depends(require_caller)
) -> JSONResponse:
    await _own_key(request, caller, key_id)
    key = await asyncio.to_thread(server_of(request).keys.set_disabled, key_id, True)
    return JSONResponse(key_json(key))


@router.post("/keys/{key_id}/enable", summary="Enable a key again (admin)")
async def enable_key(key_id: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    key = await asyncio.to_thread(server_of(request).keys.set_disabled, key_id, False)
    return JSONResponse(key_json(key))


@router.post(
    "/keys/{key_id}/rotate", status_code=201, summary="Rotate a key: a new secret, the old one retired"
)
async def rotate_key(key_id: str, request: Request, caller: Caller = Depends(require_caller)) -> JSONResponse:
    await _own_key(request, caller, key_id)
    grace = request.query_params.get("grace_seconds", "0")
    if not grace.isdigit() or int(grace) > 30 * 86400:
        raise InvalidInput("grace_seconds must be an integer between 0 and 2592000")
    new = await asyncio.to_thread(server_of(request).keys.rotate, key_id, grace_seconds=int(grace))
    return JSONResponse(key_json(new.key, new.secret), status_code=201)


_PLAN_FIELDS = frozenset({"rate", "burst", "quota_limit", "quota_period", "quota_offset", "description"})


@router.post("/plans", status_code=201, summary="Create a usage plan", openapi_extra=_OBJECT)
async def create_plan(request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise InvalidInput(
            'send {"name": ..., "rate": ..., "burst": ..., "quota_limit": ..., "quota_period": ...}'
        )
    unknown = set(body) - _PLAN_FIELDS - {"name"}
    if unknown:
        raise InvalidInput(f"unknown plan fields: {', '.join(sorted(unknown))}")
    fields = {k: v for k, v in body.items() if k in _PLAN_FIELDS}
    plan = await asyncio.to_thread(server_of(request).plans.create, body["name"], **fields)
    return JSONResponse(plan.to_dict(), status_code=201)


@router.get("/plans", summary="List usage plans")
async def list_plans(request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    plans = await asyncio.to_thread(server_of(request).plans.list)
    return JSONResponse({"plans": [p.to_dict() for p in plans]})


@router.patch(
    "/plans/{plan}",
    summary="Update a usage plan (the fields sent; null clears a limit)",
    openapi_extra=_OBJECT,
)
async def update_plan(plan: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    body = await json_body(request)
    if not isinstance(body, dict) or not body:
        raise InvalidInput(
            'send the fields to change, e.g. {"rate": 20, "burst": 40} or {"quota_limit": null}'
        )
    unknown = set(body) - _PLAN_FIELDS
    if unknown:
        raise InvalidInput(f"unknown plan fields: {', '.join(sorted(unknown))}")
    updated = await asyncio.to_thread(server_of(request).plans.update, plan, **body)
    return JSONResponse(updated.to_dict())


@router.delete("/plans/{plan}", summary="Delete a usage plan (refused while a key uses it)")
async def delete_plan(plan: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    await asyncio.to_thread(server_of(request).plans.delete, plan)
    return JSONResponse({"plan": plan, "deleted": True})


@router.put("/plans/{plan}/keys/{key_id}", summary="Attach a key to a plan (globally or for one model)")
async def attach_key(
    plan: str, key_id: str, request: Request, _: Caller = Depends(require_admin)
) -> JSONResponse:
    scope = request.query_params.get("scope", "*")
    _check_plan_scope(request, scope)
    await asyncio.to_thread(server_of(request).plans.attach, key_id, plan, scope=scope)
    return JSONResponse({"plan": plan, "key_id": key_id, "scope": scope})


@router.delete("/plans/{plan}/keys/{key_id}", summary="Detach a key from its plan for a scope")
async def detach_key(
    plan: str, key_id: str, request: Request, _: Caller = Depends(require_admin)
) -> JSONResponse:
    scope = request.query_params.get("scope", "*")
    await asyncio.to_thread(server_of(request).plans.detach, key_id, scope=scope)
    return JSONResponse({"plan": plan, "key_id": key_id, "scope": scope, "detached": True})


def _day(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a date (YYYY-MM-DD)") from None


@router.get("/usage", summary="Usage per key and day (a user sees only their own)")
async def usage(request: Request, caller: Caller = Depends(require_caller)) -> JSONResponse:
    server = server_of(request)
    wanted = request.query_params.get("key_id")
    if caller.role == "admin":
        ids = [wanted] if wanted else None
    else:
        own = (
            [k.id for k in await asyncio.to_thread(server.keys.list, owner=caller.username)]
            if caller.username
            else []
        )
        if caller.username:
            own.append(user_subject(caller.username))
        if wanted is not None and wanted not in own:
            raise NotFound(f"no key '{wanted}'")
        ids = [wanted] if wanted else own
    rows = await asyncio.to_thread(
        server.usage.report, key_ids=ids, since=_day(request, "since"), until=_day(request, "until")
    )
    return JSONResponse({"usage": rows})


@router.get("/users", summary="List users (admin)")
async def list_users(request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    users = await asyncio.to_thread(server_of(request).users.list)
    return JSONResponse({"users": [u.public() for u in users]})


@router.post("/users/{username}/disable", summary="Disable a user: their tokens, keys and key minting stop")
async def disable_user(username: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    server = server_of(request)
    user = await asyncio.to_thread(server.users.set_disabled, username, True)
    server.keys.invalidate_owner(username)  # here at once; other processes within the key cache ttl
    return JSONResponse(user.public())


@router.post("/users/{username}/enable", summary="Enable a user again (their keys work again)")
async def enable_user(username: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    server = server_of(request)
    user = await asyncio.to_thread(server.users.set_disabled, username, False)
    server.keys.invalidate_owner(username)
    return JSONResponse(user.public())
