"""Open Inference Protocol (KServe v2) REST routes.

Health answers 200 for true and 400 for false, as the protocol asks. Tensors arrive as
``{"name", "shape", "datatype", "data"}``; each row of the batch dimension is one item
for the model's batcher, so v2 calls batch with everything else.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from mlgate import __version__
from mlgate.errors import InvalidInput
from mlgate.http.capturing import capture_bodies
from mlgate.http.deps import exchange_of, json_body, route_template, server_of, version_ref
from mlgate.http.gateway import (
    VERSION_HEADER,
    admit,
    authenticate,
    caller_identity,
    known_model,
    pinned_version,
)
from mlgate.http.jsonio import JSONResponse

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_NAMES = {np.dtype(t).name: n for n, t in DTYPES.items()}
MAX_ELEMENTS = 16_000_000
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype", "data"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                                    "datatype": {"type": "string", "enum": sorted(DTYPES)},
                                    "data": {},
                                },
                            },
                        },
                    },
                }
            }
        },
    }
}


def _tensor(spec: Any) -> tuple[str, np.ndarray]:
    if not isinstance(spec, dict):
        raise InvalidInput("each input is an object {name, shape, datatype, data}")
    name, shape, datatype, data = (spec.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str) or not name:
        raise InvalidInput("input.name must be a non-empty string")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"input '{name}': shape must be a list of non-negative integers")
    if datatype not in DTYPES:
        raise InvalidInput(f"input '{name}': datatype must be one of {', '.join(sorted(DTYPES))}")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise InvalidInput(f"input '{name}': at most {MAX_ELEMENTS} elements")
    try:
        flat = np.asarray(data, dtype=DTYPES[datatype]).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input '{name}': data does not match datatype {datatype}") from None
    if flat.size != count:
        raise InvalidInput(f"input '{name}': {flat.size} values do not fill shape {shape}")
    if flat.dtype.kind == "f" and not np.all(np.isfinite(flat)):
        raise InvalidInput(f"input '{name}': NaN and infinite values are refused")
    return name, flat.reshape(shape)


def _output(name: str, array: np.ndarray) -> dict[str, Any]:
    array = np.asarray(array)
    datatype = _NAMES.get(array.dtype.name)
    if datatype is None:
        array = array.astype(np.float64)
        datatype = "FP64"
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "data": array.reshape(-1).tolist(),
    }


@router.get("/health/live", summary="Server liveness")
async def live() -> JSONResponse:
    return JSONResponse({"live": True})


@router.get("/health/ready", summary="Server readiness")
async def ready(request: Request) -> JSONResponse:
    server = server_of(request)
    ok = server.dataplane.ready and not server.draining
    return JSONResponse({"ready": ok}, status_code=200 if ok else 400)


@router.get("", summary="Server metadata")
async def server_metadata() -> JSONResponse:
    return JSONResponse({"name": "mlgate", "version": __version__, "extensions": []})


async def _metadata(request: Request, name: str, ref: str | int | None) -> JSONResponse:
    await authenticate(exchange_of(request), model=name)
    dataplane = server_of(request).dataplane
    info = await dataplane.resolve(name, ref)
    loaded = await dataplane.ensure_loaded(info)
    meta = loaded.runtime.metadata()
    return JSONResponse(
        {
            "name": name,
            "versions": [str(info.version)],
            "platform": info.manifest.runtime,
            "inputs": meta.get("inputs", []),
            "outputs": meta.get("outputs", []),
        }
    )


async def _ready(request: Request, name: str, ref: str | int | None) -> JSONResponse:
    await authenticate(exchange_of(request), model=name)
    dataplane = server_of(request).dataplane
    info = await dataplane.resolve(name, ref)
    ok = dataplane.is_loaded(info.model, info.version)
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 400)


async def _infer(request: Request, name: str, ref: str | int | None) -> JSONResponse:
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise InvalidInput('an inference request is {"inputs": [{name, shape, datatype, data}, ...]}')
    tensors = dict(_tensor(spec) for spec in body["inputs"])
    rows = next(iter(tensors.values())).shape[0] if next(iter(tensors.values())).ndim else 1
    if rows < 1:
        raise InvalidInput("an inference request needs at least one row (the first dimension is 0)")
    x = exchange_of(request)
    await admit(x, model=name, cost=max(1, int(rows)), check=known_model(x, name, ref))
    pin = pinned_version(x)
    info, outputs = await server_of(request).dataplane.infer_tensors(
        name, tensors, version=ref if pin is None else pin, who=caller_identity(x)
    )
    x.model = info.model
    x.version = str(info.version)
    response: dict[str, Any] = {
        "model_name": info.model,
        "model_version": str(info.version),
        "outputs": [_output(n, a) for n, a in outputs.items()],
    }
    if isinstance(body.get("id"), str):
        response["id"] = body["id"]
    answer = JSONResponse(response, headers={VERSION_HEADER: str(info.version)})
    rate = x.server.capture.rate(info.model)
    if rate > 0.0:  # data capture (one dict lookup when off)
        raw = await request.body()
        route = route_template(request)
        capture_bodies(x, rate, raw, x.content_type, bytes(answer.body), "application/json", route=route)
    return answer


@router.get("/models/{name}", summary="Model metadata")
async def model_metadata(name: str, request: Request) -> JSONResponse:
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", summary="Model version metadata")
async def version_metadata(name: str, version: str, request: Request) -> JSONResponse:
    return await _metadata(request, name, version_ref(version))


@router.get("/models/{name}/ready", summary="Model readiness")
async def model_ready(name: str, request: Request) -> JSONResponse:
    return await _ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model version readiness")
async def version_ready(name: str, version: str, request: Request) -> JSONResponse:
    return await _ready(request, name, version_ref(version))


@router.post("/models/{name}/infer", summary="Inference", openapi_extra=_INFER_BODY)
async def infer(name: str, request: Request) -> JSONResponse:
    return await _infer(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer", summary="Inference on a version", openapi_extra=_INFER_BODY
)
async def infer_version(name: str, version: str, request: Request) -> JSONResponse:
    return await _infer(request, name, version_ref(version))
