"""The one handler that maps errors to JSON: ``{"error": {"code", "message"[, "details"]}}``."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from mlgate.errors import MlgateError
from mlgate.http.gateway import GatewayRejected
from mlgate.http.jsonio import JSONResponse

__all__ = ["error_response", "install_error_handlers", "response_for"]

log = logging.getLogger("mlgate.http")


def error_response(exc: MlgateError) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status, headers=headers)


def response_for(exc: Exception, *, method: str, path: str) -> Response:
    """The answer for an exception raised on the edge's hot path: what the handlers below give."""
    if isinstance(exc, GatewayRejected):
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)
    if isinstance(exc, MlgateError):
        return error_response(exc)
    log.exception("unhandled error on %s %s", method, path, exc_info=exc)
    return _internal()


def _internal() -> JSONResponse:
    return JSONResponse({"error": {"code": "internal", "message": "internal server error"}}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
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
            {"error": {"code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    app.add_exception_handler(GatewayRejected, on_error)
    app.add_exception_handler(MlgateError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_error)
