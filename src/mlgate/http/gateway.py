"""The gateway at the edge: run the core :class:`Gate` for a request and render its refusals.

Refusals keep API Gateway's shapes, which existing clients know: 403
``{"message": "Forbidden"}``, 429 ``{"message": "Too Many Requests"}`` / ``{"message":
"Limit Exceeded"}`` with ``Retry-After`` (whole seconds) and ``Retry-After-Ms`` (the precise wait,
see :func:`retry_headers`); on a service's original routes throttling reads
``{"error": ...}`` and 401 uses the service's own envelope. Rate-limit headers ride on
every keyed response (the exchange adds them from its admission).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from mlgate.access.gate import Admission
from mlgate.access.sessions import dashboard_cookie
from mlgate.errors import Forbidden, InvalidInput, MlgateError, QuotaExceeded, Throttled, Unauthorized
from mlgate.http.exchange import Exchange
from mlgate.types import NAME_PATTERN, AuthMode, Caller

__all__ = [
    "PIN_HEADER",
    "GatewayRejected",
    "Units",
    "admit",
    "authenticate",
    "bearer_of",
    "caller_identity",
    "known_model",
    "pinned_version",
    "retry_headers",
]

ErrorRenderer = Callable[[int, str], tuple[int, Any]]

#: The request header that pins a version (admins only: testing a canary or a shadow).
PIN_HEADER = b"x-mlgate-version"
#: The answer header naming the version that answered (a split's callers see theirs).
VERSION_HEADER = "X-Model-Version"
#: The precise wait next to ``Retry-After`` (docs/client.md): the draft IETF ``RateLimit`` field's
#: reset (``t``) is whole seconds too, so clients that read milliseconds (OpenAI's, Azure's) get them.
RETRY_AFTER_MS = "Retry-After-Ms"


class GatewayRejected(Exception):
    """A refusal already rendered: status, JSON body and headers; ``code`` is the mlgate error
    code it stands for (the native API's envelope carries it: :mod:`mlgate.http.errors`)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str], code: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers
        self.code = code


def bearer_of(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def admit(
    x: Exchange,
    *,
    model: str | None,
    declared: AuthMode = "default",
    original: ErrorRenderer | None = None,
    cost: int = 1,
    scope: str | None = None,
    check: Callable[[], Awaitable[Any]] | None = None,
) -> Admission:
    """Authenticate and meter the request ``x`` (raises :class:`GatewayRejected`).

    Validate before side effects: when the model name (or whatever ``scope`` names) came from
    the client, ``check`` proves it exists — after authentication (an anonymous caller learns
    nothing) and before any metering or usage row, so nothing a client types becomes a usage
    scope. The usage scope is ``scope``, else the model's name, else the route's path.
    On success the admission is the exchange's: its rate-limit headers ride on the answer and
    its usage is recorded when the exchange closes.
    """
    server = x.server
    gate = server.gate
    path = _escaped(x.path)
    mode = gate.mode_for(declared=declared, model=model, path=path)
    bearer = bearer_of(x.authorization)
    if check is not None:
        try:
            await gate.authenticate(mode=mode, api_key=x.api_key, bearer=bearer)
        except MlgateError as exc:
            server.metrics.gateway_rejections.labels(exc.code).inc()
            raise _rejection(exc, {}, original) from None
        checked = await check()  # its own errors (400, 404) render as the route's
        if isinstance(checked, Units):
            cost = int(checked)
    if model is not None and x.model is None:  # issue 17: refusals and errors count for their model
        x.model = model
    try:
        admission = await gate.admit(
            mode=mode,
            api_key=x.api_key,
            bearer=bearer,
            scope=scope or model or path,
            route=path,
            cost=cost,
        )
    except MlgateError as exc:
        server.metrics.gateway_rejections.labels(exc.code).inc()
        headers = dict(getattr(exc, "headers", {}) or {})
        if isinstance(exc, Throttled | QuotaExceeded) and x.api_key:  # issue 17: per-key throttled
            key = gate.keys.verify_cached(x.api_key)  # just verified: a cache hit
            if key is not None:
                x.key_id = key.id
        raise _rejection(exc, headers, original) from None
    x.admit(admission)
    return admission


def known_model(
    x: Exchange, name: str, ref: str | int | None = None, payloads: list[Any] | None = None
) -> Callable[[], Awaitable[Any]]:
    """An :func:`admit` ``check`` that the model ``name`` (and version ``ref``) exists: the name's
    syntax first (400), then the registry (404, the alias cache makes it cheap).

    With ``payloads``, the check also prices them — the sum of the model runtime's
    :meth:`~mlgate.runtimes.base.ModelRuntime.units` (a tabular model's list of records costs
    its rows) — and returns that cost, which :func:`admit` then meters."""

    async def check() -> Any:
        if not NAME_PATTERN.match(name):
            raise InvalidInput(
                "model names are 1-64 lowercase letters, digits, '_' or '-', starting with a letter"
            )
        info = await x.server.dataplane.resolve(name, ref)
        if payloads is None:
            return info
        loaded = await x.server.dataplane.ensure_loaded(info)
        if loaded.processor is not None:  # a service's own envelope: one unit per payload
            return Units(len(payloads))
        return Units(sum(loaded.runtime.units(p) for p in payloads))

    return check


class Units(int):
    """What a ``check`` returns to set the request's cost (see :func:`known_model`)."""


def _escaped(path: str) -> str:
    """The path as ``request.url.path`` gives it, without building the whole URL per request."""
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def retry_headers(retry_after: float, headers: dict[str, str]) -> dict[str, str]:
    """Add the wait ``retry_after`` (seconds) to ``headers``: ``Retry-After`` in whole seconds,
    at least 1 (HTTP's delta-seconds), and ``Retry-After-Ms``, the same wait in milliseconds
    rounded up (at least 1) — a bucket that refills in 0.1 s says ``100``, not ``1`` second."""
    headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    headers[RETRY_AFTER_MS] = str(max(1, math.ceil(round(retry_after * 1000.0, 3))))
    return headers


def _rejection(exc: MlgateError, headers: dict[str, str], original: ErrorRenderer | None) -> GatewayRejected:
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        retry_headers(retry_after, headers)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
        if original is not None:
            status, body = original(exc.status, exc.message)
            return GatewayRejected(status, body, headers, exc.code)
    if original is not None and isinstance(exc, Throttled | QuotaExceeded):
        return GatewayRejected(exc.status, {"error": exc.message}, headers, exc.code)
    return GatewayRejected(exc.status, {"message": exc.message}, headers, exc.code)


async def authenticate(x: Exchange, *, model: str | None = None) -> Caller:
    """Authenticate without metering (model listings and metadata): same rule as the model routes."""
    gate = x.server.gate
    mode = gate.mode_for(declared="default", model=model, path=_escaped(x.path))
    # -- a /dashboard session (issue 17): only read-only /v1 GETs marked X-Mlgate-Dashboard: 1,
    # with no other credential; a route's auth mode decides which kinds of caller it takes
    # (an admin's session reads model metadata whatever the mode)
    cookie = None if x.api_key or x.authorization else dashboard_cookie(x.method, x.path, x.headers)
    if cookie is not None and mode != "public":
        session = await x.server.sessions.resolve_async(cookie)
        if session is None:
            raise _rejection(Unauthorized("the dashboard session has ended: sign in again"), {}, None)
        if mode == "either" or (mode == "key") == (session.kind == "key") or session.role == "admin":
            x.key_id = session.id
            return session
    try:
        caller = await gate.authenticate(mode=mode, api_key=x.api_key, bearer=bearer_of(x.authorization))
    except MlgateError as exc:
        raise _rejection(exc, {}, None) from None
    x.key_id = caller.id
    return caller


def caller_identity(x: Exchange) -> str | None:
    """Who a routed alias deals a sticky version to: the key's id (a bearer user's name), else
    the client's address, else nobody (dealt at random)."""
    if x.key_id is not None:
        return x.key_id
    return f"ip:{x.client}" if x.client else None


def pinned_version(x: Exchange) -> int | None:
    """The version an admitted admin pins with ``X-Mlgate-Version: N`` (None without the header).
    Anyone else sending it gets a 403: a customer never chooses a canary by header."""
    raw: bytes | None = None
    for name, value in x.headers:
        if name == PIN_HEADER:
            raw = value
            break
    if raw is None:
        return None
    admission = x.admission
    if admission is None or admission.caller.role != "admin":
        if admission is not None:
            x.unserved = admission.cost  # refused, not served: its quota units are given back
        raise Forbidden("only an admin may pin a version with X-Mlgate-Version")
    text = raw.decode("latin-1").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or not 1 <= int(text) < 2**31:
        raise InvalidInput("X-Mlgate-Version is a version number")
    return int(text)
