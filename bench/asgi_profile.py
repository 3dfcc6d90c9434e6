"""Per-request cost of mlgate's ASGI app without a socket: drive ``create_app()`` directly with
ASGI messages (``concurrency`` requests in flight, as under load), report µs per request and,
with ``--cprofile``, the functions that cost the most. A development tool for the hot path.

    .venv-serve/bin/python bench/asgi_profile.py [--requests 20000] [--concurrency 64] [--path /prod] [--cprofile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run


async def drive(app: Any, path: str, key: str, n: int, concurrency: int) -> tuple[float, dict[int, int]]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(run.W1_BODY)).encode()),
        (b"x-api-key", key.encode()),
    ]
    statuses: dict[int, int] = {}

    async def one() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": list(headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": run.W1_BODY, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope, receive, send)

    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, statuses


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mlgate-asgi-"))
    if args.mlgate:
        run.MLGATE = args.mlgate
    setup = run.prepare_mlgate(tmp / "data", ["temperatura"], tmp / "logs")
    os.environ.update(setup["env"])
    from mlgate.http.app import create_app

    app = create_app()
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await messages.put({"type": "lifespan.startup"})
    replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, messages.get, replies.put)
    )
    print(await replies.get())
    await drive(app, args.path, setup["key"], 2000, args.concurrency)  # warm-up
    prof = cProfile.Profile() if args.cprofile else None
    cpu0 = time.process_time()
    if prof:
        prof.enable()
    elapsed, statuses = await drive(app, args.path, setup["key"], args.requests, args.concurrency)
    if prof:
        prof.disable()
    cpu = time.process_time() - cpu0
    print(
        f"{args.requests} requests, c={args.concurrency}: {elapsed / args.requests * 1e6:.1f} µs wall, "
        f"{cpu / args.requests * 1e6:.1f} µs CPU per request; statuses {statuses}"
    )
    await messages.put({"type": "lifespan.shutdown"})
    await replies.get()
    await lifespan
    if prof:
        stats = pstats.Stats(prof)
        stats.sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--path", default="/prod")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--mlgate", help="an mlgate launcher for another source tree (with PYTHONPATH=that/src), to A/B"
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
