"""Open Inference Protocol (KServe v2) REST routes.

Health answers 200 for true and 400 for false, as the protocol asks. Tensors arrive as
``{"name", "shape", "datatype", "data"}`` in JSON, or in binary after a JSON header (the
``binary_tensor_data`` extension, tritonclient's default: :mod:`mlgate.http.tensors_v2`), are
held to the model's metadata (unknown or missing inputs, a datatype or shape the model does not
declare, an unknown requested output: 400) after authentication and before any metering, and
each row of the batch dimension is one item for the model's batcher, so v2 calls batch with
everything else. Errors on ``/v2`` are the protocol's ``{"error": "<message>"}``
(:func:`mlgate.http.errors.error_parts`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlgate import __version__
from mlgate.errors import InvalidInput, NotFound
from mlgate.http.capturing import capture_bodies
from mlgate.http.deps import exchange_of, route_template, server_of, version_ref
from mlgate.http.exchange import Exchange
from mlgate.http.gateway import (
    VERSION_HEADER,
    Units,
    admit,
    authenticate,
    caller_identity,
    known_model,
    pinned_version,
)
from mlgate.http.jsonio import JSONResponse
from mlgate.http.tensors_v2 import (
    BINARY_CONTENT_TYPE,
    DATATYPES,
    HEADER_LENGTH,
    InferRequest,
    check_inputs,
    check_outputs,
    encode_response,
    parse_request,
    rows_of,
)

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

#: The protocol extensions ``GET /v2`` lists (Triton's names).
EXTENSIONS = ["binary_tensor_data"]
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "data": {"description": "row-major values; BYTES: strings (an image: its base64 text)"},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
    },
}
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
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {"binary_data": {"type": "boolean"}},
                                    },
                                },
                            },
                        },
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data_output": {"type": "boolean"}},
                        },
                    },
                }
            },
            BINARY_CONTENT_TYPE: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": f"the JSON header ({HEADER_LENGTH} bytes), then the inputs' binary data",
                }
            },
        },
    }
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
    return JSONResponse({"name": "mlgate", "version": __version__, "extensions": EXTENSIONS})


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


class _Parsed:
    """What the admission check read and parsed (the body, for capture; the request)."""

    __slots__ = ("raw", "request")

    def __init__(self) -> None:
        self.raw = b""
        self.request: InferRequest | None = None


def _checked(
    request: Request, x: Exchange, name: str, ref: str | int | None, into: _Parsed
) -> Callable[[], Awaitable[Any]]:
    """An :func:`admit` check, run after authentication (an anonymous caller learns nothing and
    costs no parse) and before metering: the model exists (:func:`known_model`), then the body is
    read and parsed, its rows capped, and the request held to the model's metadata. Its cost is
    its rows (one unit each)."""
    known = known_model(x, name, ref)

    async def check() -> Any:
        info = await known()
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise InvalidInput(f"Content-Encoding {encoding} is not supported: send the request uncompressed")
        into.raw = await request.body()
        parsed = into.request = parse_request(into.raw, request.headers.getlist(HEADER_LENGTH))
        rows = rows_of(parsed)  # before anything is decoded
        loaded = await x.server.dataplane.ensure_loaded(info)
        metadata = loaded.runtime.metadata()
        check_inputs(name, metadata, parsed)
        check_outputs(name, metadata, parsed)
        queue = info.manifest.batching.max_queue
        if rows > queue:  # it could never be queued whole: not a 503 to retry
            raise InvalidInput(
                f"model '{name}' queues at most {queue} rows: this request has {rows}, split it"
            )
        return Units(rows)

    return check


async def _infer(request: Request, name: str, ref: str | int | None) -> Response:
    x = exchange_of(request)
    read = _Parsed()
    await admit(x, model=name, check=_checked(request, x, name, ref, read))
    parsed = read.request
    assert parsed is not None  # the check parsed it
    pin = pinned_version(x)
    info, outputs = await server_of(request).dataplane.infer_tensors(
        name, parsed.tensors, version=ref if pin is None else pin, who=caller_identity(x)
    )
    x.model = info.model
    x.version = str(info.version)
    head: dict[str, Any] = {"model_name": info.model, "model_version": str(info.version)}
    if parsed.id is not None:
        head["id"] = parsed.id
    body, headers, content_type = encode_response(info.model, head, outputs, parsed)
    answer = Response(body, media_type=content_type, headers={VERSION_HEADER: str(info.version), **headers})
    rate = x.server.capture.rate(info.model)
    if rate > 0.0:  # data capture (one dict lookup when off)
        route = route_template(request)
        capture_bodies(x, rate, read.raw, x.content_type, body, content_type, route=route)
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
async def infer(name: str, request: Request) -> Response:
    return await _infer(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer", summary="Inference on a version", openapi_extra=_INFER_BODY
)
async def infer_version(name: str, version: str, request: Request) -> Response:
    return await _infer(request, name, version_ref(version))


_NO_CONFIG = (
    "model configuration is Triton's model_configuration extension, which mlgate does not implement: "
    "GET /v2/models/{name} gives the model's metadata (inputs, outputs, datatypes, shapes)"
)


@router.get("/models/{name}/config", include_in_schema=False)
async def model_config(name: str) -> JSONResponse:
    raise NotFound(_NO_CONFIG)


@router.get("/models/{name}/versions/{version}/config", include_in_schema=False)
async def version_config(name: str, version: str) -> JSONResponse:
    raise NotFound(_NO_CONFIG)
