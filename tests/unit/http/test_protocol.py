"""MlgateProtocol on a real uvicorn server (loopback): at capacity a request is refused with
the edge's preencoded 503 before any ASGI work; keep-alive, probes and ordering still hold."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn

from mlgate.http.middleware import Edge
from mlgate.http.protocol import MlgateProtocol
from mlgate.settings import LogSettings
from mlgate.telemetry.access_log import AccessLog
from mlgate.telemetry.metrics import Metrics


class Holder:
    """Stands in for the app uvicorn serves: an object whose ``edge`` fronts everything."""

    def __init__(self, tmp_path: Path) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls: list[str] = []  # what reached the app behind the edge
        self.seen: list[str] = []  # what reached ASGI at all
        self.metrics = Metrics()
        self.edge = Edge(
            self.inner,
            owner=self,
            max_body_bytes=1 << 20,
            metrics=self.metrics,
            access_log=AccessLog(LogSettings(access_stdout=False, access_file=tmp_path / "access.log")),
            max_inflight=1,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["path"])
            await self.edge(scope, receive, send)
        elif scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    async def inner(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(scope["path"])
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        if scope["path"] == "/slow":
            self.entered.set()
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


def _serve(tmp_path: Path, test: Callable[[Holder, int], Awaitable[None]]) -> None:
    async def main() -> None:
        holder = Holder(tmp_path)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(holder, http=MlgateProtocol, log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)
        try:
            await test(holder, port)
        finally:
            holder.release.set()
            server.should_exit = True
            await task

    asyncio.run(main())


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines if line)
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


def _post(path: str, body: bytes = b'{"x": 1}', extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def test_at_capacity_a_request_is_refused_before_asgi_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    async def test(holder: Holder, port: int) -> None:
        _, slow_w = await asyncio.open_connection("127.0.0.1", port)
        slow_w.write(_post("/slow"))  # holds the one slot
        await asyncio.wait_for(holder.entered.wait(), 5)

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert holder.edge.inflight == 1  # counted once, from parse time (reserved), not twice
        writer.write(_post("/predict", b"x" * 70_000))  # a body that spans several reads
        status, headers, body = await _read_response(reader)
        assert status == 503
        assert headers["retry-after"] == "1"
        assert headers["content-type"] == "application/json"
        assert "date" in headers
        assert json.loads(body)["error"]["code"] == "overloaded"
        assert holder.seen == ["/slow"]  # refused by the protocol: no ASGI call at all

        writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")  # probes are never shed
        status, _, body = await _read_response(reader)
        assert (status, body) == (200, b"ok")

        holder.release.set()  # the slot frees: the same connection is served again
        await asyncio.sleep(0.05)
        writer.write(_post("/predict"))
        status, _, body = await _read_response(reader)
        assert (status, body) == (200, b"ok")
        assert holder.calls == ["/slow", "/healthz", "/predict"]
        shed = holder.metrics.registry.get_sample_value(
            "mlgate_http_requests_total", {"route": "(shed)", "method": "POST", "status": "503"}
        )
        assert shed == 1
        assert holder.edge.inflight == 0  # every reserved slot was given back
        writer.close()
        slow_w.close()

    _serve(tmp_path, test)


def test_a_refused_request_that_asks_to_close_gets_its_connection_closed(tmp_path: Path) -> None:
    async def test(holder: Holder, port: int) -> None:
        _, slow_w = await asyncio.open_connection("127.0.0.1", port)
        slow_w.write(_post("/slow"))
        await asyncio.wait_for(holder.entered.wait(), 5)
        for ask in ("connection: close\r\n", ""):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            request = _post("/predict", extra=ask)
            if not ask:  # HTTP/1.0 without keep-alive
                request = request.replace(b"HTTP/1.1", b"HTTP/1.0")
            writer.write(request)
            status, headers, _ = await _read_response(reader)
            assert status == 503
            assert headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
            writer.close()
        slow_w.close()

    _serve(tmp_path, test)
