"""The predict lane of MlgateProtocol on a real uvicorn server (loopback): edge-served routes are
answered without an ASGI cycle, and HTTP still behaves — keep-alive, pipelining, chunked bodies,
``Expect: 100-continue``, body limits, HTTP/1.0, proxies, disconnects, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import uvicorn

from mlgate.http.middleware import Edge
from mlgate.http.protocol import MlgateProtocol
from mlgate.http.serving import ServingRoutes
from mlgate.http.wire import WireRequest, WireResponse
from mlgate.settings import LogSettings
from mlgate.telemetry.access_log import AccessLog
from mlgate.telemetry.metrics import Metrics

LIMIT = 1000


class Lane:
    """An app whose edge serves ``/echo``, ``/slow``, ``/boom`` and ``/items/{name}`` itself."""

    def __init__(self, tmp_path: Path) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.asgi_paths: list[str] = []  # requests that reached the app behind the edge
        self.served: list[str] = []  # requests an endpoint ran for
        self.cancelled: list[str] = []  # requests whose endpoint was cancelled (client gone)
        self.state = SimpleNamespace(server=SimpleNamespace(name="server"))
        self.log_file = tmp_path / "access.log"
        serving = ServingRoutes()
        serving.add("/echo", self.echo)
        serving.add("/slow", self.slow)
        serving.add("/boom", self.boom)
        serving.add("/items/{name}", self.item, method="GET")
        self.access_log = AccessLog(LogSettings(access_stdout=False, access_file=self.log_file))
        self.edge = Edge(
            self.inner,
            owner=self,
            serving=serving,
            max_body_bytes=LIMIT,
            metrics=Metrics(),
            access_log=self.access_log,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.edge(scope, receive, send)
        elif scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                self.access_log.start()
                await send({"type": "lifespan.startup.complete"})
            self.access_log.stop()
            await send({"type": "lifespan.shutdown.complete"})

    async def inner(self, scope: Any, receive: Any, send: Any) -> None:
        self.asgi_paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def echo(self, request: WireRequest) -> WireResponse:
        self.served.append(request.path)
        assert request.server.name == "server"
        return WireResponse.json(
            {
                "size": len(request.body),
                "body": request.body.decode(),
                "api_key": request.api_key,
                "content_type": request.content_type,
                "version": request.query_param("version"),
            }
        )

    async def slow(self, request: WireRequest) -> WireResponse:
        self.served.append(request.path)
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(request.path)
            raise
        return WireResponse.json({"slow": True})

    async def boom(self, request: WireRequest) -> WireResponse:
        raise RuntimeError("a bug")

    async def item(self, request: WireRequest) -> WireResponse:
        self.served.append(request.path)
        return WireResponse.json({"name": request.params["name"]})


def _serve(tmp_path: Path, test: Callable[[Lane, int, uvicorn.Server], Awaitable[None]]) -> Lane:
    lane_app: Lane | None = None

    async def main() -> None:
        nonlocal lane_app
        lane_app = Lane(tmp_path)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(lane_app, http=MlgateProtocol, log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)
        try:
            await test(lane_app, port, server)
        finally:
            lane_app.release.set()
            server.should_exit = True
            await task

    asyncio.run(main())
    assert lane_app is not None
    return lane_app


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return int(status_line.split()[1]), headers, body


def _post(path: str, body: bytes = b'{"x": 1}', extra: str = "", version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nhost: t\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def test_edge_routes_are_answered_without_asgi_on_a_kept_alive_connection(tmp_path: Path) -> None:
    async def test(app: Lane, port: int, _: uvicorn.Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(3):
            body = json.dumps({"i": i}).encode()
            extra = "x-api-key: k1\r\ncontent-type: application/json\r\nx-request-id: rid-7\r\n"
            writer.write(_post("/echo?version=3", body, extra))
            status, headers, answer = await _read_response(reader)
            assert status == 200
            assert headers["content-type"] == "application/json"
            assert headers["x-request-id"] == "rid-7"
            assert "date" in headers
            assert "connection" not in headers  # kept alive
            assert json.loads(answer) == {
                "size": len(body),
                "body": body.decode(),
                "api_key": "k1",
                "content_type": "application/json",
                "version": "3",
            }
        writer.write(b"GET /items/a%20b HTTP/1.1\r\nhost: t\r\n\r\n")  # a GET route, a %-encoded param
        status, _, answer = await _read_response(reader)
        assert (status, json.loads(answer)) == (200, {"name": "a b"})
        writer.close()
        assert app.asgi_paths == []  # all four answered by the lane
        assert app.edge.inflight == 0

    _serve(tmp_path, test)


def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    async def test(app: Lane, port: int, _: uvicorn.Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/echo", b'"first"') + _post("/echo", b'"second"') + _post("/nowhere"))
        answers = [await _read_response(reader) for _ in range(3)]
        assert [json.loads(b)["body"] for _, _, b in answers[:2]] == ['"first"', '"second"']
        assert answers[2][0] == 404
        assert app.served == ["/echo", "/echo"]
        assert app.asgi_paths == ["/nowhere"]  # a pipelined lane request is the edge's over ASGI
        writer.close()

    _serve(tmp_path, test)


def test_chunked_bodies_and_expect_100_continue(tmp_path: Path) -> None:
    async def test(app: Lane, port: int, _: uvicorn.Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        chunks = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n" + chunks)
        status, _, answer = await _read_response(reader)
        assert (status, json.loads(answer)["body"]) == (200, "hello world")

        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"data")
        status, _, answer = await _read_response(reader)
        assert (status, json.loads(answer)["body"]) == (200, "data")
        writer.close()

    _serve(tmp_path, test)


def test_a_body_over_the_limit_is_answered_413_and_the_connection_closed(tmp_path: Path) -> None:
    async def test(app: Lane, port: int, _: uvicorn.Server) -> None:
        for request in (
            _post("/echo", b"x" * (LIMIT + 1)),  # declared too large
            b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"%x\r\n" % (LIMIT + 1)
            + b"y" * (LIMIT + 1)
            + b"\r\n0\r\n\r\n",  # found too large while reading
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers, answer = await _read_response(reader)
            assert status == 413
            assert headers["connection"] == "close"
            assert json.loads(answer)["error"]["code"] == "payload_too_large"
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        assert app.served == []
        assert app.edge.inflight == 0

    _serve(tmp_path, test)


def test_http_1_0_and_connection_close_are_honoured(tmp_path: Path) -> None:
    async def test(app: Lane, port: int, _: uvicorn.Server) -> None:
        for request in (_post("/echo", version="1.0"), _post("/echo", extra="connection: close\r\n")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers, _ = await _read_response(reader)
            assert (status, headers["connection"]) == (200, "close")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

    _serve(tmp_path, test)


def test_a_failing_endpoint_is_a_500_and_the_connection_stays_usable(tmp_path: Path) -> None:
    async def test(app: Lane, port: int, _: uvicorn.Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/boom"))
        status, _, answer = await _read_response(reader)
        assert status == 500
        assert json.loads(answer) == {"error": {"code": "internal", "message": "internal server error"}}
        writer.write(_post("/echo"))
        assert (await _read_response(reader))[0] == 200
        writer.close()

    _serve(tmp_path, test)


def test_the_access_log_has_the_forwarded_client_behind_a_trusted_proxy(tmp_path: Path) -> None:
    async def test(app: Lane, port: int, _: uvicorn.Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # 127.0.0.1: trusted by default
        writer.write(_post("/echo", extra="x-forwarded-for: 203.0.113.7\r\n"))
        await _read_response(reader)
        writer.write(_post("/echo"))
        await _read_response(reader)
        writer.close()

    app = _serve(tmp_path, test)
    lines = [json.loads(line) for line in app.log_file.read_text().splitlines()]
    assert [(x["url"], x["status"], x["client"]) for x in lines] == [
        ("/echo", 200, "203.0.113.7"),
        ("/echo", 200, "127.0.0.1"),
    ]


def test_a_client_gone_before_its_answer_cancels_its_work_frees_its_slot_and_logs_499(
    tmp_path: Path,
) -> None:
    async def test(app: Lane, port: int, _: uvicorn.Server) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/slow"))
        await asyncio.wait_for(app.entered.wait(), 5)
        writer.close()  # never released: only the disconnect can end the endpoint
        for _ in range(200):
            if app.edge.inflight == 0:
                break
            await asyncio.sleep(0.01)
        assert app.edge.inflight == 0
        assert app.cancelled == ["/slow"]
        # The connection still serves others, and the server is undisturbed.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/echo"))
        status, _, _ = await _read_response(reader)
        assert status == 200
        writer.close()

    app = _serve(tmp_path, test)
    lines = [json.loads(line) for line in app.log_file.read_text().splitlines()]
    assert [(line["url"], line["status"]) for line in lines] == [("/slow", 499), ("/echo", 200)]


def test_graceful_shutdown_answers_a_request_in_the_lane_first(tmp_path: Path) -> None:
    async def test(app: Lane, port: int, server: uvicorn.Server) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/slow"))
        await asyncio.wait_for(app.entered.wait(), 5)
        server.should_exit = True  # uvicorn waits for the lane's task
        await asyncio.sleep(0.2)
        app.release.set()
        status, headers, answer = await _read_response(reader)
        assert (status, json.loads(answer)) == (200, {"slow": True})
        assert headers["connection"] == "close"  # shutting down: no keep-alive
        writer.close()

    _serve(tmp_path, test)
