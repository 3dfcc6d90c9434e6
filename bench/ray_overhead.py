"""Ray Serve's cost per request (issue 18): mlgate's gateway + Ray Serve vs single-process mlgate,
W1 and W2, in the same run, on a real two-node Ray cluster on this machine.

One data directory (SQLite registry, file store, the temperatura and intrusos services, a key on a
plan that never throttles). A two-node Ray cluster (``ray start --head`` + ``ray start --address``,
1 CPU each, tests/ray_cluster/cluster.py) runs ``mlgate-temperatura`` and ``mlgate-intrusos`` (2 replicas
each, 1 per node, ``mlgate ray deploy``). Then, per round, the order alternated, each a fresh
process: ``mlgate serve`` (1 worker, models in the process) and ``mlgate serve`` with
``MLGATE_RAY__ADDRESS`` (1 worker, models in the replicas). For each: W1 (``POST /prod``, 60
floats) and W2 (``POST /prodfaces``, a 640x480 JPEG as base64): p50/p95 latency at c=1 (a
keep-alive client of its own, exact percentiles), throughput at c=16 (wrk, 1 thread). The overhead
is the gateway's p50 minus single-process p50 (ms) and their ratio; medians over rounds.

    .venv-ray/bin/python bench/ray_overhead.py            # 2 rounds (~4 min)
    .venv-ray/bin/python bench/ray_overhead.py --quick    # 1 round, shorter points
    options: --no-write (docs/benchmarks.md untouched), --out FILE

``make bench-ray`` runs it. Run from another interpreter without Ray (``make bench``'s), :func:`run`
runs itself in ``.venv-ray`` (``make $(RAY_VENV)/.installed``). Its section of docs/benchmarks.md
sits between ``<!-- ray-overhead:start -->`` and ``<!-- ray-overhead:end -->``, its targets row
starts with ``| Ray Serve behind the gateway``.
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import Server, ServerSpec, loadavg, wrk
from sections import Part

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- ray-overhead:start -->", "<!-- ray-overhead:end -->"
TARGET_ROW = "| Ray Serve behind the gateway"
RAY_PYTHON = ROOT / ".venv-ray" / "bin" / "python"
SYSTEMS = ("single", "ray")
LABELS = {"single": "single-process mlgate (1 worker)", "ray": "mlgate gateway + Ray Serve (2 nodes)"}
WORKLOADS = ("W1", "W2")
THROUGHPUT_C = 16


def log(msg: str) -> None:
    print(f"[ray-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _latencies(port: int, path: str, body: bytes, headers: dict[str, str], seconds: float) -> list[float]:
    """Sequential requests on one keep-alive connection for ``seconds``: each one's seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out: list[float] = []
    heads = {**headers, "Content-Type": "application/json"}
    try:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(out) < 20:
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers=heads)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {answer[:300]!r}")
            out.append(time.perf_counter() - started)
    finally:
        conn.close()
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _image() -> Path:
    import run as bench_run

    if not bench_run.IMAGE.exists():
        script = ROOT / "bench" / "images" / "make_images.py"
        subprocess.run([sys.executable, str(script), str(bench_run.IMAGES)], check=True)
    image: Path = bench_run.IMAGE
    return image


def _reexec(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Run in .venv-ray (this interpreter has no Ray): the child writes its result to a file."""
    if not RAY_PYTHON.exists():
        return {"unavailable": "Ray is not installed (make .venv-ray/.installed: mlgate[ray])"}
    target = out_dir / "ray-overhead-child.json"
    argv = [str(RAY_PYTHON), str(Path(__file__).resolve()), "--no-write", *(["--quick"] if quick else [])]
    env = {**os.environ, "MLGATE_RAY_BENCH_RESULT": str(target)}
    done = subprocess.run(argv, env=env, check=False, timeout=3600)
    if not target.exists():
        return {"unavailable": f"the .venv-ray run failed (exit {done.returncode})"}
    result: dict[str, Any] = json.loads(target.read_text())
    return result


def run(out_dir: Path, *, quick: bool) -> dict[str, Any]:
    """Measure both systems on W1 and W2, alternately; return the results."""
    if importlib.util.find_spec("ray") is None:
        return _reexec(out_dir, quick)
    result = _measure(out_dir, quick=quick)
    child_out = os.environ.get("MLGATE_RAY_BENCH_RESULT")
    if child_out:
        Path(child_out).write_text(json.dumps(result))
    return result


def _measure(out_dir: Path, *, quick: bool) -> dict[str, Any]:
    import run as bench_run

    sys.path.insert(0, str(ROOT))
    from tests.ray_cluster.cluster import RayCluster

    rounds = int(os.environ.get("BENCH_RAY_ROUNDS", "1" if quick else "2"))
    seconds = float(os.environ.get("BENCH_RAY_SECONDS", "3" if quick else "6"))
    if shutil.which("wrk") is None:
        return {"unavailable": "wrk is missing (apt-get install wrk)"}
    data, logs = out_dir / "data-ray", out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    image = _image()
    w2_body = json.dumps({"body": {"image": base64.b64encode(image.read_bytes()).decode()}}).encode()
    bodies = {"W1": bench_run.W1_BODY, "W2": w2_body}
    paths = {"W1": "/prod", "W2": "/prodfaces"}
    files = {}
    for w, body in bodies.items():
        files[w] = out_dir / f"ray-{w}.json"
        files[w].write_bytes(body)
    prepared = bench_run.prepare_mlgate(data, ["temperatura", "intrusos"], logs, launcher=bench_run.MLGATE)
    key = {"x-api-key": prepared["key"]}
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "rounds": rounds,
        "seconds": seconds,
        "load": {"start": loadavg()},
    }
    cluster = RayCluster(log=logs / "ray-cluster.log")
    started = time.perf_counter()
    cluster.start()
    result["cluster_start_s"] = time.perf_counter() - started
    ray_env = {
        "MLGATE_RAY__ADDRESS": cluster.address,
        "MLGATE_RAY__NUM_CPUS": "0.5",
        "MLGATE_RAY__MAX_REPLICAS_PER_NODE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
    try:
        started = time.perf_counter()
        deploy = subprocess.run(
            [bench_run.MLGATE, "ray", "deploy", "temperatura", "intrusos", "--replicas", "2"],
            env={**os.environ, **prepared["env"], **ray_env},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        (logs / "ray-deploy.log").write_text(deploy.stdout + deploy.stderr)
        if deploy.returncode != 0:
            raise RuntimeError(f"mlgate ray deploy: {deploy.stdout[-800:]} {deploy.stderr[-800:]}")
        result["deploy_s"] = time.perf_counter() - started
        log(f"cluster up in {result['cluster_start_s']:.1f} s, deployed in {result['deploy_s']:.1f} s")

        def spec(system: str) -> ServerSpec:
            env = dict(prepared["env"])
            if system == "ray":
                env |= ray_env
            return ServerSpec(
                f"ray-bench-{system}",
                LABELS[system],
                lambda p: [bench_run.MLGATE, "serve", "--port", str(p)],
                "/prod",
                bench_run.W1_BODY,
                bench_run.check_ok,
                headers=key,
                env=env,
                startup_timeout=300,
            )

        for rnd in range(rounds):
            for system in SYSTEMS if rnd % 2 == 0 else tuple(reversed(SYSTEMS)):
                server = Server(spec(system), logs)
                r: dict[str, Any] = {"round": rnd, "cold_start_s": server.cold_start_s}
                try:
                    for w in WORKLOADS:
                        wrk(server.port, paths[w], files[w], connections=4, seconds=1, headers=key)  # warm-up
                        lat = _latencies(server.port, paths[w], bodies[w], key, seconds)
                        hi = wrk(
                            server.port,
                            paths[w],
                            files[w],
                            connections=THROUGHPUT_C,
                            seconds=seconds,
                            headers=key,
                            server=server,
                        )
                        r[w] = {
                            "n_c1": len(lat),
                            "p50_ms": _pct(lat, 0.50) * 1000,
                            "p95_ms": _pct(lat, 0.95) * 1000,
                            "mean_ms": statistics.fmean(lat) * 1000,
                            "rps": hi["rps"],
                            "p50_c16_ms": hi["p50_us"] / 1000,
                            "gateway_cpu_us": hi["server_cpu_us_per_req"],
                            "errors": hi["errors"],
                            "load1": hi["load1"],
                        }
                        log(
                            f"round {rnd + 1}/{rounds} {system:<6} {w}: p50 {r[w]['p50_ms']:.2f} ms  "
                            f"p95 {r[w]['p95_ms']:.2f} ms  c={THROUGHPUT_C} {r[w]['rps']:.0f} req/s  "
                            f"errors {r[w]['errors']}"
                        )
                finally:
                    server.stop()
                runs[system].append(r)
    finally:
        left = cluster.stop()
        result["left_after_stop"] = left
        shutil.rmtree(data, ignore_errors=True)
    result["runs"] = runs
    result["summary"] = summarise(runs)
    result["load"]["end"] = loadavg()
    return result


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for w in WORKLOADS:
        single, ray = [r[w] for r in runs["single"]], [r[w] for r in runs["ray"]]

        def med(rows: list[dict[str, Any]], k: str) -> float:
            return statistics.median(row[k] for row in rows)

        out[w] = {
            "single_p50_ms": med(single, "p50_ms"),
            "ray_p50_ms": med(ray, "p50_ms"),
            "single_p95_ms": med(single, "p95_ms"),
            "ray_p95_ms": med(ray, "p95_ms"),
            "single_rps": med(single, "rps"),
            "ray_rps": med(ray, "rps"),
            "overhead_p50_ms": statistics.median(
                b["p50_ms"] - a["p50_ms"] for a, b in zip(single, ray, strict=True)
            ),
            "p50_ratio": statistics.median(
                b["p50_ms"] / a["p50_ms"] for a, b in zip(single, ray, strict=True)
            ),
            "rps_ratio": statistics.median(b["rps"] / a["rps"] for a, b in zip(single, ray, strict=True)),
            "errors": sum(r["errors"] for r in single + ray),
        }
    out["met"] = all(out[w]["errors"] == 0 for w in WORKLOADS)
    return out


def render(result: dict[str, Any]) -> str:
    lines = [START, "## Ray Serve behind the gateway", ""]
    if "unavailable" in result:
        lines += [f"Not measured: {result['unavailable']}.", END]
        return "\n".join(lines)
    s = result["summary"]
    lines.append(
        "Issue 18: the same requests through single-process mlgate (1 worker, the models in the process) "
        "and through mlgate's gateway (1 worker, `MLGATE_RAY__ADDRESS`) with each model a Ray Serve "
        "deployment on a two-node Ray cluster on this machine (`ray start --head` + `ray start "
        "--address`, 1 CPU each; 2 replicas per model, one per node, `mlgate ray deploy`). The gateway "
        "keeps keys, plans, limits, routing and metrics; the replicas run the processor, decoding, "
        "batching, the model and encoding. W1: `POST /prod` (60 floats); W2: `POST /prodfaces` (a "
        f"640x480 JPEG as base64). `bench/ray_overhead.py` ({'quick mode, ' if result['quick'] else ''}"
        f"{result['started']}), {result['rounds']} round(s), each system a fresh process per round, the "
        f"order alternated; c=1: a keep-alive client, sequential requests for {result['seconds']:g} s "
        f"(exact p50/p95); c={THROUGHPUT_C}: wrk, {result['seconds']:g} s. Overheads and ratios are "
        "medians of the per-round differences. Everything shares the same 2 cores: the gateway, both "
        "Ray nodes' daemons and the replicas, and the load generator."
    )
    lines += [
        "",
        f"| system | workload | round | p50 c=1 ms | p95 c=1 ms | req/s c={THROUGHPUT_C} | p50 c={THROUGHPUT_C} ms | gateway CPU µs/req | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        for r in result["runs"][system]:
            for w in WORKLOADS:
                p = r[w]
                lines.append(
                    f"| {LABELS[system]} | {w} | {r['round'] + 1} | {p['p50_ms']:.2f} | {p['p95_ms']:.2f} | "
                    f"{p['rps']:,.1f} | {p['p50_c16_ms']:.1f} | {p['gateway_cpu_us'] or 0:,.0f} | {p['errors']} |"
                )
    lines.append("")
    for w in WORKLOADS:
        x = s[w]
        added = (
            f"Ray Serve adds **{x['overhead_p50_ms']:.2f} ms** per request at p50, c=1"
            if x["overhead_p50_ms"] >= 0
            else f"no overhead measurable at p50, c=1 ({x['overhead_p50_ms']:.2f} ms: below this run's noise)"
        )
        lines.append(
            f"- **{w}**: {added} ({x['ray_p50_ms']:.2f} vs {x['single_p50_ms']:.2f} ms, "
            f"**{x['p50_ratio']:.2f}×**; p95 {x['ray_p95_ms']:.2f} vs {x['single_p95_ms']:.2f} ms); "
            f"throughput at c={THROUGHPUT_C} {x['rps_ratio']:.2f}× ({x['ray_rps']:,.1f} vs "
            f"{x['single_rps']:,.1f} req/s)."
        )
    load = result["load"]
    lines += [
        "",
        f"Load average (1 min) at the start and the end: {load['start'][0]:.2f}, {load['end'][0]:.2f} on "
        f"{os.cpu_count()} cores; the points' own are in the results JSON. The gateway's CPU per request "
        "counts the gateway process only (its Ray driver threads included), not the replicas.",
        "",
        f"Cluster start (2 nodes) {result['cluster_start_s']:.1f} s; `mlgate ray deploy` of both models "
        f"{result['deploy_s']:.1f} s; processes left after `ray stop`: {len(result['left_after_stop'])}.",
        END,
    ]
    return "\n".join(lines)


def target_row(result: dict[str, Any]) -> str:
    if "unavailable" in result:
        return f"{TARGET_ROW}: per-request overhead on W1 and W2, reported | not measured | – |"
    s = result["summary"]
    w1, w2 = s["W1"], s["W2"]
    return (
        f"{TARGET_ROW}: per-request overhead on W1 and W2, reported | W1 {w1['overhead_p50_ms']:+.2f} ms "
        f"p50 ({w1['p50_ratio']:.2f}×), {w1['rps_ratio']:.2f}× throughput c={THROUGHPUT_C}; W2 "
        f"{w2['overhead_p50_ms']:+.2f} ms p50 ({w2['p50_ratio']:.2f}×), {w2['rps_ratio']:.2f}× throughput "
        f'— section "Ray Serve behind the gateway" | {"reported" if s["met"] else "**errors**"} |'
    )


PART = Part(
    name="ray-overhead",
    start=START,
    end=END,
    target_row=TARGET_ROW,
    run=run,
    render=render,
    row=target_row,
    met=lambda r: bool(r.get("summary", {}).get("met")),
)
read, write = PART.read, PART.write


def main() -> int:
    return PART.main(__doc__)


if __name__ == "__main__":
    sys.exit(main())
