"""``mlgate serve``'s HTTP/1.1 server protocol: one connection, parsed by httptools (llhttp).

uvicorn runs the process (sockets, workers, signals, lifespan, graceful shutdown); this
protocol, given to it as its ``http`` class, owns each connection — because uvicorn's own
protocols bound nothing a hostile client controls: the size and count of headers, the time a
request head or body may take, the number of open connections (docs/security.md).

A connection, and the limits it is held to (``MLGATE_HTTP__*``, :class:`~mlgate.settings.HttpSettings`):

- at most ``max_connections`` open per process: beyond, a new connection is answered 503 at once
  and closed;
- the request line and headers within ``max_header_bytes`` and ``max_headers``: else 431;
- a request head complete within ``header_timeout_s`` of its first byte (a fresh connection must
  start one within that too): else 408 (silence alone is closed without an answer);
- a body that never pauses longer than ``body_timeout_s``: else 408;
- idle between requests at most ``keep_alive_s``.

What reading a request involves (the limits on its head and body, pipelining) is the parsing half,
:class:`mlgate.http.reader.HttpReader`; this module is the connection: timers, dispatch, answers,
refusals, backpressure. Every refusal is answered with the edge's JSON error, closes its
:class:`~mlgate.http.exchange.Exchange` (one access-log line, one metric) and, when the request
was not read whole, shuts the connection down (its write side first, so the answer is read
before the close).

A request is read whole before it is dispatched (so a slow body holds a connection, never an
in-flight slot), except on the routes that stream their bodies to the application (uploads).
Dispatch takes an in-flight slot — or, at ``max_inflight``, answers the preencoded 503 — and then
either serves an edge route straight from the parsed request (the *predict lane*:
:meth:`mlgate.http.edge.Edge.serve`, one write), or runs the ASGI application with the exchange
in its scope (:class:`~mlgate.http.cycle.AsgiCycle`). Pipelined requests are answered in order;
a client that goes away cancels the work of an edge route (it leaves the model's queue) and
closes its exchange as 499. Every request task runs in a fresh context (no context variable
leaks from one request to the next).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from typing import Any

import httptools

from mlgate.errors import MlgateError, Overloaded, RequestTimeout
from mlgate.http.binding import bind, default_header_bytes
from mlgate.http.cycle import AsgiCycle
from mlgate.http.errors import wire_error
from mlgate.http.exchange import CLIENT_CLOSED
from mlgate.http.reader import CONTINUE, HttpReader
from mlgate.http.request import Request
from mlgate.http.wire import WireResponse, encode_http11, scan_headers

__all__ = ["HttpProtocol", "bind"]

log = logging.getLogger("mlgate.http")

_NO_HEADERS = scan_headers([])
#: how long a connection closed after an unread body keeps discarding what the client still sends
_LINGER_S = 2.0
_REFUSED_LINGER_S = 0.2


class HttpProtocol(HttpReader):
    """One HTTP/1.1 connection (see the module docstring). uvicorn creates one per connection."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        if not config.loaded:
            config.load()
        bound = bind(config)
        self.bound = bound
        self.edge = bound.edge
        self.limits = bound.settings
        self.loop: asyncio.AbstractEventLoop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.app_state = app_state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer: str | None = None
        self.peer_port = 0
        self.sockname: tuple[str, int] | None = None
        self.scheme = "http"
        self._init_reading()
        # serving
        self._active: Request | None = None
        self._queue: deque[Request] = deque()
        self._paused = False
        self._closing = False  # no request read after the current ones (shutdown, half-close)
        self._ignore = False  # nothing more is parsed (refused, closing, upgraded)
        self._lost = False  # the connection is gone
        self._counted = False  # in the edge's count of open connections
        self._eof = False  # our side is shut (closed or write_eof): nothing more is written
        self._write_paused = False
        self._write_paused_at = 0.0
        self._after_write: Request | None = None  # answered while writing was paused: go on later
        self._drained: asyncio.Future[None] | None = None
        # timers: one per connection, re-armed when it fires
        self._timer: asyncio.TimerHandle | None = None
        self._since = 0.0  # when the current phase (idle, head, body) started
        self._idle_limit = self.limits.header_timeout_s
        # The timer fires at least this often, so a phase with a shorter limit than the one it
        # was armed for is noticed in time (a timer per phase change would cost every request).
        limits = self.limits
        self._tick = min(
            limits.header_timeout_s, limits.body_timeout_s, limits.keep_alive_s, limits.send_timeout_s
        )

    # -- connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's classes
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer, self.peer_port = str(peer[0]), int(peer[1])
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple) and len(sock) >= 2:
            self.sockname = (str(sock[0]), int(sock[1]))
        if transport.get_extra_info("sslcontext"):
            self.scheme = "https"
        connections = self.server_state.connections
        if len(connections) >= self.limits.max_connections:
            self._refuse_connection()
            return
        connections.add(self)
        self._counted = True
        self.edge.connections += 1
        self._since = self.loop.time()
        self._timer = self.loop.call_later(min(self._idle_limit, self._tick), self._on_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self._counted:
            self._counted = False
            self.edge.connections -= 1
        self._lost = self._ignore = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        active = self._active
        if active is not None:
            active.gone = True
            if active.cycle is not None:
                active.cycle.disconnected()
            if active.task is not None and active.route is not None:
                # An edge route's work is for nobody now: it leaves the model's queue. (A task
                # cancelled before it ever ran closes nothing itself: closed here, idempotently.)
                active.task.cancel()
                if active.lane:
                    active.close(CLIENT_CLOSED, "client_closed")
        for x in self._queue:
            x.close(CLIENT_CLOSED, "client_closed")
        self._queue.clear()
        current = self._current
        if current is not None and current is not active:
            current.close(CLIENT_CLOSED, "client_closed")  # gone while its body was read
        self._current = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def eof_received(self) -> bool | None:
        # The client's end of the stream: taken as the client gone (as uvicorn and nginx do), so
        # the work of a request it abandoned is cancelled at once rather than finished for nobody.
        # A client that half-closes after pipelining requests therefore gets no answers.
        return None  # the transport closes; connection_lost follows

    def pause_writing(self) -> None:
        """The client is not reading its answers fast enough: stop reading its requests (and, in
        :meth:`done`, serving the next pipelined one) until it does; past ``send_timeout_s`` it
        is disconnected (:meth:`_on_timer`)."""
        self._write_paused = True
        self._write_paused_at = self.loop.time()
        self.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None
        answered = self._after_write
        if answered is not None:
            self._after_write = None
            self._next(answered)
        else:
            self.resume_reading()

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        if self._write_paused and not self._lost:
            if self._drained is None:
                self._drained = self.loop.create_future()
            await self._drained

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: no new request; the one in progress is answered first."""
        self._closing = True
        if self._active is None and not self._queue and self._current is None:
            self._close()

    # -- serving ---------------------------------------------------------------------------

    def _dispatch(self, x: Request) -> None:
        self._active = x
        if x.refusal is not None:
            self._answer_refusal(x)
            return
        edge = self.edge
        sheds = edge.sheds(x.path)
        if sheds and edge.at_capacity():
            edge.shed(x.method, x.path, x.query, x.client)
            keep_alive = x.keep_alive and x.complete and not self.closing
            self.write(edge.shed_response(self.server_state.default_headers, keep_alive, x.path))
            x.status = 503  # answered and logged by Edge.shed: no exchange lifecycle for a shed request
            x.keep_alive = keep_alive
            self.done(x)
            return
        if sheds and not x.streaming:
            # Probes and metrics are neither shed nor counted; nor are uploads, dispatched before
            # their body arrives (a slow upload must not hold a slot: it holds a connection).
            x.take_slot()
        if x.expect and not x.complete:
            x.expect = False
            self.write(CONTINUE)
        if x.lane:
            coroutine = self._serve(x)
        else:
            x.cycle = cycle = AsgiCycle(self, x)
            coroutine = cycle.run(self.bound.app, self._scope(x))
        task = self.loop.create_task(coroutine, context=contextvars.Context())
        x.task = task
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if not x.lane:  # the lane's task closes its exchange itself (or connection_lost does)
            task.add_done_callback(x.settled)

    async def _serve(self, x: Request) -> None:
        """The predict lane: an edge route served straight from the parsed request."""
        assert x.route is not None
        try:
            response = await self.edge.serve(x.route, x)
        except asyncio.CancelledError:
            return  # the client is gone (closed as 499 by the edge); nothing to write
        except Exception as exc:  # the edge's own bookkeeping failed: still answer, then close
            response = wire_error(exc, method=x.method, path=x.path)
            x.keep_alive = False
            x.close(response.status)
        self.answer(x, response)

    def answer(self, x: Request, response: WireResponse) -> None:
        """Write a whole answer in one write, then go on to what the connection does next."""
        keep_alive = x.keep_alive and x.complete and not self.closing
        x.keep_alive = keep_alive
        self.write(
            encode_http11(
                response,
                default_headers=self.default_headers(),
                keep_alive=keep_alive,
            )
        )
        self.done(x)

    def done(self, x: Request) -> None:
        """``x`` has been answered: close the connection, or serve what comes next."""
        self.server_state.total_requests += 1
        if self._active is x:
            self._active = None
        if self._lost or self._eof:
            return
        if self._write_paused and x.keep_alive:
            self._after_write = x  # the client is not reading: nothing more until it does
            return
        self._next(x)

    def _next(self, x: Request) -> None:
        if not x.keep_alive:
            self._close(lingering=not x.complete, reason=x.refusal[1] if x.refusal else None)
            return
        if self._queue:
            self._dispatch(self._queue.popleft())
            return
        self.resume_reading()
        self._since = self.loop.time()
        self._idle_limit = self.limits.keep_alive_s
        current = self._current
        if current is not None and current.streaming and not current.complete:
            self._dispatch(current)  # an upload whose turn has come

    def _scope(self, x: Request) -> dict[str, Any]:
        root = self.bound.root_path
        client = x.client
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": x.http_version,
            "server": self.sockname,
            "client": (client, self.peer_port if client == self.peer else 0) if client else None,
            "scheme": self._scheme_of(x),
            "method": x.method,
            "root_path": root,
            "path": root + x.path,
            "raw_path": root.encode("ascii") + x.raw_path,
            "query_string": x.query,
            "headers": x.headers,
            "state": self.app_state.copy(),
            "mlgate.exchange": x,
        }
        return scope

    def _scheme_of(self, x: Request) -> str:
        if self.bound.proxies.trusts(self.peer):
            for name, value in x.headers:
                if name == b"x-forwarded-proto":
                    proto = value.decode("latin-1").strip().lower()
                    if proto in ("http", "https"):
                        return proto
        return self.scheme

    # -- refusals and closing ----------------------------------------------------------------

    def _refuse(self, error: MlgateError, reason: str) -> None:
        """Refuse the request being read (or a head not yet complete): answered in its turn, after
        the requests pipelined before it, then the connection is closed (nothing after it is read)."""
        self._ignore = True
        x = self._current
        self._current = None
        if x is None:
            x = self._head_exchange()
        elif x is self._active:  # a streaming request: its application answers (and closes)
            if x.cycle is not None:
                x.cycle.fail(error, reason)
            return
        x.refusal = (error, reason)
        x.keep_alive = False
        if self._active is None and not self._queue:
            self._answer_refusal(x)
        else:
            self._queue.append(x)
            self.pause_reading()

    def _head_exchange(self) -> Request:
        """An exchange for a request refused before its head was complete: what was read of it."""
        method = "-"
        if self._url:  # the method has been parsed
            try:
                method = self.parser.get_method().decode("ascii")
            except (UnicodeDecodeError, httptools.HttpParserError):
                method = "-"
        path, _, query = self._url[:256].partition(b"?")
        x = self.edge.open(
            method, path.decode("latin-1") or "-", query, [], _NO_HEADERS, self.peer, False, Request
        )
        assert isinstance(x, Request)
        if self._header_count:  # the request line is complete: its route can be told
            x.label = self.edge.label(method, x.path)
        x.prepare(0, False, "1.1", b"")
        return x

    def _answer_refusal(self, x: Request) -> None:
        assert x.refusal is not None
        error, reason = x.refusal
        self._active = x
        self.answer(x, self.edge.refusal(x, error, reason))

    def _refuse_connection(self) -> None:
        """Over ``max_connections``: a 503 at once, then closed (the request is not read)."""
        self._ignore = True
        x = self.edge.open("-", "-", b"", [], _NO_HEADERS, self.peer, False)
        x.label = "(connection)"
        error = Overloaded("too many open connections; retry shortly", retry_after=1.0)
        response = self.edge.refusal(x, error, "too_many_connections")
        self.write(
            encode_http11(
                response,
                default_headers=self.default_headers(),
                keep_alive=False,
            )
        )
        # A short linger: long enough for a request already sent to be read (not reset), short
        # enough that a flood of refused connections holds few file descriptors.
        self._close(lingering=True, reason="too_many_connections", linger=_REFUSED_LINGER_S)

    def _close(
        self, *, lingering: bool = False, reason: str | None = None, linger: float = _LINGER_S
    ) -> None:
        """Close, or — when the client may still be sending (an unread body) — shut the write
        side and discard what arrives for a moment, so the answer is read instead of reset.
        ``reason``: why the server closes on its own (counted), None for an answered close."""
        self._ignore = True
        transport = self.transport
        if self._eof or transport.is_closing():
            return
        self._eof = True
        if reason is not None:
            self.edge.metrics.http_closed.labels(reason).inc()
        if lingering and transport.can_write_eof():
            transport.write_eof()
            self.resume_reading()
            self.loop.call_later(linger, transport.close)
        else:
            transport.close()

    def write(self, data: bytes) -> None:
        """Write to the client, unless the connection is gone or our side shut."""
        if not (self._eof or self._lost):
            self.transport.write(data)

    @property
    def closing(self) -> bool:
        """The answer being written is the connection's last (it is closing, and no pipelined
        request is owed an answer after it)."""
        return self._closing and not self._queue

    def default_headers(self) -> bytes:
        """The server's default headers (``date``) as encoded header lines."""
        return default_header_bytes(self.server_state.default_headers)

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again, unless pipelined requests are still waiting their turn or the client is not
        reading its answers (what it sends meanwhile stays in the kernel's buffers, not here)."""
        if self._paused and not self._queue and not self._write_paused:
            self._paused = False
            self.transport.resume_reading()

    # -- timeouts ----------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        if self._lost or self._eof or self.transport.is_closing():
            return
        limits = self.limits
        now = self.loop.time()
        if self._write_paused and now - self._write_paused_at >= limits.send_timeout_s:
            # It reads nothing of what it was sent: its requests end (499), the connection goes.
            self.edge.metrics.http_closed.labels("send_timeout").inc()
            self._ignore = self._eof = True
            self.transport.abort()
            return
        elapsed = now - self._since
        active = self._active
        if active is not None:
            wait = limits.body_timeout_s
            if active.cycle is not None and not active.complete:  # an upload being streamed
                wait -= elapsed
                if wait <= 0:
                    self._refuse(RequestTimeout("request body not received in time"), "body_timeout")
                    return
        elif self._current is not None or self._skipping:
            wait = limits.body_timeout_s - elapsed
            if wait <= 0:
                if self._skipping:
                    self._close(reason="body_timeout")
                else:
                    self._refuse(RequestTimeout("request body not received in time"), "body_timeout")
                return
        elif self._parsing_head:
            wait = limits.header_timeout_s - elapsed
            if wait <= 0:
                self._refuse(RequestTimeout("request headers not received in time"), "header_timeout")
                return
        else:
            wait = self._idle_limit - elapsed
            if wait <= 0:
                self._close(reason="idle")  # closed without an answer, as keep-alive expiry is
                return
        self._timer = self.loop.call_later(min(max(wait, 0.01), self._tick), self._on_timer)
