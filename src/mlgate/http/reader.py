"""Reading HTTP/1.1 requests off one of ``mlgate serve``'s connections, within the limits.

:class:`HttpReader` is the parsing half of :class:`mlgate.http.protocol.HttpProtocol`: llhttp
(httptools) callbacks that count what a request's head holds (431 past ``max_header_bytes`` or
``max_headers``, raw reads counted too: httptools buffers a header line it has not seen the end
of), build the request's :class:`~mlgate.http.request.Request` when its head is complete (or shed
it at once), collect its body (413 past its route's limit, framing included), start the phase
clocks the connection's timer reads, and hand a whole request to :meth:`HttpReader._dispatch`
— or queue it behind the one being served (pipelining, reading paused meanwhile). Trailer fields
of a chunked body are never taken for headers.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from typing import Any, cast

import httptools

from mlgate.errors import BadRequest, HeadersTooLarge, MlgateError
from mlgate.http.binding import Binding
from mlgate.http.edge import Edge
from mlgate.http.request import Request
from mlgate.http.wire import scan_headers
from mlgate.settings import HttpSettings

__all__ = ["CONTINUE", "HttpReader"]

log = logging.getLogger("mlgate.http")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Stop(Exception):
    """Raised from a parser callback when nothing more of this connection is to be parsed."""


class _Refused(Exception):
    """Raised from a parser callback to stop parsing: the request is refused with ``error``."""

    def __init__(self, error: MlgateError, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


class HttpReader(asyncio.Protocol):
    """The parser callbacks of a connection; the connection (the subclass) serves what they read."""

    # What the connection provides.
    bound: Binding
    edge: Edge
    limits: HttpSettings
    loop: asyncio.AbstractEventLoop
    server_state: Any
    transport: asyncio.Transport
    peer: str | None
    _active: Request | None
    _queue: deque[Request]
    _ignore: bool
    _closing: bool
    _since: float

    def _init_reading(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_count = 0
        self._head_size = 0  # bytes of the head seen by the callbacks
        self._head_raw = 0  # bytes of reads that held nothing but the current head
        self._expect = False
        self._parsing_head = False
        self._completed = 0  # messages completed (a read that completed one is not all head)
        self._current: Request | None = None  # headers read, body being read
        self._skipping = False  # the body being read belongs to a request answered already (shed)
        self._max_headers = self.limits.max_headers
        self._max_header_bytes = self.limits.max_header_bytes

    # -- what the connection does with what is read ------------------------------------------

    def _dispatch(self, x: Request) -> None:
        raise NotImplementedError

    def _refuse(self, error: MlgateError, reason: str) -> None:
        raise NotImplementedError

    def _close(self, *, lingering: bool = False, reason: str | None = None, linger: float = 2.0) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def pause_reading(self) -> None:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        if self._ignore:
            return
        in_body = self._current is not None or self._skipping
        in_head = self._parsing_head
        completed = self._completed
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._ignore = True  # served as plain HTTP; nothing after the upgrade request is read
            return
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Stop):
                return
            if isinstance(refused, _Refused):
                self._refuse(refused.error, refused.reason)
            else:
                log.error("mlgate: HTTP parser callback failed", exc_info=refused or exc)
                self._refuse(BadRequest("invalid HTTP request"), "bad_request")
            return
        except httptools.HttpParserError as exc:
            self._refuse(BadRequest(f"invalid HTTP request: {exc}"), "bad_request")
            return
        # The phases' clocks, read once per read and only when a message is left half-read (the
        # usual request arrives whole in one read, and costs no clock reading here).
        if self._parsing_head:
            if not in_head or self._completed != completed:
                self._since = self.loop.time()  # a head began in this read: its timeout starts
            elif not in_body:
                # All of this read is the current head (httptools buffers a header line it has
                # not seen the end of, which the callbacks' count cannot see).
                self._head_raw += len(data)
                if self._head_raw > self._max_header_bytes:
                    self._refuse(HeadersTooLarge("request headers too large"), "header_too_large")
        elif self._skipping or (
            self._current is not None and (self._active is None or self._current is self._active)
        ):
            self._since = self.loop.time()  # a body arrives: inactivity counts from this read
            current = self._current
            if current is not None and in_body and self._completed == completed:
                # All of this read is body, framing included: chunk extensions, which the parser
                # skips without a callback, must not make a body endless either.
                current.wire += len(data)
                if current.wire > 2 * current.limit + 65_536:
                    error = self.edge.too_large_error(current.limit, streaming=current.streaming)
                    self._refuse(error, "body_too_large")

    def on_message_begin(self) -> None:
        if self._ignore:
            raise _Stop  # e.g. pipelined after a request that closes the connection
        self._url = b""
        self._headers = []
        self._header_count = self._head_size = self._head_raw = 0
        self._expect = False
        self._parsing_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self._max_header_bytes:
            raise _Refused(HeadersTooLarge("request line too long"), "header_too_large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4
        if not self._parsing_head:
            # A chunked body's trailer fields: never merged into the request's headers (a trailer
            # "Host" or "X-Forwarded-Proto" must not rewrite the request), still within the limits.
            if self._header_count > self._max_headers or self._head_size > self._max_header_bytes:
                raise _Refused(HeadersTooLarge("trailer fields too large"), "header_too_large")
            return
        if self._header_count > self._max_headers:
            raise _Refused(HeadersTooLarge(f"more than {self._max_headers} headers"), "too_many_headers")
        if self._head_size > self._max_header_bytes:
            raise _Refused(HeadersTooLarge("request headers too large"), "header_too_large")
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace, which is not the value's
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._parsing_head = False
        parser = self.parser
        method = parser.get_method().decode("ascii")
        try:
            parsed = httptools.parse_url(self._url)  # "*", "host:port" (CONNECT): not a path
            raw_path: bytes = parsed.path
            path = raw_path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            raise _Refused(BadRequest("invalid request target"), "bad_request") from None
        if "%" in path:
            path = urllib.parse.unquote(path)
        edge = self.edge
        idle = self._active is None and not self._queue
        version = parser.get_http_version()
        keep_alive = version != "1.0" and parser.should_keep_alive() and not self._closing
        upgrade = parser.should_upgrade()
        if upgrade:
            keep_alive = False  # no protocol switch here: answered as plain HTTP, then closed
        if idle and edge.at_capacity() and edge.sheds(path):
            # Refused before anything else is built; its body, if any, is skipped.
            edge.shed(method, path, parsed.query or b"", self._client(self._headers))
            keep_alive = keep_alive and not self._expect  # a client waiting for 100 sends no body
            self.write(edge.shed_response(self.server_state.default_headers, keep_alive, path))
            self.server_state.total_requests += 1
            if keep_alive:
                self._skipping = True
            else:
                self._close(lingering=True)
            return
        headers = self._headers
        known = scan_headers(headers)
        client = self._client(headers) if known.forwarded else self.peer
        x = cast(
            Request,
            edge.open(
                method, path, parsed.query or b"", headers, known, client, not self.bound.root_path, Request
            ),
        )
        upload = None if x.route is not None else edge.stream_limit(method, path)
        limit = edge.limit_for(path) if upload is None else upload
        x.prepare(limit, keep_alive, version, raw_path)
        x.expect = self._expect
        x.lane = self.bound.lane and x.route is not None
        x.streaming = upload is not None
        self._current = x
        if known.content_length > limit:
            if x.route is None:
                x.label = edge.label(method, path)
            raise _Refused(edge.too_large_error(limit, streaming=x.streaming), "body_too_large")
        if upgrade and method != "GET" and (known.content_length or known.chunked):
            # The parser hands what follows an upgrade request to the new protocol, so its body
            # would be lost: refused, clearly, instead of served without it (curl --http2 sends one).
            error = BadRequest("a request with a body cannot ask for an Upgrade here; send it without one")
            raise _Refused(error, "bad_request")
        if idle:
            if x.streaming:
                self._dispatch(x)
            elif x.expect:
                x.expect = False
                self.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        x = self._current
        if x is None:
            return  # a shed request's body: skipped
        x.size += len(body)
        if x.cycle is not None:
            x.cycle.feed(body)  # streamed to the application, which enforces the limit
        elif x.size > x.limit:
            raise _Refused(self.edge.too_large_error(x.limit), "body_too_large")
        else:
            x.chunks.append(body)

    def on_message_complete(self) -> None:
        self._completed += 1
        x = self._current
        self._current = None
        if x is None:  # the end of a shed request's body
            self._skipping = False
            return
        x.complete = True
        if x.cycle is not None:
            x.cycle.feed(b"", more=False)
            return
        if not x.streaming:
            chunks = x.chunks
            x.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            x.chunks = []
        if x is self._active:
            return  # a streaming request dispatched already
        if self._active is None and not self._queue:
            self._dispatch(x)
        else:
            self._queue.append(x)  # pipelined: answered in order
            self.pause_reading()

    def _client(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The client's address: the peer's, or the one a trusted proxy forwarded."""
        forwarded = [v for n, v in headers if n == b"x-forwarded-for"]
        if not forwarded:
            return self.peer
        return self.bound.proxies.client(self.peer, b", ".join(forwarded).decode("latin-1"))
