"""The gateway at the edge: run the core :class:`Gate` for a request and render its refusals.

Refusals keep API Gateway's shapes, which existing clients know: 403
``{"message": "Forbidden"}``, 429 ``{"message": "Too Many Requests"}`` / ``{"message":
"Limit Exceeded"}`` with ``Retry-After``; on a service's original routes throttling reads
``{"error": ...}`` and 401 uses the service's own envelope. Rate-limit headers ride on
every keyed response (the edge middleware adds them from ``request.state``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fastapi import Request

from mlgate.access.gate import Admission
from mlgate.errors import MlgateError, QuotaExceeded, Throttled, Unauthorized
from mlgate.types import AuthMode

__all__ = ["GatewayRejected", "admit", "authenticate", "bearer_token"]

ErrorRenderer = Callable[[int, str], tuple[int, Any]]


class GatewayRejected(Exception):
    """A refusal already rendered: status, JSON body and headers."""

    def __init__(self, status: int, body: Any, headers: dict[str, str]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def admit(
    request: Request,
    *,
    model: str | None,
    declared: AuthMode = "default",
    original: ErrorRenderer | None = None,
    cost: int = 1,
) -> Admission:
    """Authenticate and meter this request (raises :class:`GatewayRejected`)."""
    from mlgate.http.deps import server_of

    gate = server_of(request).gate
    path = _path(request)
    mode = gate.mode_for(declared=declared, model=model, path=path)
    state = request.state
    try:
        admission = await gate.admit(
            mode=mode,
            api_key=request.headers.get("x-api-key"),
            bearer=bearer_token(request),
            scope=model or path,
            cost=cost,
        )
    except MlgateError as exc:
        server_of(request).metrics.gateway_rejections.labels(exc.code).inc()
        headers = dict(getattr(exc, "headers", {}) or {})
        raise _rejection(exc, headers, original) from None
    state.admission = admission
    state.key_id = admission.caller.id
    state.rate_headers = admission.headers
    return admission


def _path(request: Request) -> str:
    """``request.url.path`` without building the whole URL (host, scheme, query) per request."""
    path: str = request.scope["path"]
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def _rejection(exc: MlgateError, headers: dict[str, str], original: ErrorRenderer | None) -> GatewayRejected:
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
        if original is not None:
            status, body = original(exc.status, exc.message)
            return GatewayRejected(status, body, headers)
    if original is not None and isinstance(exc, Throttled | QuotaExceeded):
        return GatewayRejected(exc.status, {"error": exc.message}, headers)
    return GatewayRejected(exc.status, {"message": exc.message}, headers)


async def authenticate(request: Request, *, model: str | None = None) -> None:
    """Authenticate without metering (model listings and metadata): same rule as the model routes."""
    from mlgate.http.deps import server_of

    gate = server_of(request).gate
    mode = gate.mode_for(declared="default", model=model, path=_path(request))
    try:
        caller = await gate.authenticate(
            mode=mode, api_key=request.headers.get("x-api-key"), bearer=bearer_token(request)
        )
    except MlgateError as exc:
        raise _rejection(exc, {}, None) from None
    request.state.key_id = caller.id
