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

A predict request whose client disconnects before its answer (the protocol cancels its task)
is logged and counted with status 499 (nginx's "client closed request"); if it was admitted,
its usage is recorded as an error — the plan's token and quota stay taken.

Handlers report the model/version they served in ``request.state`` (``scope["state"]``),
which this layer reads back for the access log.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlgate.errors import Overloaded, PayloadTooLarge
from mlgate.http.errors import wire_error
from mlgate.http.serving import ServingRoute, ServingRoutes
from mlgate.http.wire import KnownHeaders, WireRequest, WireResponse, scan_headers
from mlgate.telemetry.access_log import AccessLog
from mlgate.telemetry.metrics import Metrics

__all__ = ["RESERVED", "Edge", "request_id_for"]

#: Scope key set by :class:`mlgate.http.protocol.MlgateProtocol` on a request it admitted and
#: counted in :attr:`Edge.inflight` already (at parse time, before its ASGI task runs).
RESERVED = "mlgate.inflight_reserved"

#: The status logged for a request whose client went away before its answer (nginx's 499).
CLIENT_CLOSED = 499

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
        known = scan_headers(scope["headers"])
        request_id = request_id_for(known)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        limit = self.path_limits.get(scope["path"], self.max_body_bytes)
        if not reserved:
            self.inflight += 1
        try:
            if known.content_length > limit:
                await self._send_413(send, limit, request_id)
                self.observe("unmatched", scope["method"], 413, started, state, _url(scope), _client(scope))
            elif (served := self._match(scope, known.cross_origin)) is not None:
                await self._serve_asgi(scope, receive, send, served, state, limit, started, known)
            else:
                await self._pass_on(scope, receive, send, state, limit, started)
        finally:
            self.inflight -= 1

    async def _serve_asgi(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        served: tuple[ServingRoute, dict[str, Any]],
        state: dict[str, Any],
        limit: int,
        started: float,
        known: KnownHeaders,
    ) -> None:
        """A predict route over ASGI: the whole body, then :meth:`serve`, then one response."""
        route, params = served
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._send_413(send, limit, state["request_id"])
                self.observe(route.path, scope["method"], 413, started, state, _url(scope), _client(scope))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        request = WireRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b""),
            headers=scope["headers"],
            body=chunks[0] if len(chunks) == 1 else b"".join(chunks),
            server=self.owner.state.server,
            state=state,
            params=params,
            content_type=known.content_type,
            api_key=known.api_key,
            authorization=known.authorization,
        )
        response = await self.serve(route, request, started, client=_client(scope))
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.asgi_headers()}
        )
        await send({"type": "http.response.body", "body": response.body})

    async def serve(
        self, route: ServingRoute, request: WireRequest, started: float, *, client: str | None
    ) -> WireResponse:
        """Serve a predict route: its endpoint, errors rendered as the app renders them, the request
        id and rate-limit headers, usage, metrics and the access log. The caller writes the answer
        (ASGI, or the protocol straight to the socket)."""
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            response = wire_error(exc, method=request.method, path=request.path)
        except asyncio.CancelledError:  # the client went away (the protocol cancels the lane's task)
            state = request.state
            admission = state.pop("admission", None)
            if admission is not None:  # admitted and metered: counted, as an error
                request.server.gate.record(admission, outcome="error")
            self.observe(route.path, request.method, CLIENT_CLOSED, started, state, _url_of(request), client)
            raise
        state = request.state
        headers = response.headers
        headers.append((b"x-request-id", state["request_id"].encode()))
        rate = state.get("rate_headers")
        if rate:
            for name, value in rate.items():
                headers.append((_header_name(name), value.encode()))
        admission = state.pop("admission", None)
        if admission is not None:
            gate = request.server.gate
            gate.record(admission, outcome="ok" if response.status < 400 else "error")
            if self.usage_sync:
                try:
                    await request.server.usage.wait_flushed()  # durable before the client sees it
                except asyncio.CancelledError:  # gone while its usage was flushed (still recorded)
                    self.observe(
                        route.path, request.method, CLIENT_CLOSED, started, state, _url_of(request), client
                    )
                    raise
        self.observe(route.path, request.method, response.status, started, state, _url_of(request), client)
        return response

    async def _pass_on(
        self, scope: Scope, receive: Receive, send: Send, state: dict[str, Any], limit: int, started: float
    ) -> None:
        """Every other request: FastAPI's stack, with the edge's headers, body limit and records."""
        status = 500
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
                headers.append((b"x-request-id", state["request_id"].encode()))
                for name, value in (state.get("rate_headers") or {}).items():
                    headers.append((_header_name(name), value.encode()))
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

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            admission = state.pop("admission", None)
            if admission is not None:
                # Durable usage, batched by the recorder: no I/O here.
                self.owner.state.server.gate.record(admission, outcome="ok" if status < 400 else "error")
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.observe(template, scope["method"], status, started, state, _url(scope), _client(scope))

    def observe(
        self,
        template: str,
        method: str,
        status: int,
        started: float,
        state: dict[str, Any],
        url: str,
        client: str | None,
    ) -> None:
        """A finished request: the HTTP metrics and the access-log line."""
        elapsed = time.perf_counter() - started
        key = (template, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.metrics.http_requests.labels(template, method, str(status)),
                self.metrics.http_latency.labels(template),
            )
            if len(self._children) < _MAX_LABEL_SETS:  # methods are client-chosen: bounded
                self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)
        self.access_log.line(
            method,
            url,
            status,
            round(elapsed * 1000, 3),
            state["request_id"],
            state.get("model"),
            state.get("version"),
            state.get("key_id"),
            client,
        )

    async def _send_413(self, send: Send, limit: int, request_id: str) -> None:
        response = wire_error(PayloadTooLarge(f"request body exceeds {limit} bytes"), method="", path="")
        response.headers.append((b"x-request-id", request_id.encode()))
        await send({"type": "http.response.start", "status": 413, "headers": response.asgi_headers()})
        await send({"type": "http.response.body", "body": response.body})

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


def request_id_for(known: KnownHeaders) -> str:
    """The client's well-formed ``x-request-id``, else a new one."""
    rid = known.request_id
    if not rid or rid == "-":
        rid = f"{_ids.getrandbits(128):032x}"
    return rid


def _url(scope: Scope) -> str:
    path: str = scope.get("path", "")
    query: bytes = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


def _url_of(request: WireRequest) -> str:
    return f"{request.path}?{request.query.decode('latin-1')}" if request.query else request.path


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


@functools.cache
def _header_name(name: str) -> bytes:
    """``X-RateLimit-Limit`` -> ``b"x-ratelimit-limit"`` (a handful of names, encoded once)."""
    return name.lower().encode("latin-1")
