"""One request, from its parsed head to its access-log line: the :class:`Exchange`.

An exchange is what an endpoint reads (method, path, headers, body, the caller's key…) and
what the edge writes back for the request's end (route, model, version, admission, status).
Its :meth:`Exchange.close` is idempotent and is the only place where a request's in-flight
slot is released, its usage recorded, its HTTP metrics observed and its access-log line
written — whichever way the request ends: answered, refused by the gateway or the edge
(413, 431, 408, 400), its client gone before, while or after its body (499), timed out, or
the server shutting down. The drivers — ``mlgate serve``'s protocol
(:mod:`mlgate.http.protocol`) and the ASGI app for any other server (:mod:`mlgate.http.asgi`)
— only open exchanges, feed them and close them.

:class:`Lifecycle` is the per-process side of that: the in-flight count that load shedding
reads, the metric children, the access log, durable usage (``usage_sync``).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlgate.http.wire import WireResponse
from mlgate.telemetry.access_log import AccessLog
from mlgate.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from starlette.convertors import Convertor

    from mlgate.access.gate import Admission
    from mlgate.server import Server
    from mlgate.telemetry.stats import StatsRecorder

__all__ = ["CLIENT_CLOSED", "EXCHANGE", "UNMATCHED", "Exchange", "Lifecycle", "ServingRoute", "WireEndpoint"]

#: The ASGI scope key under which a driver hands a request's exchange to the app behind it.
EXCHANGE = "mlgate.exchange"
#: The status logged for a request whose client went away before its answer (nginx's 499).
CLIENT_CLOSED = 499
#: The route label of a request that matched no route (or was refused before routing could run).
UNMATCHED = "unmatched"
_MAX_LABEL_SETS = 1024  # methods and statuses are partly client-chosen: bounded

#: An edge route's endpoint: the request's exchange in, the answer out.
WireEndpoint = Callable[["Exchange"], Awaitable[WireResponse]]


@dataclass(frozen=True, slots=True)
class ServingRoute:
    """One of the edge's own routes: its template (the metrics label), compiled pattern and endpoint."""

    path: str
    method: str
    endpoint: WireEndpoint
    regex: re.Pattern[str]
    convertors: dict[str, Convertor[Any]]


class Lifecycle:
    """What every exchange's close reports to: in-flight count, metrics, access log, usage."""

    def __init__(
        self, *, metrics: Metrics, access_log: AccessLog, max_inflight: int, usage_sync: bool
    ) -> None:
        self.metrics = metrics
        self.access_log = access_log
        self.max_inflight = max_inflight
        self.usage_sync = usage_sync
        #: the components, set when startup has built them (endpoints run only after that)
        self.server: Server | None = None
        #: the dashboard's per-minute stats (issue 17), set with ``server``; None: not recorded
        self.stats: StatsRecorder | None = None
        #: requests dispatched to an endpoint or the app and not yet closed
        self.inflight = 0
        #: connections open (counted by mlgate serve's protocol)
        self.connections = 0
        metrics.http_inflight.set_function(lambda: self.inflight)
        metrics.http_connections.set_function(lambda: self.connections)
        # (route, method, status) -> the two metric children: resolved once, not per request
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def at_capacity(self) -> bool:
        return 0 < self.max_inflight <= self.inflight

    def observe(self, x: Exchange, elapsed: float) -> None:
        """A closed exchange: its HTTP metrics and its access-log line."""
        key = (x.label, x.method, x.status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.metrics.http_requests.labels(x.label, x.method, str(x.status)),
                self.metrics.http_latency.labels(x.label),
            )
            if len(self._children) < _MAX_LABEL_SETS:
                self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)
        stats = self.stats  # issue 17: a few dict operations, written out by a thread
        if stats is not None:
            stats.observe(x, elapsed)
        self.access_log.line(
            x.method,
            f"{x.path}?{x.query.decode('latin-1')}" if x.query else x.path,
            x.status,
            round(elapsed * 1000, 3),
            x.request_id,
            x.model,
            x.version,
            x.key_id,
            x.client,
            x.reason,
        )


class Exchange:
    """One HTTP request and how it ended. Endpoints read the request fields; handlers set
    ``model``/``version`` (what served it) and the gateway calls :meth:`admit`."""

    __slots__ = (
        "_slot",
        "_usage_done",
        "admission",
        "api_key",
        "authorization",
        "body",
        "client",
        "content_type",
        "gone",
        "headers",
        "key_id",
        "label",
        "lifecycle",
        "method",
        "model",
        "params",
        "path",
        "query",
        "reason",
        "request_id",
        "route",
        "server",
        "started",
        "status",
        "unserved",
        "version",
    )

    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    params: dict[str, Any]
    content_type: str
    api_key: str | None
    authorization: str | None
    request_id: str
    client: str | None
    server: Server
    lifecycle: Lifecycle
    #: the edge's own route serving this request, with its path parameters in ``params``;
    #: None when the request goes on to the application (FastAPI)
    route: ServingRoute | None
    #: the route template for metrics (``unmatched`` if none)
    label: str
    #: the client went away before the answer was complete
    gone: bool
    model: str | None
    version: str | None
    key_id: str | None
    admission: Admission | None
    #: 0 while open; the status it was closed with afterwards
    status: int
    #: why the edge refused or ended it (a timeout, a limit, the client gone), for the access log
    reason: str | None
    started: float
    #: units of an admitted request the server failed to serve (a batch's refused items):
    #: their quota is given back and they are not counted as served
    unserved: int
    _slot: bool
    _usage_done: bool

    def __init__(
        self,
        lifecycle: Lifecycle,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        request_id: str,
        content_type: str = "",
        api_key: str | None = None,
        authorization: str | None = None,
        client: str | None = None,
    ) -> None:
        # Positional parameters only (one of these is built per request: keywords cost more).
        self.lifecycle = lifecycle
        self.server = lifecycle.server  # type: ignore[assignment]  # None only before startup
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.request_id = request_id
        self.content_type = content_type
        self.api_key = api_key
        self.authorization = authorization
        self.client = client
        self.body = b""
        self.params = {}
        self.route = self.model = self.version = self.key_id = self.admission = self.reason = None
        self.label = UNMATCHED
        self.gone = self._slot = self._usage_done = False
        self.status = self.unserved = 0
        self.started = time.perf_counter()

    # -- what endpoints read -------------------------------------------------------------

    def query_param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None (``?version=2``)."""
        if not self.query:
            return None
        from urllib.parse import parse_qsl

        for key, value in parse_qsl(self.query.decode("latin-1"), keep_blank_values=True):
            if key == name:
                return value
        return None

    @property
    def closed(self) -> bool:
        return self.status != 0

    # -- the lifecycle -------------------------------------------------------------------

    def take_slot(self) -> None:
        """Count this request in flight (load shedding reads the count) until it is closed."""
        if not self._slot and not self.status:
            self._slot = True
            self.lifecycle.inflight += 1

    def admit(self, admission: Admission) -> None:
        """The gateway let this request through: its usage is recorded when it ends."""
        self.admission = admission
        self.key_id = admission.caller.id

    def answer_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Append the edge's headers to an answer: the request id and the plan's rate-limit headers."""
        headers.append((b"x-request-id", self.request_id.encode()))
        admission = self.admission
        if admission is not None:
            for name, value in admission.headers.items():
                headers.append((_header_name(name), value.encode()))

    async def settle(self, status: int) -> None:
        """Before an answer goes out: record its usage and, with ``usage_sync``, wait until it
        is durable, so that a crash never loses a call the client saw answered. (The edge's own
        routes do the same inline: :meth:`mlgate.http.edge.Edge.serve`.)"""
        if self.record_usage(status) and self.lifecycle.usage_sync:
            await self.server.usage.wait_flushed()

    def close(self, status: int, reason: str | None = None) -> None:
        """The request has ended with ``status`` (idempotent: the first close wins)."""
        if self.status:
            return
        self.status = status
        if reason is not None:
            self.reason = reason
        elapsed = time.perf_counter() - self.started
        lifecycle = self.lifecycle
        if self._slot:
            self._slot = False
            lifecycle.inflight -= 1
        self.record_usage(status)
        lifecycle.observe(self, elapsed)

    def record_usage(self, status: int) -> bool:
        """Usage of an admitted request, once (True if this call recorded it): ok below 400, else
        an error. Charged = served: a 5xx answer serves nothing, so its quota units are given
        back and it counts no unit; a batch's refused items (``unserved``) likewise; a client
        gone after admission (499) keeps its charge (the work was done). Called by
        :meth:`settle` before the answer and by :meth:`close` for a request that got none."""
        if self._usage_done:
            return False
        self._usage_done = True
        admission = self.admission
        if admission is None or admission.metered_as is None:
            return False
        outcome: Literal["ok", "error"] = "ok" if status < 400 else "error"
        gate = self.server.gate
        unserved = admission.cost if status >= 500 else self.unserved
        if unserved:
            gate.refund(admission, unserved)
        gate.record(admission, outcome=outcome, units=max(0, admission.cost - unserved))
        return True


@functools.cache
def _header_name(name: str) -> bytes:
    """``X-RateLimit-Limit`` -> ``b"x-ratelimit-limit"`` (a handful of names, encoded once)."""
    return name.lower().encode("latin-1")
