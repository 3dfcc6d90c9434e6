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
from typing import TYPE_CHECKING, Any

from mlgate.access.gate import Admission
from mlgate.errors import MlgateError, QuotaExceeded, Throttled, Unauthorized
from mlgate.types import AuthMode

if TYPE_CHECKING:
    from starlette.requests import Request

    from mlgate.http.app import Server

__all__ = ["GatewayRejected", "admit", "admit_parts", "authenticate", "bearer_of", "bearer_token"]

ErrorRenderer = Callable[[int, str], tuple[int, Any]]


class GatewayRejected(Exception):
    """A refusal already rendered: status, JSON body and headers."""

    def __init__(self, status: int, body: Any, headers: dict[str, str]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers


def bearer_token(request: Request) -> str | None:
    return bearer_of(request.headers.get("authorization"))


def bearer_of(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
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

    return await admit_parts(
        server_of(request),
        request.scope.setdefault("state", {}),
        path=request.scope["path"],
        api_key=request.headers.get("x-api-key"),
        authorization=request.headers.get("authorization"),
        model=model,
        declared=declared,
        original=original,
        cost=cost,
    )


async def admit_parts(
    server: Server,
    state: dict[str, Any],
    *,
    path: str,
    api_key: str | None,
    authorization: str | None,
    model: str | None,
    declared: AuthMode = "default",
    original: ErrorRenderer | None = None,
    cost: int = 1,
) -> Admission:
    """:func:`admit` from a request's parts (the predict routes' raw requests).

    ``state`` is the request's state dict (``scope["state"]``): the admission, the key id and the
    rate-limit headers go there for the edge.
    """
    gate = server.gate
    path = _escaped(path)
    mode = gate.mode_for(declared=declared, model=model, path=path)
    try:
        admission = await gate.admit(
            mode=mode,
            api_key=api_key,
            bearer=bearer_of(authorization),
            scope=model or path,
            cost=cost,
        )
    except MlgateError as exc:
        server.metrics.gateway_rejections.labels(exc.code).inc()
        headers = dict(getattr(exc, "headers", {}) or {})
        raise _rejection(exc, headers, original) from None
    state["admission"] = admission
    state["key_id"] = admission.caller.id
    state["rate_headers"] = admission.headers
    return admission


def _escaped(path: str) -> str:
    """The path as ``request.url.path`` gives it, without building the whole URL per request."""
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
    mode = gate.mode_for(declared="default", model=model, path=_escaped(request.scope["path"]))
    try:
        caller = await gate.authenticate(
            mode=mode, api_key=request.headers.get("x-api-key"), bearer=bearer_token(request)
        )
    except MlgateError as exc:
        raise _rejection(exc, {}, None) from None
    request.state.key_id = caller.id
