"""The edge middleware (pure ASGI, one layer): request id, body size limit, load shedding,
metrics, access log.

Load shedding: past ``max_inflight`` requests in this process, a request is answered 503 +
``Retry-After`` at once instead of joining a queue that only grows under overload (where
each extra request in flight also costs the event loop throughput). A shed request costs
the event loop as little as possible, so refusing the excess does not eat the capacity it
protects: it is counted (``mlgate_http_requests{route="(shed)"}``) and summarised in one
warning per 10 s, not written to the access log line by line. Health, readiness and
metrics are never shed.

Pure ASGI rather than BaseHTTPMiddleware: no extra task or stream copy per request.
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlgate.errors import Overloaded, PayloadTooLarge
from mlgate.telemetry.access_log import AccessLog, AccessRecord
from mlgate.telemetry.metrics import Metrics

__all__ = ["EdgeMiddleware"]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Never shed: probes must see the truth under load.
_NOT_SHED = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
_SHED_BODY = orjson.dumps({"error": Overloaded("server is at capacity; retry shortly").to_dict()})
_SHED_HEADERS = (
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_SHED_BODY)).encode()),
    (b"retry-after", b"1"),
)
_SHED_WARN_EVERY_S = 10.0
_MAX_LABEL_SETS = 1024
log = logging.getLogger("mlgate.http")


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: Metrics,
        access_log: AccessLog,
        path_limits: dict[str, int] | None = None,
        max_inflight: int = 0,
        usage_sync: bool = False,
    ) -> None:
        self.app = app
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if 0 < self.max_inflight <= self.inflight and scope["path"] not in _NOT_SHED:
            await self._shed_request(scope, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
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
                    server = scope["app"].state.server
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

        self.inflight += 1
        try:
            if _content_length(scope) > limit:
                await self._send_413(send_wrapper, limit)
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            self.inflight -= 1
            elapsed = time.perf_counter() - started
            admission = state.get("admission")
            if admission is not None:
                # Durable usage, batched by the recorder: no I/O here.
                outcome = "ok" if status < 400 else "error"
                scope["app"].state.server.gate.record(admission, outcome=outcome)
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

    async def _shed_request(self, scope: Scope, send: Send) -> None:
        """503 + Retry-After without reading the body, logging a line or running the app."""
        self.metrics.http_requests.labels("(shed)", scope["method"], "503").inc()
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
        await send({"type": "http.response.start", "status": 503, "headers": list(_SHED_HEADERS)})
        await send({"type": "http.response.body", "body": _SHED_BODY})


# Generated request ids: 128 random bits as 32 hex digits, like ``uuid4().hex``, but from a
# generator seeded once per process (reseeded in a forked child) instead of an
# ``os.urandom`` system call per request, which cost ~15 % of a W1 request here. Request
# ids only correlate log lines; they are not secrets.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _REQUEST_ID.match(candidate):
                return candidate
            break
    return f"{_ids.getrandbits(128):032x}"


def _content_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _url(scope: Scope) -> str:
    path: str = scope.get("path", "")
    query: bytes = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path
