"""``mlgate serve``'s HTTP protocol: uvicorn's httptools protocol plus two things of the edge's.

**Load shedding at parse time.** Under overload every refusal takes event-loop time from the
requests being served: at twice the capacity, a refusal costing r of a served request leaves
(1 - 2r)/(1 - r) of the capacity for successes. Refused in the ASGI app, a request still costs
uvicorn's cycle object, an ``asyncio.Event``, a task, the app call and two ``send`` messages —
about 1/7 of a served W1 request. While the :class:`~mlgate.http.middleware.Edge` is at
capacity, :class:`MlgateProtocol` writes the same preencoded 503 + ``Retry-After`` answer
straight to the socket when a request's headers are parsed (keep-alive kept, the body skipped
by the parser) and counts it; nothing else runs. A request it admits is counted in flight at
once (:meth:`Edge.reserve`), not when its ASGI task first runs: a burst parsed in one loop
iteration would otherwise all pass this check and then be refused one by one in ASGI.

**The predict lane.** A request for a predict route (:class:`~mlgate.http.serving.ServingRoutes`)
is served without an ASGI cycle: its headers and body, as the parser hands them over, become a
:class:`~mlgate.http.wire.WireRequest`; one task runs :meth:`Edge.serve` (the same code the edge
runs for it over ASGI: endpoint, errors, gateway headers, usage, metrics, access log) and the
answer goes out in one write. Per W1 request that skips uvicorn's scope and cycle objects, the
``asyncio.Event``, the proxy-headers middleware call, two ASGI ``send`` messages with their
header checks and a second ``write`` system call (profiles in docs/benchmarks.md). HTTP is still
uvicorn's: parsing, keep-alive and its timeout, ``Connection: close`` and HTTP/1.0,
``Expect: 100-continue``, chunked request bodies, graceful shutdown (the lane's tasks are in the
server's task set), and the client address behind a trusted proxy (``X-Forwarded-For``, read
with uvicorn's own trusted-hosts rule). A body over the route's limit is answered 413 and the
connection closed, as soon as the limit is passed.

Both only act where uvicorn's bookkeeping stays valid: no response pending on the connection
(HTTP pipelining keeps its order; uvicorn queues such a request and the edge serves it over
ASGI), no protocol upgrade, no ``root_path``, and an app that leads to an :class:`Edge` (found
once per connection through uvicorn's wrappers). Anything else takes uvicorn's normal path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlgate.errors import PayloadTooLarge
from mlgate.http.errors import wire_error
from mlgate.http.middleware import Edge, request_id_for
from mlgate.http.serving import ServingRoute
from mlgate.http.wire import WireRequest, WireResponse, encode_http11, scan_headers

__all__ = ["MlgateProtocol"]

log = logging.getLogger("mlgate.http")


class _NoEvent:
    def set(self) -> None:
        """uvicorn wakes a cycle's event on disconnect; nothing here waits on it."""


_NO_EVENT = _NoEvent()


class _ShedCycle:
    """Stands in for uvicorn's RequestResponseCycle of a request answered at parse time: complete,
    so the parser's body callbacks skip it and the next request starts as usual."""

    response_complete = True
    disconnected = False
    keep_alive = True
    message_event = _NO_EVENT


_SHED_CYCLE: Any = _ShedCycle()
_UNSET: Any = object()
_OPAQUE_PROXY: Any = object()
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _LaneCycle(WireRequest):
    """A predict-lane request in progress, and the request its endpoint gets: what uvicorn reads of
    a cycle (``response_complete``, ``disconnected``, ``keep_alive``, ``message_event``) on top of
    the :class:`~mlgate.http.wire.WireRequest` (one object per request, not two)."""

    __slots__ = (
        "chunks",
        "client",
        "disconnected",
        "keep_alive",
        "limit",
        "message_event",
        "response_complete",
        "route",
        "size",
        "started",
        "task",
    )

    route: ServingRoute
    chunks: list[bytes]
    size: int
    limit: int
    keep_alive: bool
    client: str | None
    started: float
    response_complete: bool
    disconnected: bool
    message_event: _NoEvent
    task: asyncio.Task[None] | None


# The server's default headers (``date``) as header lines, re-encoded when uvicorn replaces the
# list (once a second): (the list, its encoding).
_defaults: tuple[Any, bytes] = (None, b"")


def _default_header_bytes(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    global _defaults
    cached = _defaults
    if cached[0] is default_headers:
        return cached[1]
    encoded = b"".join(b"%s: %s\r\n" % (name, value) for name, value in default_headers)
    _defaults = (default_headers, encoded)
    return encoded


class MlgateProtocol(HttpToolsProtocol):
    _edge: Any = _UNSET
    _proxy: Any = None  # uvicorn's trusted-hosts rule, when it reads proxy headers
    _scoped = True  # whether uvicorn's ASGI scope of the current request has been built
    _shedding = False  # the current request will be refused at headers-complete
    _idle_since: float | None = None  # loop time the connection went idle; None: busy
    _idle_timer: asyncio.TimerHandle | None = None

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        # uvicorn builds the request's ASGI scope here; the lane and a refusal never use it, so it
        # is built only for a request that goes uvicorn's way (_scope).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._scoped = False
        self._shedding = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._shedding:
            return  # refused at headers-complete, whatever it says
        if not self.headers and self._refuse_now():
            self._shedding = True
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        edge = self._edge
        if edge is _UNSET:
            edge, self._proxy = _find_edge(self.app)
            self._edge = edge
        if self._shedding:
            self._shed(edge)
            return
        if (
            edge is None
            or not (self.cycle is None or self.cycle.response_complete)  # pipelined: uvicorn queues it
            or self.parser.should_upgrade()
        ):
            self._scope()
            super().on_headers_complete()
            return
        parsed = httptools.parse_url(self.url)
        if edge.at_capacity() and edge.sheds(parsed.path.decode("latin-1")):
            self._shed(edge)
            return
        if self.root_path or not self._start_lane(edge, parsed):
            # Admitted: its ASGI task starts now (uvicorn's standard case), and the edge counts it in
            # flight from this moment, so the next request parsed in this same loop iteration sees it.
            self._scope()
            edge.reserve(self.scope)
            super().on_headers_complete()

    def _scope(self) -> None:
        """Build the ASGI scope with uvicorn's own code, keeping what was parsed so far."""
        if not self._scoped:
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()
            self.url, self.headers, self.expect_100_continue = url, headers, expect
            self.scope["headers"] = headers
            self._scoped = True

    def _refuse_now(self) -> bool:
        """At the request's first header (its request line is parsed): will it be shed? Then its
        headers need not be kept. The same conditions as at headers-complete."""
        edge = self._edge
        if edge is _UNSET:
            edge, self._proxy = _find_edge(self.app)
            self._edge = edge
        if edge is None or not edge.at_capacity() or not (self.cycle is None or self.cycle.response_complete):
            return False
        return bool(edge.sheds(httptools.parse_url(self.url).path.decode("latin-1")))

    # -- keep-alive: one timer per idle connection, not one per response ----------------------

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # data arrived: busy (the timer, if any, finds out when it fires)

    def on_response_complete(self) -> None:
        # uvicorn's, but the keep-alive timeout is armed once and re-armed when it fires, instead of a
        # timer created per response and cancelled by the next request's data.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        since = self._idle_since
        if since is None or self.transport.is_closing():
            return  # busy: the next response arms the timer again
        idle = self.loop.time() - since
        if idle >= self.timeout_keep_alive:
            self.timeout_keep_alive_handler()
        else:
            self._idle_timer = self.loop.call_later(self.timeout_keep_alive - idle, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        cycle: Any = self.cycle
        if type(cycle) is _LaneCycle and not cycle.response_complete and cycle.task is not None:
            # Nobody will read the answer: the request leaves the model's queue (or its batch's
            # result is dropped), and is logged as 499 (:meth:`Edge.serve`).
            cycle.task.cancel()
        super().connection_lost(exc)

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle
        if type(cycle) is not _LaneCycle:
            super().on_body(body)
            return
        if cycle.response_complete:
            return
        cycle.size += len(body)
        if cycle.size > cycle.limit:
            self._too_large(cycle)
            return
        cycle.chunks.append(body)

    def on_message_complete(self) -> None:
        cycle: Any = self.cycle
        if type(cycle) is not _LaneCycle:
            super().on_message_complete()
            return
        if cycle.response_complete:
            return
        task = self.loop.create_task(self._serve(cycle))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        cycle.task = task

    # -- shedding ----------------------------------------------------------------------------

    def _shed(self, edge: Edge) -> None:
        method = self.parser.get_method().decode("latin-1")
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        edge.count_shed(method)
        self.cycle = _SHED_CYCLE
        self.transport.write(edge.shed_response(self.server_state.default_headers, keep_alive))
        if keep_alive:
            self.on_response_complete()  # arms keep-alive, resumes reading, as after any answer
        else:
            self.transport.close()

    # -- the predict lane --------------------------------------------------------------------

    def _start_lane(self, edge: Edge, parsed: Any) -> bool:
        """Take this request into the lane if it is for a predict route; False: not ours."""
        try:
            path = parsed.path.decode("ascii")
        except UnicodeDecodeError:
            return False  # uvicorn's path decides what such a request gets
        if "%" in path:
            path = urllib.parse.unquote(path)
        method = self.parser.get_method().decode("ascii")
        served = edge.serving.match(method, path)
        if served is None:
            return False
        headers = self.headers
        known = scan_headers(headers)
        if known.cross_origin and edge.bypass_cross_origin:
            return False  # CORS is FastAPI's middleware's
        if self._proxy is _OPAQUE_PROXY and known.forwarded:
            return False  # a proxy-headers middleware whose rule we cannot read: let it run
        limit = edge.path_limits.get(path, edge.max_body_bytes)
        cycle = _LaneCycle(
            method,
            path,
            parsed.query or b"",
            headers,
            b"",
            edge.owner.state.server,
            {"request_id": request_id_for(known)},
            served[1],
            known.content_type,
            known.api_key,
            known.authorization,
        )
        cycle.route = served[0]
        cycle.chunks = []
        cycle.size = 0
        cycle.limit = limit
        cycle.keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        cycle.client = self._client_host(headers, known.forwarded)
        cycle.started = time.perf_counter()
        cycle.response_complete = False
        cycle.disconnected = False
        cycle.message_event = _NO_EVENT
        cycle.task = None
        self.cycle = cycle  # type: ignore[assignment]
        edge.inflight += 1
        if known.content_length > limit:
            self._too_large(cycle)
        elif self.expect_100_continue:
            self.transport.write(_CONTINUE)
        return True

    async def _serve(self, cycle: _LaneCycle) -> None:
        edge: Edge = self._edge
        try:
            chunks = cycle.chunks
            cycle.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            cycle.chunks = []
            response = await edge.serve(cycle.route, cycle, cycle.started, client=cycle.client)
        except Exception as exc:  # the edge's own bookkeeping failed: still answer
            response = wire_error(exc, method=cycle.method, path=cycle.path)
            cycle.keep_alive = False
        finally:
            edge.inflight -= 1
        self._answer(cycle, response)

    def _too_large(self, cycle: _LaneCycle) -> None:
        """413 at once and close: the rest of an oversized body is not worth reading."""
        edge: Edge = self._edge
        edge.inflight -= 1
        limit = cycle.limit
        response = wire_error(PayloadTooLarge(f"request body exceeds {limit} bytes"), method="", path="")
        response.headers.append((b"x-request-id", cycle.state["request_id"].encode()))
        edge.observe(
            cycle.route.path, cycle.method, 413, cycle.started, cycle.state, cycle.path, cycle.client
        )
        cycle.chunks = []
        cycle.keep_alive = False
        self._answer(cycle, response)

    def _answer(self, cycle: _LaneCycle, response: WireResponse) -> None:
        cycle.response_complete = True
        if cycle.disconnected or self.transport.is_closing():
            return  # the client is gone (uvicorn's send does the same)
        defaults = _default_header_bytes(self.server_state.default_headers)
        self.transport.write(encode_http11(response, default_headers=defaults, keep_alive=cycle.keep_alive))
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()  # keep-alive timer, reading resumed, a pipelined request started

    def _client_host(self, headers: list[tuple[bytes, bytes]], forwarded_for: bool) -> str | None:
        """The client's address for the access log: the peer's, or the one a trusted proxy forwarded."""
        peer = self.client[0] if self.client else None
        proxy = self._proxy
        if not forwarded_for or proxy is None or proxy is _OPAQUE_PROXY or peer not in proxy:
            return peer
        forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
        host, _ = proxy.get_trusted_client_address(b", ".join(forwarded).decode("latin-1"))
        return host or peer


def _find_edge(app: Any) -> tuple[Edge | None, Any]:
    """The edge behind ``app`` (uvicorn wraps the application: proxy headers, logging…) and, when
    uvicorn's proxy-headers middleware is one of the wrappers, its trusted-hosts rule."""
    proxy = None
    for _ in range(8):
        trusted = getattr(app, "trusted_hosts", None)
        if trusted is not None:
            proxy = trusted if hasattr(trusted, "get_trusted_client_address") else _OPAQUE_PROXY
        edge = getattr(app, "edge", None)
        if isinstance(edge, Edge):
            return edge, proxy
        app = getattr(app, "app", None)
        if app is None:
            return None, None
    return None, None
