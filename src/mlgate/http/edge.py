"""The edge: what every request meets first, whichever server drives it.

The :class:`Edge` (one per process) is the :class:`~mlgate.http.exchange.Lifecycle` every
exchange closes into, plus what the drivers share: the table of routes it serves itself
(:class:`~mlgate.http.serving.ServingRoutes`: predictions, probes, metrics), body limits per
path, the routes whose bodies stream to the application (uploads), route labels for metrics,
load shedding, and the one way a served route and a refusal are answered (:meth:`Edge.serve`,
:meth:`Edge.refusal`).

Load shedding: past ``max_inflight`` requests in flight in this process, a request is answered
503 + ``Retry-After`` at once instead of joining a queue that only grows under overload (where
each extra request in flight also costs the event loop throughput). The shed answer is
preencoded and costs as little as possible, so refusing the excess does not eat the capacity
it protects: no exchange is built for it; it is counted
(``mlgate_http_requests_total{route="(shed)"}``), written to the access log (status 503, reason
``overloaded``) and summarised in one warning per 10 s. Health, readiness and metrics are
never shed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from mlgate.errors import MlgateError, Overloaded, PayloadTooLarge
from mlgate.http.capturing import capture_answer
from mlgate.http.errors import is_oip_path, oip_error_body, wire_error
from mlgate.http.exchange import CLIENT_CLOSED, UNMATCHED, Exchange, Lifecycle
from mlgate.http.serving import ServingRoute, ServingRoutes, compile_path
from mlgate.http.wire import KnownHeaders, WireResponse
from mlgate.telemetry.access_log import AccessLog
from mlgate.telemetry.context import REQUEST_ID
from mlgate.telemetry.metrics import Metrics

__all__ = [
    "BODY_LIMIT_SETTING",
    "OIP_SHED_BODY",
    "OIP_SHED_HEADERS",
    "SHED_BODY",
    "SHED_HEADERS",
    "UPLOAD_LIMIT_SETTING",
    "Edge",
    "request_id_for",
]

#: The settings that raise the body limits, named in a 413 so the client's operator knows which.
BODY_LIMIT_SETTING = "MLGATE_MAX_BODY_BYTES"
UPLOAD_LIMIT_SETTING = "MLGATE_MAX_UPLOAD_BYTES"

#: Never shed: probes must see the truth under load.
_NOT_SHED = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
SHED_BODY = orjson.dumps({"error": Overloaded("server is at capacity; retry shortly").to_dict()})
SHED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(SHED_BODY)).encode()),
    (b"retry-after", b"1"),
]
#: The same answer on the Open Inference Protocol's /v2 paths: ``{"error": "<message>"}``.
OIP_SHED_BODY = orjson.dumps(oip_error_body(orjson.loads(SHED_BODY)))
OIP_SHED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(OIP_SHED_BODY)).encode()),
    (b"retry-after", b"1"),
]
_SHED_WARN_EVERY_S = 10.0
_MAX_LABEL_SETS = 1024
log = logging.getLogger("mlgate.http")


class Edge(Lifecycle):
    """One per process: the lifecycle of every exchange and what the drivers share."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        access_log: AccessLog,
        serving: ServingRoutes | None = None,
        max_body_bytes: int,
        path_limits: dict[str, int] | None = None,
        max_inflight: int = 0,
        usage_sync: bool = False,
        cors: bool = False,
    ) -> None:
        super().__init__(
            metrics=metrics, access_log=access_log, max_inflight=max_inflight, usage_sync=usage_sync
        )
        self.serving = serving or ServingRoutes()
        #: with CORS configured, cross-origin requests need the application's CORS middleware
        self.cors = cors
        self.max_body_bytes = max_body_bytes
        self.path_limits = path_limits or {}
        #: labels the routes the edge does not serve (the application's router, once built)
        self.labeler: Callable[[str, str], str | None] | None = None
        self._streaming: list[tuple[str, re.Pattern[str], int | None]] = []
        self._shed = 0  # shed since the last warning
        self._shed_warned = 0.0
        self._shed_counters: dict[str, Any] = {}
        self._shed_raw: tuple[list[tuple[bytes, bytes]], bool, bytes] | None = None
        self._oip_shed_raw: tuple[list[tuple[bytes, bytes]], bool, bytes] | None = None

    # -- routes ------------------------------------------------------------------------------

    def match(
        self, method: str, path: str, known: KnownHeaders
    ) -> tuple[ServingRoute, dict[str, Any]] | None:
        """The served route of a request, if the edge serves it itself."""
        if known.cross_origin and self.cors:
            return None  # CORS is the application's middleware's
        return self.serving.match(method, path)

    def label(self, method: str, path: str) -> str:
        """A request's route template for metrics, found without serving it (for refusals)."""
        served = self.serving.match(method, path)
        if served is not None:
            return served[0].path
        if self.labeler is not None:
            found = self.labeler(method, path)
            if found is not None:
                return found
        return UNMATCHED

    def limit_for(self, path: str) -> int:
        """The body limit of ``path`` (a service may take more than the default, e.g. images)."""
        return self.path_limits.get(path, self.max_body_bytes)

    def stream(self, path: str, *, method: str = "POST", limit: int | None = None) -> None:
        """Let requests for ``path`` (a template) stream their bodies to the application (uploads)
        instead of being read whole first, within their own ``limit`` (``MLGATE_MAX_UPLOAD_BYTES``;
        None: the default body limit)."""
        self._streaming.append((method, compile_path(path)[0], limit))

    def streams(self, method: str, path: str) -> bool:
        return self.stream_limit(method, path) is not None

    def stream_limit(self, method: str, path: str) -> int | None:
        """The body limit of a streaming route's request; None if the request does not stream."""
        for m, regex, limit in self._streaming:
            if m == method and regex.match(path):
                return self.limit_for(path) if limit is None else limit
        return None

    @staticmethod
    def too_large_error(limit: int, *, streaming: bool = False) -> PayloadTooLarge:
        """The 413 of a body over ``limit``, naming the setting that raises it."""
        setting = UPLOAD_LIMIT_SETTING if streaming else BODY_LIMIT_SETTING
        what = "upload" if streaming else "request body"
        return PayloadTooLarge(
            f"{what} exceeds {limit} bytes (the limit set by {setting})",
            details={"limit_bytes": limit, "setting": setting},
        )

    # -- exchanges -----------------------------------------------------------------------

    def open(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        known: KnownHeaders,
        client: str | None,
        routed: bool = True,
        factory: type[Exchange] = Exchange,
    ) -> Exchange:
        """An exchange for a request whose head has been parsed, with its route decided: the
        edge's own (``x.route``) unless ``routed`` is false (a ``root_path``: the application's).
        ``factory`` is the class to build (a driver's subclass with its own per-request fields)."""
        x = factory(
            self,
            method,
            path,
            query,
            headers,
            request_id_for(known),
            known.content_type,
            known.api_key,
            known.authorization,
            client,
        )
        served = self.match(method, path, known) if routed else None
        if served is not None:
            x.route, x.params = served
            x.label = served[0].path
        return x

    async def serve(self, route: ServingRoute, x: Exchange) -> WireResponse:
        """Serve ``x`` on a route of the edge's own: its endpoint, errors rendered as the app
        renders them, the edge's headers, usage settled, the exchange closed. The driver writes
        the answer. A cancellation (the client gone) closes the exchange as 499 and propagates."""
        REQUEST_ID.set(x.request_id)  # this task's: the dataplane's log lines name the request
        try:
            try:
                response = await route.endpoint(x)
            except Exception as exc:
                response = wire_error(exc, method=x.method, path=x.path)
            x.answer_headers(response.headers)
            # Exchange.settle, inline: no coroutine per request when usage need not be durable first.
            if x.record_usage(response.status) and self.usage_sync:
                try:
                    await x.server.usage.wait_flushed()
                except Exception as exc:  # usage could not be made durable: that answer is not given
                    response = wire_error(exc, method=x.method, path=x.path)
                    x.answer_headers(response.headers)
            if x.model is not None and response.status < 300:  # data capture: one lookup when off
                capture = x.server.capture
                rate = capture.rates.get(x.model, capture.default)
                if rate > 0.0:
                    capture_answer(x, response, rate)
        except asyncio.CancelledError:
            x.close(CLIENT_CLOSED, "client_closed")
            raise
        x.close(response.status)
        return response

    def refusal(self, x: Exchange, error: MlgateError, reason: str) -> WireResponse:
        """The edge's own refusal of ``x`` (413, 431, 408, 400, 503), rendered and closed."""
        response = wire_error(error, method=x.method, path=x.path)
        x.answer_headers(response.headers)
        x.close(error.status, reason)
        return response

    def too_large(self, x: Exchange, limit: int, *, streaming: bool = False) -> WireResponse:
        return self.refusal(x, self.too_large_error(limit, streaming=streaming), "body_too_large")

    # -- load shedding -------------------------------------------------------------------

    @staticmethod
    def sheds(path: str) -> bool:
        return path not in _NOT_SHED

    def shed(self, method: str, path: str, query: bytes, client: str | None) -> None:
        """A shed request (503 + Retry-After, its body unread, nothing run): counted, one
        access-log line (reason ``overloaded``), and one warning per 10 s while it goes on."""
        counter = self._shed_counters.get(method)
        if counter is None:
            counter = self.metrics.http_requests.labels("(shed)", method, "503")
            if len(self._shed_counters) < _MAX_LABEL_SETS:  # methods are client-chosen: bounded
                self._shed_counters[method] = counter
        counter.inc()
        self.access_log.line(
            method,
            f"{path}?{query.decode('latin-1')}" if query else path,
            503,
            0.0,
            f"{_ids.getrandbits(128):032x}",
            None,
            None,
            None,
            client,
            "overloaded",
        )
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

    def shed_response(
        self, default_headers: list[tuple[bytes, bytes]], keep_alive: bool, path: str = ""
    ) -> bytes:
        """The shed answer as raw HTTP/1.1 bytes, with the server's default headers (date); on a
        ``/v2`` ``path`` in the Open Inference Protocol's error shape."""
        oip = is_oip_path(path)
        cached = self._oip_shed_raw if oip else self._shed_raw
        if cached is not None and cached[0] is default_headers and cached[1] == keep_alive:
            return cached[2]
        lines = [b"HTTP/1.1 503 Service Unavailable\r\n"]
        lines.extend(b"%s: %s\r\n" % (name, value) for name, value in default_headers)
        lines.extend(
            b"%s: %s\r\n" % (name, value) for name, value in (OIP_SHED_HEADERS if oip else SHED_HEADERS)
        )
        if not keep_alive:
            lines.append(b"connection: close\r\n")
        raw = b"".join(lines) + b"\r\n" + (OIP_SHED_BODY if oip else SHED_BODY)
        if oip:
            self._oip_shed_raw = (default_headers, keep_alive, raw)
        else:
            self._shed_raw = (default_headers, keep_alive, raw)
        return raw


# Generated request ids: 128 random bits as 32 hex digits, like ``uuid4().hex``, but from a
# generator seeded once per process (reseeded in a forked child) instead of an ``os.urandom``
# system call per request (docs/benchmarks.md). Request ids only correlate log lines; they are
# not secrets.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def request_id_for(known: KnownHeaders) -> str:
    """The client's well-formed ``x-request-id``, else a new one."""
    rid = known.request_id
    if not rid or rid == "-":
        rid = f"{_ids.getrandbits(128):032x}"
    return rid
