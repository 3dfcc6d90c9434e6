"""The one handler that maps errors to JSON: ``{"error": {"code", "message"[, "details"]}}``."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from mlgate.errors import MlgateError, public_text
from mlgate.http.exchange import CLIENT_CLOSED
from mlgate.http.gateway import GatewayRejected
from mlgate.http.jsonio import JSONResponse
from mlgate.http.wire import WireResponse

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

__all__ = ["error_parts", "error_response", "install_error_handlers", "response_for", "wire_error"]

log = logging.getLogger("mlgate.http")


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


def error_parts(exc: Exception, *, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
    """``(status, JSON body, headers)`` for any exception: gateway refusals keep their rendered
    shape, mlgate errors give ``{"error": {...}}`` with their status, anything else is a logged 500."""
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
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return exc.status, {"error": exc.to_dict()}, headers


def install_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError

    async def on_error(request: Request, exc: Exception) -> Response:
        # Gateway refusals, mlgate errors and anything unexpected: the edge's own rendering.
        return response_for(exc, method=request.method, path=request.url.path)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        body = {
            "error": {
                "code": "invalid_request",
                "message": "request does not match the schema",
                "details": {"errors": errors},
            }
        }
        return JSONResponse(body, status_code=422)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": {"code": code, "message": public_text(str(exc.detail))}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    app.add_exception_handler(GatewayRejected, on_error)
    app.add_exception_handler(MlgateError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_error)
