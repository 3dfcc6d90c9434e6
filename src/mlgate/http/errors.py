"""The one handler that maps errors to JSON: ``{"error": {"code", "message"[, "details"]}}``.

One rule by path: on the Open Inference Protocol's ``/v2`` paths every error — mlgate's, a
validation error, a gateway refusal (401/403/429), the edge's own (408/413/431, 503 shed) —
is the protocol's ``{"error": "<message>"}``, with the same status and headers
(:func:`oip_error_body`); on the native API's ``/v1`` paths every error is ``{"error": {"code",
"message", ...}}`` — a gateway refusal keeps API Gateway's ``message`` beside it
(:func:`native_refusal_body`); the seed routes keep their own envelopes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from mlgate.errors import MlgateError, public_text
from mlgate.http.exchange import CLIENT_CLOSED
from mlgate.http.gateway import GatewayRejected, retry_headers
from mlgate.http.jsonio import JSONResponse
from mlgate.http.wire import WireResponse

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

__all__ = [
    "error_parts",
    "error_response",
    "install_error_handlers",
    "is_oip_path",
    "oip_error_body",
    "response_for",
    "wire_error",
]

log = logging.getLogger("mlgate.http")


_OIP_NO_ROUTE = (
    "no such Open Inference Protocol route: mlgate serves health, server and model metadata, model "
    "readiness and inference (with the binary_tensor_data extension); Triton's model repository, "
    "configuration, statistics, trace, logging and shared-memory extensions are not implemented"
)


def error_response(exc: MlgateError) -> JSONResponse:
    status, body, headers = _mlgate_error(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def response_for(exc: Exception, *, method: str, path: str) -> Response:
    """The answer for an exception, as FastAPI's handlers (below) give it."""
    status, body, headers = error_parts(exc, method=method, path=path)
    return JSONResponse(body, status_code=status, headers=headers)


def wire_error(exc: Exception, *, method: str, path: str) -> WireResponse:
    """The same answer for a predict route's raw request (:mod:`mlgate.http.wire`)."""
    status, body, headers = error_parts(exc, method=method, path=path)
    return WireResponse.json(body, status, headers)


def is_oip_path(path: str) -> bool:
    """True on the Open Inference Protocol's paths (``/v2``, ``/v2/...``)."""
    return path.startswith("/v2") and (len(path) == 3 or path[3] == "/")


def oip_error_body(body: Any) -> dict[str, str]:
    """Any error body rendered the protocol's way: ``{"error": "<message>"}`` (the message of
    ``{"error": {"message"}}``, ``{"error": "..."}`` or API Gateway's ``{"message"}``)."""
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        if message is None:
            message = body.get("message")
    return {"error": message if isinstance(message, str) and message else "request failed"}


def error_parts(exc: Exception, *, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
    """``(status, JSON body, headers)`` for any exception: gateway refusals keep their rendered
    shape, mlgate errors give ``{"error": {...}}`` with their status, anything else is a logged 500;
    on ``/v2`` paths the body is the protocol's ``{"error": "<message>"}`` (same status, headers)."""
    status, body, headers = _error_parts(exc, method=method, path=path)
    if is_oip_path(path):
        return status, oip_error_body(body), headers
    if isinstance(exc, GatewayRejected) and is_native_path(path):
        return status, native_refusal_body(status, body, exc.code), headers
    return status, body, headers


def is_native_path(path: str) -> bool:
    """True on the native API's paths (``/v1/...``)."""
    return path.startswith("/v1/")


#: the code of a gateway refusal rendered without one (a route's own refusal)
_STATUS_CODES = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    429: "throttled",
    503: "unavailable",
}


def native_refusal_body(status: int, body: Any, code: str | None) -> Any:
    """A gateway refusal on the native API in its one envelope: ``{"error": {"code", "message"}}``,
    keeping API Gateway's top-level ``message`` next to it (SPEC §3.1: ``{"message":
    "Forbidden"}``, ``"Too Many Requests"``, ``"Limit Exceeded"``; clients written for API
    Gateway read it). Bodies already in another shape are left alone."""
    if not isinstance(body, dict) or set(body) != {"message"} or not isinstance(body["message"], str):
        return body
    error = {"code": code or _STATUS_CODES.get(status, f"http_{status}"), "message": body["message"]}
    return {"error": error, **body}


def _error_parts(exc: Exception, *, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
    if isinstance(exc, GatewayRejected):
        return exc.status, exc.body, exc.headers
    if isinstance(exc, MlgateError):
        if exc.status >= 500 and exc.args and exc.args[0] != exc.message:
            # The client got the public text (no paths, no object reprs); the log gets the rest.
            log.warning("%s %s answered %d: %s", method, path, exc.status, exc.args[0])
        return _mlgate_error(exc)
    if isinstance(exc, ClientDisconnect):  # the client left mid-body: nobody reads this, nothing to log
        return CLIENT_CLOSED, {"error": {"code": "client_closed", "message": "client closed the request"}}, {}
    log.exception("unhandled error on %s %s", method, path, exc_info=exc)
    return 500, {"error": {"code": "internal", "message": "internal server error"}}, {}


def _mlgate_error(exc: MlgateError) -> tuple[int, Any, dict[str, str]]:
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        retry_headers(retry_after, headers)
    return exc.status, {"error": exc.to_dict()}, headers


def install_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError

    async def on_error(request: Request, exc: Exception) -> Response:
        # Gateway refusals, mlgate errors and anything unexpected: the edge's own rendering.
        return response_for(exc, method=request.method, path=request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        body = {
            "error": {
                "code": "invalid_request",
                "message": "request does not match the schema",
                "details": {"errors": errors},
            }
        }
        if is_oip_path(request.url.path):
            return JSONResponse(oip_error_body(body), status_code=422)
        return JSONResponse(body, status_code=422)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body: dict[str, Any] = {"error": {"code": code, "message": public_text(str(exc.detail))}}
        if is_oip_path(request.url.path):
            body = {"error": _OIP_NO_ROUTE if exc.status_code == 404 else public_text(str(exc.detail))}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(GatewayRejected, on_error)
    app.add_exception_handler(MlgateError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_error)
