"""Admin routes for an alias's traffic policy: a canary split with its guard, a shadow version.

- ``GET /v1/models/{name}/aliases/{alias}``: the alias's version, split, guard and shadow;
- ``PUT …/aliases/{alias}/split`` ``{"weights": {"3": 90, "4": 10}, "guard": {...}}``: split the
  alias's traffic (sticky per caller; one version at 100 moves the alias); every version in the
  split is loaded and warmed up first, so no caller meets a cold canary;
- ``DELETE …/aliases/{alias}/split``: everyone back on the stable version;
- ``PUT …/aliases/{alias}/shadow`` ``{"version": 4, "sample": 0.25, "timeout_s": 5,
  "max_concurrency": 4}``: mirror a sample of the alias's traffic to a version after each
  answer (loaded first); ``DELETE …/aliases/{alias}/shadow`` stops it.

Moving the alias (``PUT …/aliases/{alias}`` in :mod:`routes_admin`) ends its split. Every change
is an event in the model's history (``GET /v1/models/{name}/history``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from mlgate.errors import InvalidInput
from mlgate.http.deps import actor_of, json_body, require_admin, server_of
from mlgate.http.jsonio import JSONResponse
from mlgate.policies import AliasPolicy, CanaryGuard, ShadowOptions, parse_weights
from mlgate.types import Caller

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["admin"])

_SPLIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "example": {"weights": {"3": 90, "4": 10}, "guard": {"min_requests": 100}},
            }
        },
    }
}
_SHADOW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"example": {"version": 4, "sample": 0.25}}},
    }
}


@router.get("/{name}/aliases/{alias}", summary="An alias's version, canary split, guard and shadow")
async def get_alias(
    name: str, alias: str, request: Request, _: Caller = Depends(require_admin)
) -> JSONResponse:
    server = server_of(request)
    await asyncio.to_thread(server.repository.get_model, name)  # 404 for an unknown model
    policy = await asyncio.to_thread(server.dataplane.policies.get, name, alias)
    if policy is None:
        from mlgate.errors import NotFound

        raise NotFound(f"model {name!r} has no alias {alias!r}", details={"model": name, "alias": alias})
    return JSONResponse(policy.to_json())


@router.put(
    "/{name}/aliases/{alias}/split", summary="Split an alias's traffic (canary)", openapi_extra=_SPLIT_BODY
)
async def put_split(
    name: str, alias: str, request: Request, caller: Caller = Depends(require_admin)
) -> JSONResponse:
    body = await _object(request, {"weights", "guard"})
    if "weights" not in body:
        raise InvalidInput('a split is {"weights": {"<version>": <percent>, ...}, "guard": {...}}')
    weights = parse_weights(body["weights"])
    guard = CanaryGuard.parse(body.get("guard"))
    server = server_of(request)
    await asyncio.to_thread(server.repository.get_model, name)
    for version, weight in weights.items():
        if weight > 0:  # loaded (and warmed up) before any caller is sent there
            info = await asyncio.to_thread(server.repository.get_version, name, version)
            await server.dataplane.ensure_loaded(info, retry=True)
    policy = await asyncio.to_thread(
        server.dataplane.policies.set_split, name, alias, weights, guard, actor=actor_of(caller)
    )
    server.dataplane.invalidate()
    return JSONResponse(policy.to_json())


@router.delete(
    "/{name}/aliases/{alias}/split", summary="End an alias's split: all traffic to the stable version"
)
async def delete_split(
    name: str, alias: str, request: Request, caller: Caller = Depends(require_admin)
) -> JSONResponse:
    server = server_of(request)
    await asyncio.to_thread(server.repository.get_model, name)
    policy = await asyncio.to_thread(
        server.dataplane.policies.clear_split, name, alias, actor=actor_of(caller)
    )
    server.dataplane.invalidate()
    return JSONResponse(policy.to_json())


@router.put(
    "/{name}/aliases/{alias}/shadow",
    summary="Mirror an alias's traffic to a shadow version",
    openapi_extra=_SHADOW_BODY,
)
async def put_shadow(
    name: str, alias: str, request: Request, caller: Caller = Depends(require_admin)
) -> JSONResponse:
    body = await _object(request, {"version", "sample", "timeout_s", "max_concurrency"})
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**31:
        raise InvalidInput('a shadow is {"version": <version number>, "sample": <fraction in (0, 1]>}')
    sample = body.get("sample", 1.0)
    options = ShadowOptions.parse(body.get("timeout_s"), body.get("max_concurrency"))
    server = server_of(request)
    await asyncio.to_thread(server.repository.get_model, name)
    info = await asyncio.to_thread(server.repository.get_version, name, version)
    await server.dataplane.ensure_loaded(info, retry=True)
    policy = await asyncio.to_thread(
        server.dataplane.policies.set_shadow, name, alias, version, sample, options, actor=actor_of(caller)
    )
    server.dataplane.invalidate()
    return JSONResponse(policy.to_json())


@router.delete("/{name}/aliases/{alias}/shadow", summary="Stop an alias's shadow")
async def delete_shadow(
    name: str, alias: str, request: Request, caller: Caller = Depends(require_admin)
) -> JSONResponse:
    server = server_of(request)
    await asyncio.to_thread(server.repository.get_model, name)
    policy = await asyncio.to_thread(
        server.dataplane.policies.clear_shadow, name, alias, actor=actor_of(caller)
    )
    server.dataplane.invalidate()
    return JSONResponse(policy.to_json())


async def _object(request: Request, known: set[str]) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)[:200]}", details={"known": sorted(known)})
    return body


def policies_json(policies: dict[str, AliasPolicy]) -> dict[str, Any]:
    """An alias → policy map as model info shows it."""
    return {alias: policy.to_json() for alias, policy in sorted(policies.items())}
