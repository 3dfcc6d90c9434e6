"""Connection limits of ``mlgate serve``'s protocol, each with a clear answer: header size and
count (431), header and body timeouts (408), bad HTTP (400), idle keep-alive, open connections
(503). Every refusal is one access-log line and one metric, and leaves nothing in flight."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from tests.unit.http.harness import MiniApp, post, read_response, serve, wait_for


async def _refused(port: int, data: bytes, *, status: int, code: str) -> None:
    """Send ``data``, expect the edge's ``status`` answer and the connection closed after it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        got, headers, body = await read_response(reader)
        assert (got, json.loads(body)["error"]["code"]) == (status, code)
        assert headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


def _reasons(app: MiniApp) -> list[tuple[str, str, int, str | None]]:
    return [(x["method"], x["url"], x["status"], x.get("reason")) for x in app.log_lines()]


def test_too_many_headers_or_too_many_header_bytes_is_431(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        many = b"".join(b"x-h%d: v\r\n" % i for i in range(21))
        await _refused(
            port, b"POST /echo HTTP/1.1\r\nhost: t\r\n" + many + b"\r\n", status=431, code="headers_too_large"
        )
        big = b"x-big: " + b"b" * 5000 + b"\r\n"
        await _refused(
            port, b"POST /pass HTTP/1.1\r\nhost: t\r\n" + big + b"\r\n", status=431, code="headers_too_large"
        )
        await _refused(
            port, b"GET /" + b"u" * 5000 + b" HTTP/1.1\r\n\r\n", status=431, code="headers_too_large"
        )
        # One header line that never ends, sent in small pieces: refused before it is whole.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nx-endless: ")
        for _ in range(40):
            writer.write(b"e" * 256)
            await asyncio.sleep(0.002)
        status, _, _ = await read_response(reader)
        assert status == 431
        writer.close()
        assert app.edge.inflight == 0

    app = serve(MiniApp(tmp_path, max_headers=20, max_header_bytes=4096), test)
    assert _reasons(app) == [
        ("POST", "/echo", 431, "too_many_headers"),
        ("POST", "/pass", 431, "header_too_large"),
        ("GET", "/" + "u" * 255, 431, "header_too_large"),
        ("POST", "/echo", 431, "header_too_large"),
    ]
    # The route is told once the request line is known to be whole (a header line was complete).
    assert app.sample("mlgate_http_requests_total", route="/echo", method="POST", status="431") == 1
    assert app.sample("mlgate_http_requests_total", route="unmatched", method="POST", status="431") == 2


def test_a_head_that_stops_is_408_and_a_silent_connection_is_closed_unanswered(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)
        stalled_r, stalled_w = await asyncio.open_connection("127.0.0.1", port)
        stalled_w.write(b"POST /echo HTTP/1.1\r\nhost: t\r\nx-a: 1\r\n")  # and then nothing
        status, headers, body = await read_response(stalled_r, timeout=10)
        assert (status, json.loads(body)["error"]["code"]) == (408, "request_timeout")
        assert headers["connection"] == "close"
        assert await asyncio.wait_for(stalled_r.read(), 5) == b""
        assert await asyncio.wait_for(silent_r.read(), 10) == b""  # closed, no answer
        silent_w.close()
        stalled_w.close()

    app = serve(MiniApp(tmp_path, header_timeout_s=0.3), test)
    assert _reasons(app) == [("POST", "/echo", 408, "header_timeout")]


def test_a_body_that_stops_is_408_and_holds_no_slot_meanwhile(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        stalled_r, stalled_w = await asyncio.open_connection("127.0.0.1", port)
        stalled_w.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/echo"))  # max_inflight=1: the stalled body holds no slot
        assert (await read_response(reader))[0] == 200
        status, headers, body = await read_response(stalled_r, timeout=10)
        assert (status, json.loads(body)["error"]["code"]) == (408, "request_timeout")
        assert headers["connection"] == "close"
        writer.close()
        stalled_w.close()
        assert app.edge.inflight == 0

    app = serve(MiniApp(tmp_path, max_inflight=1, body_timeout_s=0.5), test)
    assert _reasons(app) == [("POST", "/echo", 200, None), ("POST", "/echo", 408, "body_timeout")]


def test_an_upload_that_stops_is_408_too(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
        status, headers, body = await read_response(reader, timeout=10)
        assert (status, json.loads(body)["error"]["code"]) == (408, "request_timeout")
        assert headers["connection"] == "close"
        writer.close()
        await wait_for(lambda: app.edge.inflight == 0)

    app = serve(MiniApp(tmp_path, body_timeout_s=0.5), test)
    assert _reasons(app) == [("POST", "/upload", 408, "body_timeout")]


def test_an_idle_kept_alive_connection_is_closed(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/echo"))
        assert (await read_response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()

    serve(MiniApp(tmp_path, keep_alive_s=0.3), test)


@pytest.mark.parametrize(
    "data",
    [
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n",  # bad chunk
        b"POST /pass HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nhost t\r\n\r\n",  # a header without a colon
        b"NOT-HTTP\r\n\r\n",
        b"CONNECT example.org:443 HTTP/1.1\r\nhost: example.org\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nhost: t\r\n\r\n",  # not ASCII
    ],
    ids=["bad-chunk", "length-and-chunked", "bad-header", "not-http", "connect", "non-ascii"],
)
def test_bad_http_is_400_logged_and_closed(
    tmp_path: Path, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(app: MiniApp, port: int) -> None:
        await _refused(port, data, status=400, code="bad_request")
        assert app.edge.inflight == 0

    app = serve(MiniApp(tmp_path), test)
    [line] = app.log_lines()
    assert (line["status"], line["reason"]) == (400, "bad_request")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # a client's error, not ours


def test_over_max_connections_a_new_connection_gets_503_at_once(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await wait_for(lambda: app.uvicorn is not None and len(app.uvicorn.server_state.connections) == 3)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, headers, body = await read_response(reader)
        assert (status, json.loads(body)["error"]["code"]) == (503, "overloaded")
        assert headers["retry-after"] == "1"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        held[0][1].close()  # one leaves: a new one is served
        await wait_for(lambda: app.uvicorn is not None and len(app.uvicorn.server_state.connections) == 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/echo"))
        assert (await read_response(reader))[0] == 200
        writer.close()
        for _, w in held[1:]:
            w.close()

    app = serve(MiniApp(tmp_path, max_connections=3), test)
    assert _reasons(app)[0] == ("-", "-", 503, "too_many_connections")


def test_a_client_that_reads_nothing_is_not_sent_more_and_is_disconnected(tmp_path: Path) -> None:
    """Pipelined requests for big answers, never read: the server stops serving (and reading)
    them while the answers wait in the socket, holds no more than about one answer in its buffers,
    and after ``send_timeout_s`` drops the connection, its queued requests logged as 499."""

    async def test(app: MiniApp, port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
        transport = writer.transport
        transport.pause_reading()  # read nothing
        writer.write(b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n" * 200)
        await wait_for(lambda: app.uvicorn is not None and len(app.uvicorn.server_state.connections) == 1)
        await asyncio.sleep(0.3)
        assert app.uvicorn is not None
        [protocol] = list(app.uvicorn.server_state.connections)
        assert protocol.transport.get_write_buffer_size() < 2 * 256 * 1024  # one answer over the mark
        await wait_for(lambda: not app.uvicorn.server_state.connections, timeout=10)  # send timeout
        writer.close()

    app = serve(MiniApp(tmp_path, send_timeout_s=1.0), test)
    statuses = Counter(x["status"] for x in app.log_lines())
    assert statuses[499] >= 1 and sum(statuses.values()) <= 200
    assert app.sample("mlgate_http_connections_closed_total", reason="send_timeout") == 1


def test_a_request_with_a_body_asking_for_an_upgrade_is_refused_clearly(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        data = (
            b"POST /echo HTTP/1.1\r\nhost: t\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
            b"http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\ncontent-length: 8\r\n\r\n" + b'{"x": 1}'
        )
        await _refused(port, data, status=400, code="bad_request")

    serve(MiniApp(tmp_path), test)


def test_a_body_made_endless_by_chunk_extensions_is_413(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n1;ext=")
        try:
            for _ in range(64):
                writer.write(b"e" * 16384)
                await asyncio.wait_for(writer.drain(), 5)
        except ConnectionError:
            pass
        status, _, body = await read_response(reader)
        assert (status, json.loads(body)["error"]["code"]) == (413, "payload_too_large")
        writer.close()

    serve(MiniApp(tmp_path), test)


def test_a_client_gone_while_the_application_works_is_499_without_an_error_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(app: MiniApp, port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/slowpass", b"{}"))
        await asyncio.wait_for(app.entered.wait(), 5)
        writer.close()
        await asyncio.sleep(0.1)
        app.release.set()  # the application answers a client that is gone
        await wait_for(lambda: app.edge.inflight == 0)

    app = serve(MiniApp(tmp_path), test)
    assert [(x["status"], x["reason"]) for x in app.log_lines()] == [(499, "client_closed")]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
