"""``mlgate serve``'s HTTP protocol on a real uvicorn server (loopback): the edge's routes are
answered straight from the parser (the predict lane) and HTTP still behaves — keep-alive,
pipelining, chunked bodies, ``Expect: 100-continue``, body limits, HTTP/1.0, proxies,
disconnects, load shedding, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.unit.http.harness import LIMIT, MiniApp, post, read_response, serve, wait_for


def test_edge_routes_are_answered_without_asgi_on_a_kept_alive_connection(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(3):
            body = json.dumps({"i": i}).encode()
            extra = "x-api-key: k1\r\ncontent-type: application/json\r\nx-request-id: rid-7\r\n"
            writer.write(post("/echo?version=3", body, extra))
            status, headers, answer = await read_response(reader)
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
        status, _, answer = await read_response(reader)
        assert (status, json.loads(answer)) == (200, {"name": "a b"})
        writer.close()
        assert app.asgi_paths == []  # all four answered by the lane
        assert app.edge.inflight == 0

    serve(MiniApp(tmp_path), test)


def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            post("/echo", b'"first"') + post("/pass", b"{}") + post("/echo", b'"second"') + post("/no")
        )
        answers = [await read_response(reader) for _ in range(4)]
        assert [a[0] for a in answers] == [200, 200, 200, 404]
        assert json.loads(answers[0][2])["body"] == '"first"'
        assert json.loads(answers[1][2]) == {"path": "/pass", "size": 2}
        assert json.loads(answers[2][2])["body"] == '"second"'
        assert app.served == ["/echo", "/echo"]
        assert app.asgi_paths == ["/pass", "/no"]
        writer.close()

    app = serve(MiniApp(tmp_path), test)
    assert [(x["url"], x["status"]) for x in app.log_lines()] == [
        ("/echo", 200),
        ("/pass", 200),
        ("/echo", 200),
        ("/no", 404),
    ]


def test_chunked_bodies_and_expect_100_continue(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        chunks = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n" + chunks)
        status, _, answer = await read_response(reader)
        assert (status, json.loads(answer)["body"]) == (200, "hello world")

        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"data")
        status, _, answer = await read_response(reader)
        assert (status, json.loads(answer)["body"]) == (200, "data")
        writer.close()

    serve(MiniApp(tmp_path), test)


def test_a_body_over_the_limit_is_answered_413_and_the_connection_closed(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        for request in (
            post("/echo", b"x" * (LIMIT + 1)),  # declared too large
            b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"%x\r\n" % (LIMIT + 1)
            + b"y" * (LIMIT + 1)
            + b"\r\n0\r\n\r\n",  # found too large while reading
            post("/pass", b"z" * (LIMIT + 1)),  # a route behind the edge: the same answer
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers, answer = await read_response(reader)
            assert status == 413
            assert headers["connection"] == "close"
            assert json.loads(answer)["error"]["code"] == "payload_too_large"
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        assert app.served == []
        assert app.asgi_paths == []
        assert app.edge.inflight == 0

    app = serve(MiniApp(tmp_path), test)
    assert [(x["url"], x["status"], x["reason"]) for x in app.log_lines()] == [
        ("/echo", 413, "body_too_large"),
        ("/echo", 413, "body_too_large"),
        ("/pass", 413, "body_too_large"),
    ]


def test_http_1_0_and_connection_close_are_honoured(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        for request in (post("/echo", version="1.0"), post("/echo", extra="connection: close\r\n")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers, _ = await read_response(reader)
            assert (status, headers["connection"]) == (200, "close")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

    serve(MiniApp(tmp_path), test)


def test_a_failing_endpoint_is_a_500_and_the_connection_stays_usable(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in ("/boom", "/fail"):  # an edge route, a route behind the edge
            writer.write(post(path))
            status, _, answer = await read_response(reader)
            assert status == 500
            assert json.loads(answer) == {"error": {"code": "internal", "message": "internal server error"}}
            writer.write(post("/echo"))
            assert (await read_response(reader))[0] == 200
        writer.close()
        assert app.edge.inflight == 0

    serve(MiniApp(tmp_path), test)


def test_the_access_log_has_the_forwarded_client_behind_a_trusted_proxy(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # 127.0.0.1: trusted by default
        writer.write(post("/echo", extra="x-forwarded-for: 203.0.113.7, 127.0.0.1\r\n"))
        await read_response(reader)
        writer.write(post("/pass", extra="x-forwarded-for: 203.0.113.8\r\n"))
        await read_response(reader)
        writer.write(post("/echo"))
        await read_response(reader)
        writer.close()

    app = serve(MiniApp(tmp_path), test)
    assert [(x["url"], x["client"]) for x in app.log_lines()] == [
        ("/echo", "203.0.113.7"),
        ("/pass", "203.0.113.8"),
        ("/echo", "127.0.0.1"),
    ]

    untrusted = serve(MiniApp(tmp_path / "u", forwarded_allow_ips=["10.0.0.1"]), test)
    assert {x["client"] for x in untrusted.log_lines()} == {"127.0.0.1"}


def test_a_client_gone_before_its_answer_cancels_its_work_frees_its_slot_and_logs_499(
    tmp_path: Path,
) -> None:
    async def test(app: MiniApp, port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/slow"))
        await asyncio.wait_for(app.entered.wait(), 5)
        writer.close()  # never released: only the disconnect can end the endpoint
        await wait_for(lambda: app.edge.inflight == 0)
        assert app.cancelled == ["/slow"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/echo"))
        assert (await read_response(reader))[0] == 200
        writer.close()

    app = serve(MiniApp(tmp_path), test)
    lines = app.log_lines()
    assert [(x["url"], x["status"], x.get("reason")) for x in lines] == [
        ("/slow", 499, "client_closed"),
        ("/echo", 200, None),
    ]


def test_graceful_shutdown_answers_a_request_in_the_lane_first(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/slow"))
        await asyncio.wait_for(app.entered.wait(), 5)
        assert app.uvicorn is not None
        app.uvicorn.should_exit = True  # uvicorn waits for the lane's task
        await asyncio.sleep(0.3)
        app.release.set()
        status, headers, answer = await read_response(reader)
        assert (status, json.loads(answer)) == (200, {"slow": True})
        assert headers["connection"] == "close"  # shutting down: no keep-alive
        writer.close()

    serve(MiniApp(tmp_path), test)


# -- load shedding ----------------------------------------------------------------------------


def test_at_capacity_a_request_is_refused_before_anything_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    async def test(app: MiniApp, port: int) -> None:
        _, slow_w = await asyncio.open_connection("127.0.0.1", port)
        slow_w.write(post("/slow"))  # holds the one slot
        await asyncio.wait_for(app.entered.wait(), 5)
        assert app.edge.inflight == 1

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/echo", b"x" * 700))
        status, headers, body = await read_response(reader)
        assert status == 503
        assert headers["retry-after"] == "1"
        assert headers["content-type"] == "application/json"
        assert "date" in headers
        assert json.loads(body)["error"]["code"] == "overloaded"

        writer.write(b"GET /items/probe HTTP/1.1\r\nhost: t\r\n\r\n")
        assert (await read_response(reader))[0] == 503  # the edge's other routes too
        app.release.set()  # the slot frees: the same connection is served again
        await wait_for(lambda: app.edge.inflight == 0)
        writer.write(post("/echo"))
        status, _, body = await read_response(reader)
        assert status == 200
        assert app.served == ["/slow", "/echo"]
        assert app.sample("mlgate_http_requests_total", route="(shed)", method="POST", status="503") == 1
        writer.close()
        slow_w.close()

    serve(MiniApp(tmp_path, max_inflight=1), test)


def test_a_refused_request_that_asks_to_close_gets_its_connection_closed(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        _, slow_w = await asyncio.open_connection("127.0.0.1", port)
        slow_w.write(post("/slow"))
        await asyncio.wait_for(app.entered.wait(), 5)
        for request in (
            post("/echo", extra="connection: close\r\n"),
            post("/echo", version="1.0"),
            b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers, _ = await read_response(reader)
            assert status == 503
            assert headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
            writer.close()
        slow_w.close()

    serve(MiniApp(tmp_path, max_inflight=1), test)


# -- streaming bodies ---------------------------------------------------------------------------


def test_a_streaming_route_gets_its_body_as_it_arrives(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /upload HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
        await wait_for(lambda: app.asgi_paths == ["/upload"])  # dispatched before its body
        for _ in range(3):
            writer.write(b"100\r\n" + b"u" * 256 + b"\r\n")
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        status, _, answer = await read_response(reader)
        assert (status, json.loads(answer)) == (200, {"path": "/upload", "size": 768})
        writer.write(post("/echo"))
        assert (await read_response(reader))[0] == 200  # kept alive
        writer.close()

    serve(MiniApp(tmp_path), test)


# -- what a hostile client tried (each found once, kept here) ----------------------------------


def test_a_refusal_pipelined_behind_good_requests_is_answered_in_its_turn(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        for tail, status in (
            (b"GARBAGE\r\n\r\n", 400),
            (b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 7340032\r\n\r\n", 413),
            (b"GET /items/x HTTP/1.1\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/echo") + post("/pass") + tail)
            answers = [await read_response(reader) for _ in range(3)]
            assert [a[0] for a in answers] == [200, 200, status]
            assert "connection" not in answers[0][1] and "connection" not in answers[1][1]
            assert answers[2][1]["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

    app = serve(MiniApp(tmp_path), test)
    # One line each (a request passed to the application is logged when it returns, which may be
    # after the next pipelined answer: the answers above are in order, the lines need not be).
    assert sorted(x["status"] for x in app.log_lines()) == [200] * 6 + [400, 413, 431]


def test_chunked_trailers_never_become_request_headers(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /headers HTTP/1.1\r\nhost: good.example\r\ntransfer-encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\nx-forwarded-proto: https\r\nhost: evil.example\r\n\r\n"
        )
        status, _, body = await read_response(reader)
        seen = json.loads(body)
        assert status == 200
        assert seen["scheme"] == "http"
        assert ["host", "evil.example"] not in seen["headers"]
        assert [h for h in seen["headers"] if h[0] == "x-forwarded-proto"] == []
        writer.close()

    serve(MiniApp(tmp_path), test)


def test_pipelined_requests_wait_in_the_kernel_not_in_the_process(tmp_path: Path) -> None:
    """A client pipelining far ahead of the answers: the connection stops reading while requests
    are queued, so what the server holds is bounded by one read, not by what the client sends."""

    async def test(app: MiniApp, port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/slowpass", b"{}"))
        await asyncio.wait_for(app.entered.wait(), 5)
        flood = post("/pass", b"{}") * 20_000  # ~1.5 MB of requests
        writer.write(flood)
        assert app.uvicorn is not None
        [protocol] = list(app.uvicorn.server_state.connections)
        await wait_for(lambda: len(protocol._queue) > 0)  # the server has read some of it
        await asyncio.sleep(0.5)  # and has had every chance to read more
        queued = len(protocol._queue)
        assert queued < 5_000, queued  # one read's worth at most, not 20,000
        writer.close()

    serve(MiniApp(tmp_path), test)


def test_an_upload_dispatched_before_its_body_holds_no_in_flight_slot(tmp_path: Path) -> None:
    async def test(app: MiniApp, port: int) -> None:
        upload_r, upload_w = await asyncio.open_connection("127.0.0.1", port)
        upload_w.write(
            b"POST /upload HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await wait_for(lambda: app.asgi_paths == ["/upload"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/echo"))  # max_inflight=1, and the upload does not hold it
        assert (await read_response(reader))[0] == 200
        upload_w.write(b"0\r\n\r\n")
        assert (await read_response(upload_r))[0] == 200
        writer.close()
        upload_w.close()

    serve(MiniApp(tmp_path, max_inflight=1), test)
