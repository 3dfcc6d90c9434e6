"""Model routes: list, describe, predict (one, batch, pinned version)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlgate.errors import InvalidInput, MlgateError, public_text
from mlgate.http.capturing import capture_bodies
from mlgate.http.deps import (
    exchange_of,
    json_body,
    route_template,
    server_of,
    starlette_endpoint,
    version_ref,
)
from mlgate.http.endpoints import model_predict
from mlgate.http.gateway import (
    VERSION_HEADER,
    admit,
    authenticate,
    caller_identity,
    known_model,
    pinned_version,
)
from mlgate.http.jsonio import JSONResponse
from mlgate.types import ModelInfo, VersionInfo

router = APIRouter(prefix="/v1/models", tags=["models"])

_ANY_JSON = {"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}}
_BATCH_JSON = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {"inputs": {"type": "array", "items": {}, "maxItems": 1024}},
                }
            }
        },
    }
}
MAX_BATCH_ITEMS = 1024
_model_predict = starlette_endpoint(model_predict)


def model_json(model: ModelInfo, loaded: list[int]) -> dict[str, Any]:
    return {
        "name": model.name,
        "description": public_text(model.description),  # "declared by URI file:///…" names a path
        "created_at": model.created_at.isoformat(),
        "aliases": dict(model.aliases),
        "latest_version": model.latest_version,
        "loaded_versions": loaded,
    }


def version_json(info: VersionInfo, aliases: list[str]) -> dict[str, Any]:
    m = info.manifest
    return {
        "model": info.model,
        "version": info.version,
        "created_at": info.created_at.isoformat(),
        "aliases": aliases,
        "runtime": m.runtime,
        "artifact": m.artifact,
        "files": m.files,
        "description": m.description,
        "input_schema": m.input_schema,
        "output_schema": m.output_schema,
        "params": m.params,
        "metrics": m.metrics,
        "trusted": m.trusted,
        "batching": m.batching.model_dump(),
        "timeout_s": m.timeout_s,
        "location": public_text(info.location) if info.location else "content-addressed",
    }


@router.get("", summary="List models with their aliases and loaded versions")
async def list_models(request: Request) -> JSONResponse:
    await authenticate(exchange_of(request))
    server = server_of(request)
    models = await asyncio.to_thread(server.repository.list_models)
    loaded: dict[str, list[int]] = {}
    for lm in server.dataplane.loaded():
        loaded.setdefault(lm.info.model, []).append(lm.info.version)
    return JSONResponse({"models": [model_json(m, sorted(loaded.get(m.name, []))) for m in models]})


@router.get("/{name}", summary="Describe a model and every version's manifest")
async def get_model(name: str, request: Request) -> JSONResponse:
    caller = await authenticate(exchange_of(request), model=name)
    server = server_of(request)
    model = await asyncio.to_thread(server.repository.get_model, name)
    versions = await asyncio.to_thread(server.repository.list_versions, name)
    loaded = sorted(v.version for v in versions if server.dataplane.is_loaded(name, v.version))
    by_version: dict[int, list[str]] = {}
    for alias, v in model.aliases.items():
        by_version.setdefault(v, []).append(alias)
    body = model_json(model, loaded)
    body["versions"] = [version_json(v, sorted(by_version.get(v.version, []))) for v in versions]
    if caller.role == "admin":
        # Canary splits and shadows (mlgate.policies): which versions take which share of an
        # alias — an operator's business, not a customer's (who is dealt one version, sticky).
        policies = await asyncio.to_thread(server.dataplane.policies.for_model, name)
        body["policies"] = {alias: p.to_json() for alias, p in sorted(policies.items())}
    return JSONResponse(body)


async def _batch(request: Request, name: str, ref: str | int | None) -> JSONResponse:
    body = await json_body(request)
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput('a batch is {"inputs": [input, input, ...]} with at least one input')
    if len(inputs) > MAX_BATCH_ITEMS:
        raise InvalidInput(f"a batch holds at most {MAX_BATCH_ITEMS} inputs")
    x = exchange_of(request)
    await admit(x, model=name, cost=len(inputs), check=known_model(x, name, ref, inputs))
    pin = pinned_version(x)
    info, results = await x.server.dataplane.predict_many(
        name, inputs, version=ref if pin is None else pin, who=caller_identity(x)
    )
    x.model = info.model
    x.version = str(info.version)
    loaded = await x.server.dataplane.ensure_loaded(info)
    out: list[dict[str, Any]] = []
    for item, r in zip(inputs, results, strict=True):
        if isinstance(r, MlgateError):
            out.append({"error": {**r.to_dict(), "status": r.status}})
            if r.status >= 500:  # refused or failed by the server: not served, not charged
                x.unserved += 1 if loaded.processor is not None else loaded.runtime.units(item)
        else:
            out.append({"output": r.output})
    response = JSONResponse(
        {"model_name": info.model, "model_version": info.version, "results": out},
        headers={VERSION_HEADER: str(info.version)},
    )
    rate = x.server.capture.rate(info.model)
    if rate > 0.0:  # data capture (one dict lookup when off)
        raw = await request.body()
        route = route_template(request)
        capture_bodies(x, rate, raw, x.content_type, bytes(response.body), "application/json", route=route)
    return response


@router.post(
    "/{name}/predict", summary="Predict with the production version (or ?version=)", openapi_extra=_ANY_JSON
)
async def predict(name: str, request: Request, version: str | None = None) -> Response:
    return await _model_predict(request)


@router.post(
    "/{name}/versions/{version}/predict",
    summary="Predict with a version number or alias",
    openapi_extra=_ANY_JSON,
)
async def predict_version(name: str, version: str, request: Request) -> Response:
    return await _model_predict(request)


@router.post("/{name}/batch", summary="Many inputs in one call, answered in order", openapi_extra=_BATCH_JSON)
async def batch(name: str, request: Request, version: str | None = None) -> JSONResponse:
    return await _batch(request, name, version_ref(version))


@router.post(
    "/{name}/versions/{version}/batch",
    summary="Batch against a version number or alias",
    openapi_extra=_BATCH_JSON,
)
async def batch_version(name: str, version: str, request: Request) -> JSONResponse:
    return await _batch(request, name, version_ref(version))
