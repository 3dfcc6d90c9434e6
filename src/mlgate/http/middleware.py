"""The edge (pure ASGI, the outermost layer): load shedding, request id, body size limit,
metrics, access log — and the predict routes' hot path.

The edge wraps the whole FastAPI app (:class:`mlgate.http.app.MlgateApp` calls it first). A
request for a predict route (:class:`~mlgate.http.serving.ServingRoutes`) is served here, its
endpoint called directly and its errors rendered as the app's handlers render them; every
other request goes on to FastAPI.

Load shedding: past ``max_inflight`` requests in this process, a request is answered 503 +
``Retry-After`` at once instead of joining a queue that only grows under overload (where
each extra request in flight also costs the event loop throughput). A shed request costs
the event loop as little as possible, so refusing the excess does not eat the capacity it
protects: it is counted (``mlgate_http_requests{route="(shed)"}``) and summarised in one
warning per 10 s, not written to the access log line by line. Health, readiness and
metrics are never shed.

Load shedding runs first of all, before a request id or anything else is made, so a refusal
costs little more than uvicorn's own parsing of the request. Pure ASGI rather than
BaseHTTPMiddleware: no extra task or stream copy per request.
Handlers report the model/version they served in ``request.state`` (``scope["state"]``),
which this layer reads back for the access log.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlgate.errors import Overloaded, PayloadTooLarge
from mlgate.http.errors import response_for
from mlgate.http.serving import ServingRoutes
from mlgate.telemetry.access_log import AccessLog, AccessRecord
from mlgate.telemetry.metrics import Metrics

__all__ = ["RESERVED", "Edge"]

#: Scope key set by :class:`mlgate.http.protocol.SheddingProtocol` on a request it admitted and
#: counted in :attr:`Edge.inflight` already (at parse time, before its ASGI task runs).
RESERVED = "mlgate.inflight_reserved"

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Never shed: probes must see the truth under load.
_NOT_SHED = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
_SHED_BODY = orjson.dumps({"error": Overloaded("server is at capacity; retry shortly").to_dict()})
_SHED_START: Message = {
    "type": "http.response.start",
    "status": 503,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_SHED_BODY)).encode()),
        (b"retry-after", b"1"),
    ],
}
_SHED_END: Message = {"type": "http.response.body", "body": _SHED_BODY}
_SHED_WARN_EVERY_S = 10.0
_MAX_LABEL_SETS = 1024
log = logging.getLogger("mlgate.http")


class Edge:
    """The outermost layer: ``app`` is the rest of the application (FastAPI's stack); ``owner``
    is the application object routes see as ``request.app`` (``scope["app"]``)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        owner: Any,
        serving: ServingRoutes | None = None,
        bypass_cross_origin: bool = False,
        max_body_bytes: int,
        metrics: Metrics,
        access_log: AccessLog,
        path_limits: dict[str, int] | None = None,
        max_inflight: int = 0,
        usage_sync: bool = False,
    ) -> None:
        self.app = app
        self.owner = owner
        self.serving = serving or ServingRoutes()
        # With CORS configured, cross-origin requests need FastAPI's CORS middleware.
        self.bypass_cross_origin = bypass_cross_origin
        self.usage_sync = usage_sync
        self.max_inflight = max_inflight
        self.inflight = 0
        self._shed = 0  # shed since the last warning
        self._shed_warned = 0.0
        self.max_body_bytes = max_body_bytes
        self.path_limits = path_limits or {}
        self.metrics = metrics
        self.access_log = access_log
        # (route, method, status) -> the two metric children: resolved once, not per request
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._shed_counters: dict[str, Any] = {}
        self._shed_raw: tuple[list[tuple[bytes, bytes]], bool, bytes] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A request the protocol admitted holds a slot already (see mlgate.http.protocol).
        reserved = scope.pop(RESERVED, False)
        if not reserved and 0 < self.max_inflight <= self.inflight and scope["path"] not in _NOT_SHED:
            self.count_shed(scope["method"])
            await send(_SHED_START)
            await send(_SHED_END)
            return
        started = time.perf_counter()
        request_id, cross_origin, content_length = _scan_headers(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        limit = self.path_limits.get(scope["path"], self.max_body_bytes)
        received = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.usage_sync and state.get("admission") is not None:
                    # Usage durable before the client sees the answer (group commit).
                    server = self.owner.state.server
                    server.gate.record(state.pop("admission"), outcome="ok" if status < 400 else "error")
                    await server.usage.wait_flushed()
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                for name, value in (state.get("rate_headers") or {}).items():
                    headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An MlgateError, so the app's one error handler answers it (413 JSON).
                    raise PayloadTooLarge(f"request body exceeds {limit} bytes")
            return message

        if not reserved:
            self.inflight += 1
        try:
            if content_length > limit:
                await self._send_413(send_wrapper, limit)
            elif (served := self._match(scope, cross_origin)) is not None:
                route, params = served
                scope["app"] = self.owner
                scope["route"] = route
                scope["path_params"] = params
                try:
                    response = await route.endpoint(Request(scope, receive_wrapper))
                except Exception as exc:
                    response = response_for(exc, method=scope["method"], path=scope["path"])
                await response(scope, receive_wrapper, send_wrapper)
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            self.inflight -= 1
            elapsed = time.perf_counter() - started
            admission = state.get("admission")
            if admission is not None:
                # Durable usage, batched by the recorder: no I/O here.
                outcome = "ok" if status < 400 else "error"
                self.owner.state.server.gate.record(admission, outcome=outcome)
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            key = (template, scope["method"], status)
            children = self._children.get(key)
            if children is None:
                children = (
                    self.metrics.http_requests.labels(template, scope["method"], str(status)),
                    self.metrics.http_latency.labels(template),
                )
                if len(self._children) < _MAX_LABEL_SETS:  # methods are client-chosen: bounded
                    self._children[key] = children
            children[0].inc()
            children[1].observe(elapsed)
            self.access_log.write(
                AccessRecord(
                    method=scope["method"],
                    url=_url(scope),
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                    request_id=request_id,
                    model=state.get("model"),
                    version=state.get("version"),
                    key_id=state.get("key_id"),
                    client=scope["client"][0] if scope.get("client") else None,
                )
            )

    async def _send_413(self, send: Send, limit: int) -> None:
        body = orjson.dumps(
            {"error": {"code": "payload_too_large", "message": f"request body exceeds {limit} bytes"}}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _match(self, scope: Scope, cross_origin: bool) -> Any:
        if scope.get("root_path") or (cross_origin and self.bypass_cross_origin):
            return None
        return self.serving.match(scope["method"], scope["path"])

    # -- load shedding (also used by mlgate.http.protocol, before a request reaches ASGI) --

    def at_capacity(self) -> bool:
        return 0 < self.max_inflight <= self.inflight

    def reserve(self, scope: dict[str, Any]) -> None:
        """Count a request admitted at parse time in flight now, not when its task starts: a burst
        parsed in one loop iteration would otherwise all pass the protocol's check and then be
        refused one by one in ASGI, at twice the cost."""
        self.inflight += 1
        scope[RESERVED] = True

    @staticmethod
    def sheds(path: str) -> bool:
        return path not in _NOT_SHED

    def shed_response(self, default_headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
        """The shed answer as raw HTTP/1.1 bytes, with the server's default headers (date)."""
        cached = self._shed_raw
        if cached is not None and cached[0] is default_headers and cached[1] == keep_alive:
            return cached[2]
        lines = [b"HTTP/1.1 503 Service Unavailable\r\n"]
        lines.extend(b"%s: %s\r\n" % (name, value) for name, value in default_headers)
        lines.extend(b"%s: %s\r\n" % (name, value) for name, value in _SHED_START["headers"])
        if not keep_alive:
            lines.append(b"connection: close\r\n")
        raw = b"".join(lines) + b"\r\n" + _SHED_BODY
        self._shed_raw = (default_headers, keep_alive, raw)
        return raw

    def count_shed(self, method: str) -> None:
        """A shed request (503 + Retry-After, body unread, app not run): counted, not logged."""
        counter = self._shed_counters.get(method)
        if counter is None:
            counter = self.metrics.http_requests.labels("(shed)", method, "503")
            if len(self._shed_counters) < _MAX_LABEL_SETS:  # methods are client-chosen: bounded
                self._shed_counters[method] = counter
        counter.inc()
        self._shed += 1
        now = time.monotonic()
        if now - self._shed_warned >= _SHED_WARN_EVERY_S:
            log.warning(
                "overloaded: shed %d requests with 503 (%d in flight, max_inflight=%d)",
                self._shed,
                self.inflight,
                self.max_inflight,
            )
            self._shed, self._shed_warned = 0, now


# Generated request ids: 128 random bits as 32 hex digits, like ``uuid4().hex``, but from a
# generator seeded once per process (reseeded in a forked child) instead of an
# ``os.urandom`` system call per request, which cost ~15 % of a W1 request here. Request
# ids only correlate log lines; they are not secrets.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def _scan_headers(scope: Scope) -> tuple[str, bool, int]:
    """One pass over the headers: (request id, cross-origin?, declared content length)."""
    request_id = ""
    cross_origin = False
    length = 0
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = 0
        elif name == b"x-request-id" and not request_id:
            candidate = value.decode("latin-1")
            request_id = candidate if _REQUEST_ID.match(candidate) else "-"
        elif name == b"origin":
            cross_origin = True
    if not request_id or request_id == "-":
        request_id = f"{_ids.getrandbits(128):032x}"
    return request_id, cross_origin, length


def _url(scope: Scope) -> str:
    path: str = scope.get("path", "")
    query: bytes = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path
