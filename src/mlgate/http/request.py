"""A request on one of ``mlgate serve``'s connections: an :class:`~mlgate.http.exchange.Exchange`
with what the protocol (:mod:`mlgate.http.protocol`) needs to read and serve it — one object
per request, queued in order when requests are pipelined."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from mlgate.errors import MlgateError
from mlgate.http.exchange import CLIENT_CLOSED, Exchange

__all__ = ["BodySink", "Request"]

log = logging.getLogger("mlgate.http")


class BodySink(Protocol):
    """Where the protocol hands what it reads for a request being served through ASGI."""

    def feed(self, body: bytes, *, more: bool = True) -> None: ...

    def fail(self, error: MlgateError, reason: str) -> None: ...

    def disconnected(self) -> None: ...


class Request(Exchange):
    """An exchange as this protocol reads and serves it (one object per request)."""

    __slots__ = (
        "chunks",
        "complete",
        "cycle",
        "expect",
        "http_version",
        "keep_alive",
        "lane",
        "limit",
        "raw_path",
        "refusal",
        "size",
        "streaming",
        "task",
        "wire",
    )

    chunks: list[bytes]
    size: int
    wire: int  # bytes read while the body arrived, framing included
    limit: int
    keep_alive: bool
    complete: bool  # the whole message (head and body) has been read
    expect: bool  # waits for "100 Continue" before sending its body
    http_version: str
    raw_path: bytes
    lane: bool  # served straight from the parser (an edge route, lane on)
    streaming: bool  # its body streams to the application while it is read
    refusal: tuple[MlgateError, str] | None
    task: asyncio.Task[None] | None
    cycle: BodySink | None  # the ASGI cycle (mlgate.http.cycle) of a request passed to the application

    def prepare(self, limit: int, keep_alive: bool, version: str, raw_path: bytes) -> None:
        """The protocol's fields, set once the head is parsed (positional: once per request)."""
        self.chunks = []
        self.size = self.wire = 0
        self.limit = limit
        self.keep_alive = keep_alive
        self.complete = False
        self.expect = False
        self.http_version = version
        self.raw_path = raw_path
        self.lane = self.streaming = False
        self.refusal = None
        self.task = None
        self.cycle = None

    def settled(self, task: asyncio.Task[None]) -> None:
        """The request's task is over: whatever happened, its exchange is closed (a task cancelled
        before it ever ran — the client gone at once — closed nothing itself)."""
        if task.cancelled():
            self.close(CLIENT_CLOSED, "client_closed")
            return
        exc = task.exception()
        if exc is not None:
            log.error("mlgate: serving %s %s failed", self.method, self.path, exc_info=exc)
        self.close(500)
