"""One request passed by ``mlgate serve``'s protocol to the ASGI application: its ``receive`` and
``send`` (the ASGI 3 HTTP interface), on top of the protocol's connection.

The body is the one the protocol read whole (one ``http.request`` message) or, on a streaming
route (uploads), what arrives as it arrives: past 64 KiB not yet received by the application,
the connection stops reading until it is. ``send`` writes the answer's head together with its
first body part (one write for the usual one-part answer), frames it as chunks when the
application gives no length, and checks that no header value can start a new line. After the
client has gone, ``receive`` answers ``http.disconnect`` and ``send`` writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Protocol

from mlgate.errors import MlgateError
from mlgate.http.exchange import CLIENT_CLOSED
from mlgate.http.request import Request
from mlgate.http.wire import STATUS_LINES, WireResponse
from mlgate.telemetry.context import REQUEST_ID

__all__ = ["AsgiCycle", "Connection"]

log = logging.getLogger("mlgate.http")

_HIGH_WATER = 64 * 1024
_BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_DISCONNECT = {"type": "http.disconnect"}
_INTERNAL = {"error": {"code": "internal", "message": "internal server error"}}


class Connection(Protocol):
    """What a cycle needs of its connection (:class:`mlgate.http.protocol.HttpProtocol`)."""

    @property
    def closing(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def default_headers(self) -> bytes: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def drain(self) -> None: ...

    def answer(self, x: Request, response: WireResponse) -> None: ...

    def done(self, x: Request) -> None: ...


class AsgiCycle:
    """``receive``/``send`` of one request run through the ASGI application."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_chunked",
        "_error",
        "_gone",
        "_head",
        "_last_sent",
        "_more",
        "_remaining",
        "_waiter",
        "complete",
        "protocol",
        "started",
        "x",
    )

    def __init__(self, protocol: Connection, x: Request) -> None:
        self.protocol = protocol
        self.x = x
        if x.streaming:
            self._buffer = x.chunks
            x.chunks = []
        else:
            self._buffer = [x.body] if x.body else []
        self._buffered = sum(len(c) for c in self._buffer)
        self._more = not x.complete
        self._last_sent = False  # the message with more_body false was received by the application
        self._waiter: asyncio.Future[None] | None = None
        self._error: tuple[MlgateError, str] | None = None
        self._gone = False
        self.started = self.complete = False
        self._head = b""
        self._chunked = False
        self._remaining = 0

    # -- from the protocol -------------------------------------------------------------------

    def feed(self, body: bytes, *, more: bool = True) -> None:
        """More of a streamed body (``more=False``: its end)."""
        if body:
            self._buffer.append(body)
            self._buffered += len(body)
            if self._buffered > _HIGH_WATER:
                self.protocol.pause_reading()
        if not more:
            self._more = False
        self._wake()

    def fail(self, error: MlgateError, reason: str) -> None:
        """The body cannot be read (too slow): the application's next ``receive`` raises ``error``."""
        self._error = (error, reason)
        self._wake()

    def disconnected(self) -> None:
        self._gone = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- ASGI --------------------------------------------------------------------------------

    async def run(self, app: Any, scope: dict[str, Any]) -> None:
        x = self.x
        REQUEST_ID.set(x.request_id)  # this task's: the dataplane's log lines name the request
        try:
            await app(scope, self.receive, self.send)
        except Exception as exc:  # mlgate's driver answers every error: this is a bug
            if not self._gone:
                log.error("mlgate: the ASGI application failed on %s %s", x.method, x.path, exc_info=exc)
            self._broken()
            return
        if self._gone:
            return  # nobody to answer (the exchange was closed as 499)
        if not self.started:
            log.error("mlgate: the ASGI application returned without answering %s %s", x.method, x.path)
            self._broken()
        elif not self.complete:
            log.error("mlgate: the ASGI application left %s %s unfinished", x.method, x.path)
            self._broken()

    def _broken(self) -> None:
        """Answer 500 if nothing was sent yet (else cut the connection), and close the exchange."""
        x = self.x
        x.keep_alive = False
        answered = self.started
        self.complete = True
        x.close(CLIENT_CLOSED if self._gone else 500, "client_closed" if self._gone else None)
        if self._gone:
            self.protocol.done(x)
        elif not answered:
            self.protocol.answer(x, WireResponse.json(_INTERNAL, 500))
        else:
            self.protocol.done(x)  # a partial answer: the connection cannot be reused

    async def receive(self) -> dict[str, Any]:
        while True:
            if self._gone or self.complete:
                return _DISCONNECT
            if self._error is not None:
                error, reason = self._error
                self.x.reason = reason
                raise error
            if self._buffer:
                chunks = self._buffer
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._buffer = []
                self._buffered = 0
                self._last_sent = not self._more
                if self._more:  # a streamed body: the application has caught up, read on
                    self.protocol.resume_reading()
                return {"type": "http.request", "body": body, "more_body": self._more}
            if not self._more and not self._last_sent:
                self._last_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self._more:
                self.protocol.resume_reading()
            await self._wait()  # more body, or (all of it received) the client gone / the answer sent

    async def send(self, message: dict[str, Any]) -> None:
        protocol = self.protocol
        if self._gone:
            return
        if message.get("more_body", False):
            # A streamed answer waits for a client that reads slowly. A whole answer (or the last
            # part) does not: it is handed to the transport and the application returns, so its
            # in-flight slot is not held by a client that stopped reading (the connection serves
            # nothing more until it reads on, and is dropped after send_timeout_s).
            await protocol.drain()
        kind = message["type"]
        x = self.x
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            self.started = True
            self._start(message["status"], message.get("headers", ()))
            return
        if kind != "http.response.body" or self.complete:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if x.method == "HEAD":
            body = b""
        elif self._chunked:
            framed = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            body = framed if more else framed + b"0\r\n\r\n"
        else:
            self._remaining -= len(body)
            if self._remaining < 0:
                raise RuntimeError("response body longer than its content-length")
        data = self._head + body if self._head else body
        self._head = b""
        if data:
            protocol.write(data)
        if not more:
            self.complete = True
            if self._remaining and not self._chunked and x.method != "HEAD":
                x.keep_alive = False  # shorter than announced: the connection cannot be reused
            self._wake()
            protocol.done(x)

    def _start(self, status: int, headers: Any) -> None:
        x = self.x
        protocol = self.protocol
        keep_alive = x.keep_alive and x.complete and not protocol.closing
        parts = [STATUS_LINES[status], protocol.default_headers()]
        length: int | None = None
        chunked = False
        for name, value in headers:
            if _BAD_NAME.search(name) or _BAD_VALUE.search(value):
                raise RuntimeError("invalid response header")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.lower() == b"chunked"
            elif name == b"connection" and b"close" in value.lower():
                keep_alive = False
                continue  # written once, below
            parts.append(b"%s: %s\r\n" % (name, value))
        if length is None and not chunked and x.method != "HEAD" and status not in (204, 304):
            chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        x.keep_alive = keep_alive
        self._chunked = chunked
        self._remaining = length or 0
        self._head = b"".join(parts)
