"""A streaming route (uploads) has its own body limit (``MLGATE_MAX_UPLOAD_BYTES``), apart from
every other route's (``MLGATE_MAX_BODY_BYTES``); each 413 names the setting that raises it —
under ``mlgate serve``'s protocol and under another server's (h11: the ASGI driver alone)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mlgate.http.protocol import HttpProtocol
from tests.unit.http.harness import LIMIT, MiniApp, post, read_response, serve

UPLOAD_LIMIT = 8 * LIMIT


def _chunked(path: str, size: int) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n".encode()
    chunk = b"%x\r\n" % LIMIT + b"u" * LIMIT + b"\r\n"
    return head + chunk * (size // LIMIT) + b"0\r\n\r\n"


@pytest.mark.parametrize("protocol", [HttpProtocol, "h11"], ids=["mlgate", "h11"])
def test_uploads_have_their_own_limit_and_each_413_names_its_setting(tmp_path: Path, protocol: Any) -> None:
    async def exchange(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        status, _, answer = await read_response(reader)
        writer.close()
        return status, json.loads(answer)

    async def test(app: MiniApp, port: int) -> None:
        # Over the default body limit, within the upload limit: streamed to the application.
        assert await exchange(port, post("/upload", b"u" * (4 * LIMIT))) == (
            200,
            {"path": "/upload", "size": 4 * LIMIT},
        )
        assert await exchange(port, _chunked("/upload", 4 * LIMIT)) == (
            200,
            {"path": "/upload", "size": 4 * LIMIT},
        )
        for request in (
            post("/upload", b"u" * (UPLOAD_LIMIT + 1)),
            _chunked("/upload", UPLOAD_LIMIT + LIMIT),
        ):
            status, body = await exchange(port, request)
            assert status == 413
            assert "MLGATE_MAX_UPLOAD_BYTES" in body["error"]["message"]
            assert body["error"]["details"] == {
                "limit_bytes": UPLOAD_LIMIT,
                "setting": "MLGATE_MAX_UPLOAD_BYTES",
            }
        for request in (
            post("/echo", b"x" * (LIMIT + 1)),
            post("/pass", b"x" * (LIMIT + 1)),
            _chunked("/pass", 2 * LIMIT),
        ):
            status, body = await exchange(port, request)
            assert status == 413
            assert "MLGATE_MAX_BODY_BYTES" in body["error"]["message"]
            assert body["error"]["details"]["limit_bytes"] == LIMIT

    app = serve(MiniApp(tmp_path, upload_limit=UPLOAD_LIMIT), test, http=protocol)
    reasons = [(x["url"], x["status"], x.get("reason")) for x in app.log_lines()]
    assert reasons == [
        ("/upload", 200, None),
        ("/upload", 200, None),
        ("/upload", 413, "body_too_large"),
        ("/upload", 413, "body_too_large"),
        ("/echo", 413, "body_too_large"),
        ("/pass", 413, "body_too_large"),
        ("/pass", 413, "body_too_large"),
    ]
