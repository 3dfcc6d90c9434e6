"""A small application with mlgate's edge in front, served by a real uvicorn on loopback.

:class:`MiniApp` has the edge's own routes (``/echo``, ``/slow``, ``/boom``, ``GET /items/{name}``)
and, behind the ASGI driver, a stand-in for FastAPI (``/pass``, ``/slowpass``, ``/fail``,
``/upload`` — a streaming route —, anything else 404). :func:`serve` runs it under
``mlgate serve``'s protocol (:class:`mlgate.http.protocol.HttpProtocol`), or under another of
uvicorn's protocols (``http="h11"``) to exercise the ASGI driver alone. No model, no database:
these tests are about HTTP and the request lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn

from mlgate.http.asgi import AsgiDriver
from mlgate.http.edge import Edge
from mlgate.http.exchange import Exchange
from mlgate.http.protocol import HttpProtocol
from mlgate.http.serving import ServingRoutes
from mlgate.http.wire import WireResponse
from mlgate.settings import Settings
from mlgate.telemetry.access_log import AccessLog
from mlgate.telemetry.metrics import Metrics

LIMIT = 1000


class MiniApp:
    """See the module docstring. ``http`` overrides :class:`~mlgate.settings.HttpSettings`."""

    def __init__(
        self, tmp_path: Path, *, max_inflight: int = 0, upload_limit: int | None = None, **http: Any
    ) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.asgi_paths: list[str] = []  # requests that reached the stand-in for FastAPI
        self.served: list[str] = []  # requests an edge endpoint ran for
        self.cancelled: list[str] = []  # edge endpoints cancelled (client gone)
        self.log_file = tmp_path / "access.log"
        self.settings = Settings(
            data_dir=tmp_path,
            max_inflight=max_inflight,
            http=http,  # type: ignore[arg-type]
            log={"access_stdout": False, "access_file": self.log_file},  # type: ignore[arg-type]
        )
        self.metrics = Metrics()
        self.access_log = AccessLog(self.settings.log)
        serving = ServingRoutes()
        serving.add("/echo", self.echo)
        serving.add("/slow", self.slow)
        serving.add("/boom", self.boom)
        serving.add("/items/{name}", self.item, method="GET")
        serving.add("/big", self.big, method="GET")
        self.edge = Edge(
            metrics=self.metrics,
            access_log=self.access_log,
            serving=serving,
            max_body_bytes=LIMIT,
            max_inflight=max_inflight,
        )
        self.edge.stream("/upload", limit=upload_limit)
        self.driver = AsgiDriver(self.edge, self.inner)
        self.uvicorn: uvicorn.Server | None = None  # the server running it (set by serve)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.driver(scope, receive, send)
        elif scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                self.access_log.start()
                await send({"type": "lifespan.startup.complete"})
            self.access_log.stop()
            await send({"type": "lifespan.shutdown.complete"})

    # -- the edge's own routes ---------------------------------------------------------------

    async def echo(self, x: Exchange) -> WireResponse:
        self.served.append(x.path)
        return WireResponse.json(
            {
                "size": len(x.body),
                "body": x.body.decode(),
                "api_key": x.api_key,
                "content_type": x.content_type,
                "version": x.query_param("version"),
            }
        )

    async def slow(self, x: Exchange) -> WireResponse:
        self.served.append(x.path)
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(x.path)
            raise
        return WireResponse.json({"slow": True})

    async def boom(self, x: Exchange) -> WireResponse:
        raise RuntimeError("a bug")

    async def item(self, x: Exchange) -> WireResponse:
        self.served.append(x.path)
        return WireResponse.json({"name": x.params["name"]})

    async def big(self, x: Exchange) -> WireResponse:
        return WireResponse(200, b"b" * 256 * 1024, content_type=b"text/plain")

    # -- the stand-in for FastAPI --------------------------------------------------------------

    async def inner(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"]
        self.asgi_paths.append(path)
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        if path == "/fail":
            raise RuntimeError("a bug behind the edge")
        if path == "/headers":  # what the application was told about the request
            seen = {
                "scheme": scope["scheme"],
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            }
            body = json.dumps(seen).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if path == "/slowpass":
            self.entered.set()
            await self.release.wait()
        if path in ("/pass", "/upload", "/slowpass"):
            body = json.dumps({"path": path, "size": size}).encode()
            status = 200
        else:
            body, status = b'{"error": {"code": "not_found", "message": "Not Found"}}', 404
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- afterwards ------------------------------------------------------------------------------

    def log_lines(self) -> list[dict[str, Any]]:
        """The access log (complete once :func:`serve` has returned)."""
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


Test = Callable[[MiniApp, int], Awaitable[None]]


@contextlib.asynccontextmanager
async def running(app: Any, *, http: Any = HttpProtocol) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """``app`` served by a real uvicorn on a free loopback port (its lifespan run), then stopped."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=http, log_level="warning", access_log=False, proxy_headers=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield server, port
    finally:
        server.should_exit = True
        await task


def serve(app: MiniApp, test: Test, *, http: Any = HttpProtocol) -> MiniApp:
    """Run ``test(app, port)`` against ``app`` on a real uvicorn server, then shut it down."""

    async def main() -> None:
        async with running(app, http=http) as (server, port):
            app.uvicorn = server
            try:
                await test(app, port)
            finally:
                app.release.set()

    asyncio.run(main())
    return app


async def read_response(
    reader: asyncio.StreamReader, timeout: float = 5
) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines if line)}
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
    else:
        body = b""
    return int(status_line.split()[1]), headers, body


def post(path: str, body: bytes = b'{"x": 1}', extra: str = "", version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nhost: t\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds (assert on timeout)."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()
