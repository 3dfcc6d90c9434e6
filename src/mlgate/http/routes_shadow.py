"""Admin API: a shadow version's comparison with the alias's primary (docs/lifecycle.md).

- ``GET /v1/models/{name}/shadow?alias=production``: the merged figures of the alias's current
  shadow over every process (:meth:`mlgate.lifecycle.shadow.ShadowRunner.figures`): pairs,
  agreement and confusion tables (labels), |Δ| and relative Δ quantiles (numbers), latency and
  error deltas, since, sample, and how many processes contributed. 404 for an unknown model or
  alias; 409 when the alias has no shadow (set one with ``PUT …/aliases/{alias}/shadow``).

This process's figures are written first, so a read right after traffic counts what it served.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from mlgate.errors import Conflict, InvalidInput, NotFound, NotReady
from mlgate.http.deps import require_admin, server_of
from mlgate.http.jsonio import JSONResponse
from mlgate.repository import DEFAULT_ALIAS
from mlgate.types import Caller

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["admin"])

_PARAMS = {
    "parameters": [
        {
            "name": "alias",
            "in": "query",
            "schema": {"type": "string", "default": DEFAULT_ALIAS},
            "description": "the shadowed alias",
        }
    ]
}
_MAX_ALIAS = 64


@router.get(
    "/{name}/shadow", summary="A shadow version's comparison with its alias's version", openapi_extra=_PARAMS
)
async def get_shadow(name: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    alias = request.query_params.get("alias") or DEFAULT_ALIAS
    if len(alias) > _MAX_ALIAS:
        raise InvalidInput(f"alias names are at most {_MAX_ALIAS} characters")
    server = server_of(request)
    await asyncio.to_thread(server.repository.get_model, name)  # 404 for an unknown model
    policy = await asyncio.to_thread(server.dataplane.policies.get, name, alias)
    if policy is None:
        raise NotFound(f"model {name!r} has no alias {alias!r}", details={"model": name, "alias": alias})
    if policy.shadow is None:
        raise Conflict(
            f"alias {alias!r} of {name!r} has no shadow version "
            f"(set one with PUT /v1/models/{name}/aliases/{alias}/shadow)",
            details={"model": name, "alias": alias},
        )
    runner = server.shadow
    if runner is None:
        raise NotReady("the server is starting")
    await runner.flush()
    return JSONResponse(await asyncio.to_thread(runner.figures, policy))
