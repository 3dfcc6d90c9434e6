"""The bare HTTP floor: a raw ASGI endpoint that reads the body, parses the same JSON and
returns a constant, on mlgate's own server stack (uvicorn + uvloop + httptools, access log
off, no server header). Nothing can serve W1 faster on this stack; every figure is also
given as a ratio to it.

Run: ``python bench/floor_app.py --port 8001 [--workers 2]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

_ANSWER = orjson.dumps({"statusCode": 200, "body": {"prediccion": 20.15, "unidad": "Celsius"}})
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload = orjson.loads(body)
    if len(payload["temperaturas"]) != 60:
        raise ValueError("60 values")
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    # The same options `mlgate serve` passes (src/mlgate/cli.py).
    uvicorn.run(
        "floor_app:app",
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=30,
        log_level="warning",
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
