"""Profile mlgate under W1 load with py-spy (sampling, native frames off) and print where the
server's time goes, by function (self and cumulative share of samples).

    .venv-serve/bin/python bench/pyspy_profile.py [--workers 1] [--connections 64] [--seconds 8] [--path /prod]

py-spy comes from a bench environment (Ray's pulls it) or PATH; nothing is added to the project.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run
from procs import Server, ServerSpec, wrk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--path", default="/prod")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--services", default="temperatura")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(run.envs.ENVS / "ray" / "bin" / "py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="mlgate-profile-"))
    setup = run.prepare_mlgate(tmp / "data", args.services.split(","), tmp / "logs")
    spec = ServerSpec(
        "mlgate",
        "mlgate",
        lambda p: [run.MLGATE, "serve", "--port", str(p), "--workers", str(args.workers)],
        args.path,
        run.W1_BODY,
        run.check_ok,
        headers={"x-api-key": setup["key"]},
        env=setup["env"],
    )
    body = tmp / "body.json"
    body.write_bytes(run.W1_BODY)
    server = Server(spec, tmp / "logs")
    try:
        wrk(server.port, args.path, body, connections=16, seconds=1, headers=spec.headers)
        target = max(server.pids()) if args.workers > 1 else server.process.pid
        raw = tmp / "profile.txt"
        spy = subprocess.Popen(
            [
                pyspy,
                "record",
                "--pid",
                str(target),
                "--format",
                "raw",
                "-o",
                str(raw),
                "-d",
                str(int(args.seconds)),
                "--rate",
                "500",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        result = wrk(
            server.port,
            args.path,
            body,
            connections=args.connections,
            seconds=args.seconds,
            headers=spec.headers,
            server=server,
        )
        spy.wait(timeout=60)
    finally:
        server.stop()
    print(json.dumps({k: result[k] for k in ("rps", "p50_us", "p99_us", "server_cpu_us_per_req", "errors")}))
    summarize(raw, args.top)


def summarize(raw: Path, top: int) -> None:
    self_n: collections.Counter[str] = collections.Counter()
    cum_n: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        if frames and frames[0].startswith("process"):
            frames = frames[1:]
        frames = [f for f in frames if not f.startswith("thread")]
        total += n
        if frames:
            self_n[frames[-1]] += n
        for f in set(frames):
            cum_n[f] += n
    print(f"{total} samples")
    print("-- self --")
    for f, n in self_n.most_common(top):
        print(f"{100 * n / total:5.1f}%  {f}")
    print("-- cumulative --")
    for f, n in cum_n.most_common(top):
        print(f"{100 * n / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
