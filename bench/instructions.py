"""Instructions per W1 request, counted by valgrind (callgrind): a repeatable figure where this
shared machine's timings wander by ±20 % from one minute to the next.

A server runs under ``valgrind --tool=callgrind`` twice, answering N1 and then N2 requests of
the W1 ``/prod`` call (a key on a plan, metrics, the access log: the full path) from a client
outside valgrind (``C`` keep-alive connections); (total₂ − total₁) / (N2 − N1) is what one
request costs in user-space instructions, start-up cancelled out. The system calls' kernel work
is not counted (it is not user space). What refreshes by the clock (caches with a TTL, the usage
flush, heartbeats) is stretched to an hour: valgrind's slowness would charge it to every request
~50× over. Variants take parts of the path out to attribute the cost (a development tool; they
replace functions in the server process, never in the code):

- ``full``: the path as served;
- ``nopredict``: the model path (dataplane: processor, runtime, batcher, model thread) answered
  with a constant;
- ``noadmit``: the gateway (key, plan, limiter) skipped;
- ``bare``: both, and the access log and HTTP metrics too — the lane and the route's own
  parse/render only;
- ``shed``: every request refused at parse time (503 + Retry-After), what a refusal costs;
- ``nolane``: the full path with the predict lane off (every request through the ASGI driver);
- ``noobserve`` / ``nolog`` / ``nousage``: the full path without the HTTP metrics and the access
  log / without the access log / without usage recording;
- ``floor``: bench/floor_app.py (uvicorn's ASGI cycle, parse the JSON, a constant answer).

    .venv-serve/bin/python bench/instructions.py [full nopredict noadmit bare floor] [--n1 300 --n2 1500]

Each variant takes ~2-4 minutes (valgrind runs Python ~50× slower).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run
from procs import free_port

BENCH = Path(__file__).resolve().parent

# The server process, as a script valgrind runs: mlgate's app on uvicorn with mlgate serve's
# protocol, with the variant's parts replaced.
_SERVER = r"""
import asyncio, os, sys
import uvicorn
from mlgate.http.app import create_app
from mlgate.http.protocol import HttpProtocol
import mlgate.dataplane as dataplane
from mlgate.http import endpoints

variant = sys.argv[2]
# Under valgrind a second of wall time is ~50x fewer requests: what refreshes by the clock (the
# key and plan caches, 5 s; alias resolution, 1 s; the usage flush, 1 s; the workflow heartbeat,
# 10 s) would be charged to every request ~50x over. Stretched here to the steady state at full
# speed, where they amortise to nothing.
from mlgate.access.keys import KeyStore
from mlgate.access.plans import PlanStore
from mlgate.workflows.service import WorkflowService
KeyStore.verify_cached.__kwdefaults__["ttl"] = 3600.0
PlanStore.__init__.__kwdefaults__["cache_ttl"] = 3600.0
WorkflowService.__init__.__kwdefaults__["heartbeat_s"] = 3600.0
app = create_app()
if variant in ("nopredict", "bare"):
    async def predict(self, name, payload, *, version=None):
        return dataplane.Prediction(name, 1, {"prediccion": 20.15, "unidad": "Celsius"})
    dataplane.DataPlane.predict = predict
if variant in ("noadmit", "bare"):
    async def admit(*args, **kwargs):
        return None
    endpoints.admit = admit
if variant in ("bare", "noobserve"):
    app.edge.observe = lambda *args, **kwargs: None
if variant == "nolane":  # every request through the ASGI driver
    app.settings.http.lane = False
if variant == "shed":  # every request refused at parse time (503): what a refusal costs
    app.edge.at_capacity = lambda: True
if variant == "nolog":
    app.access_log.line = lambda *args, **kwargs: None
if variant == "nousage":
    from mlgate.access.gate import Gate
    Gate.record = lambda *args, **kwargs: None
config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False,
                        server_header=False, log_level="warning", loop="uvloop", http=HttpProtocol,
                        proxy_headers=False)
asyncio.run(uvicorn.Server(config).serve())
"""

# N requests over C keep-alive connections, each answer checked.
_CLIENT = r"""
import asyncio, sys
port, n, c, path, key = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
expect = sys.argv[7].encode()
body = open(sys.argv[6], "rb").read()
extra = f"x-api-key: {key}\r\n" if key != "-" else ""
request = (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}"
           f"content-length: {len(body)}\r\n\r\n").encode() + body
async def connection(count):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 " + expect), head
        length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
        await reader.readexactly(length)
    writer.close()
async def main():
    await asyncio.gather(*(connection(n // c) for _ in range(c)))
asyncio.run(main())
"""


def total_instructions(variant: str, n: int, c: int, setup: dict[str, object], work: Path) -> int:
    port = free_port()
    out = work / f"callgrind.{variant}.{n}.out"
    if variant == "floor":
        argv = [run.PY, str(BENCH / "floor_app.py"), "--port", str(port)]
        key = "-"
    else:
        server = work / "server.py"
        server.write_text(_SERVER)
        argv = [run.PY, str(server), str(port), variant]
        key = str(setup["key"])
    env = {
        **os.environ,
        **setup["env"],  # type: ignore[dict-item]
        "MLGATE_ALIAS_TTL_S": "3600",
        "MLGATE_LIMITER__USAGE_FLUSH_S": "60",
    }
    log = (work / f"{variant}.{n}.log").open("w")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 900
        while True:
            try:
                subprocess.run(
                    [
                        run.PY,
                        "-c",
                        _CLIENT,
                        str(port),
                        "1",
                        "1",
                        "/prod",
                        key,
                        str(work / "body.json"),
                        "503" if variant == "shed" else "200",
                    ],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{variant}: the server did not answer") from None
                time.sleep(1)
        status = "503" if variant == "shed" else "200"
        client = [
            run.PY,
            "-c",
            _CLIENT,
            str(port),
            str(n - 1),
            str(c),
            "/prod",
            key,
            str(work / "body.json"),
            status,
        ]
        subprocess.run(client, check=True, timeout=1800)
    finally:
        proc.terminate()
        proc.wait(timeout=300)
        log.close()
    text = (work / f"{variant}.{n}.log").read_text()
    found = re.findall(r"Collected : (\d+)", text)
    if not found:
        raise RuntimeError(f"{variant}: no callgrind total in {text[-500:]}")
    return int(found[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="*", default=["full", "nopredict", "noadmit", "bare", "floor"])
    parser.add_argument("--n1", type=int, default=300)
    parser.add_argument("--n2", type=int, default=1500)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="mlgate-instructions-"))
    (work / "body.json").write_bytes(run.W1_BODY)
    setup = run.prepare_mlgate(work / "data", ["temperatura"], work / "logs")
    results = {}
    for variant in args.variants:
        a = total_instructions(variant, args.n1, args.connections, setup, work)
        b = total_instructions(variant, args.n2, args.connections, setup, work)
        results[variant] = round((b - a) / (args.n2 - args.n1))
        print(f"{variant:<10} {results[variant]:>9,} instructions per request", flush=True)
    print("BENCH_JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
