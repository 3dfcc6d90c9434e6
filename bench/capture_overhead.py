"""Data capture's cost on W1 (issue 15): capture at 100 % must keep ≥ 0.90× the throughput and
≤ 1.1× the p50 of the same server with capture off, and never lose an answered request's record
except by a counted drop.

One data directory (SQLite, the temperatura service, a key on a plan that never throttles),
served by ``mlgate serve --workers 2`` twice per repetition — capture off, then capture at
100 % (``MLGATE_CAPTURE__SAMPLE=1``), the order alternated — each a fresh process tree:
``wrk`` at c=64 (throughput, server CPU per request) and at c=1 (p50) on ``POST /prod``. After
each capture run the records written to ``store/capture/temperatura/`` are counted against the
requests answered (wrk's count plus the start-up check) and the drops against
``mlgate_capture_dropped_total``. Ratios are medians of the per-repetition ratios.

    .venv-serve/bin/python bench/capture_overhead.py            # 3 repetitions x 5 s (~3 min)
    .venv-serve/bin/python bench/capture_overhead.py --quick    # 2 x 3 s
    options: --no-write (docs/benchmarks.md untouched), --out FILE

``make bench`` runs it too (bench/run.py, part ``capture``). Its section of docs/benchmarks.md
sits between ``<!-- capture:start -->`` and ``<!-- capture:end -->``, its targets row starts
with ``| capture at 100 %``; both are replaced in place.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import Server, ServerSpec, loadavg, wrk
from sections import Part

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- capture:start -->", "<!-- capture:end -->"
TARGET_ROW = "| capture at 100 %"
THROUGHPUT_FLOOR = 0.90
P50_CEILING = 1.10
VARIANTS = ("off", "capture")


def log(msg: str) -> None:
    print(f"[capture-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _records(data_dir: Path) -> int:
    root = data_dir / "store" / "capture" / "temperatura"
    count = 0
    for path in root.rglob("*.jsonl"):
        with path.open("rb") as f:
            count += sum(1 for line in f if line.strip())
    return count


def run(out_dir: Path, *, quick: bool) -> dict[str, Any]:
    """Measure both variants alternately; return the results."""
    import run as bench_run  # the suite's W1 body, answer check and data-dir preparation

    reps = int(os.environ.get("BENCH_CAPTURE_REPS", "2" if quick else "3"))
    seconds = float(os.environ.get("BENCH_CAPTURE_SECONDS", "3" if quick else "5"))
    if shutil.which("wrk") is None:
        return {"unavailable": "wrk is missing (apt-get install wrk)"}
    data, logs = out_dir / "data-capture", out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    prepared = bench_run.prepare_mlgate(data / "w1", ["temperatura"], logs)
    body_file = out_dir / "capture-body.json"
    body_file.write_bytes(bench_run.W1_BODY)
    key = {"x-api-key": prepared["key"]}
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "reps": reps,
        "seconds": seconds,
        "load": {"start": loadavg()},
    }

    def spec(variant: str) -> ServerSpec:
        env = dict(prepared["env"])
        if variant == "capture":
            env["MLGATE_CAPTURE__SAMPLE"] = "1"
        return ServerSpec(
            f"capture-{variant}",
            f"mlgate, 2 workers, capture {variant}",
            lambda p: [bench_run.MLGATE, "serve", "--port", str(p), "--workers", "2"],
            "/prod",
            bench_run.W1_BODY,
            bench_run.check_ok,
            headers=key,
            env=env,
            workers=2,
        )

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    try:
        for rep in range(reps):
            for variant in VARIANTS if rep % 2 == 0 else tuple(reversed(VARIANTS)):
                shutil.rmtree(data / "w1" / "store" / "capture", ignore_errors=True)
                server = Server(spec(variant), logs)
                try:
                    wrk(
                        server.port, "/prod", body_file, connections=64, seconds=1, headers=key, server=server
                    )
                    hi = wrk(
                        server.port,
                        "/prod",
                        body_file,
                        connections=64,
                        seconds=seconds,
                        headers=key,
                        server=server,
                    )
                    lo = wrk(
                        server.port,
                        "/prod",
                        body_file,
                        connections=1,
                        seconds=seconds,
                        headers=key,
                        server=server,
                    )
                    dropped = _dropped(server)
                finally:
                    server.stop()  # capture flushes what is queued on the way down
                answered = hi["requests"] + lo["requests"]
                r = {
                    "rep": rep,
                    "rps": hi["rps"],
                    "cpu_us": hi["server_cpu_us_per_req"],
                    "p50_c1_us": lo["p50_us"],
                    "p50_c64_us": hi["p50_us"],
                    "errors": hi["errors"] + lo["errors"],
                    "load1": hi["load1"],
                }
                if variant == "capture":
                    # + the warm-up and start-up checks: at least as many records as measured answers
                    r["records"] = _records(data / "w1")
                    r["answered_measured"] = answered
                    r["dropped"] = dropped
                runs[variant].append(r)
                log(
                    f"rep {rep + 1}/{reps} {variant:<8} {r['rps']:8.0f} req/s  cpu {r['cpu_us'] or 0:5.0f} µs/req  "
                    f"p50 c=1 {r['p50_c1_us'] / 1000:.3f} ms  errors {r['errors']}"
                    + (
                        f"  records {r['records']} (answered {answered}, dropped {dropped})"
                        if "records" in r
                        else ""
                    )
                )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    result["runs"] = runs
    result["summary"] = summarise(runs)
    result["load"]["end"] = loadavg()
    return result


def _dropped(server: Server) -> float:
    """``mlgate_capture_dropped_total`` summed over a few scrapes (each worker answers some)."""
    from procs import get

    seen: dict[str, float] = {}
    for _ in range(8):
        try:
            status, body = get(server.port, "/metrics")
        except OSError:
            continue
        if status != 200:
            continue
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith("mlgate_capture_dropped_total"):
                total += float(line.rsplit(" ", 1)[1])
        seen[str(total)] = total
    return max(seen.values(), default=0.0)


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    off, cap = runs["off"], runs["capture"]
    rps_ratio = statistics.median(c["rps"] / o["rps"] for c, o in zip(cap, off, strict=True))
    p50_ratio = statistics.median(c["p50_c1_us"] / o["p50_c1_us"] for c, o in zip(cap, off, strict=True))
    cpu_ratio = statistics.median(c["cpu_us"] / o["cpu_us"] for c, o in zip(cap, off, strict=True))
    complete = all(c["records"] + c["dropped"] >= c["answered_measured"] for c in cap)
    errors = sum(r["errors"] for rs in runs.values() for r in rs)
    return {
        "rps_off": statistics.median(o["rps"] for o in off),
        "rps_capture": statistics.median(c["rps"] for c in cap),
        "rps_ratio": rps_ratio,
        "p50_ratio": p50_ratio,
        "cpu_ratio": cpu_ratio,
        "records_complete": complete,
        "dropped": sum(c["dropped"] for c in cap),
        "errors": errors,
        "met": rps_ratio >= THROUGHPUT_FLOOR and p50_ratio <= P50_CEILING and complete and errors == 0,
    }


def render(result: dict[str, Any]) -> str:
    lines = [START, "## Data capture at 100 %", ""]
    if "unavailable" in result:
        lines += [f"Not measured: {result['unavailable']}.", END]
        return "\n".join(lines)
    s = result["summary"]
    lines.append(
        f"Issue 15: W1 (`POST /prod`, temperatura, full gateway path) on `mlgate serve --workers 2`, "
        f"capture off vs every request captured (`MLGATE_CAPTURE__SAMPLE=1`: SageMaker-format JSON lines "
        f"written to the store by a background task). `bench/capture_overhead.py` "
        f"({'quick mode, ' if result['quick'] else ''}{result['started']}), {result['reps']} repetitions of "
        f"{result['seconds']:g} s per point, a fresh server each, the order alternated; ratios are medians "
        f"of the per-repetition ratios. Targets: ≥ {THROUGHPUT_FLOOR:.2f}× throughput, ≤ {P50_CEILING:.1f}× p50."
    )
    lines += [
        "",
        "| variant | rep | req/s c=64 | server CPU µs/req | p50 c=1 ms | p50 c=64 ms | records written | answered (measured) | dropped | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        for r in result["runs"][variant]:
            lines.append(
                f"| {variant} | {r['rep'] + 1} | {r['rps']:,.0f} | {r['cpu_us'] or 0:,.0f} | "
                f"{r['p50_c1_us'] / 1000:.3f} | {r['p50_c64_us'] / 1000:.2f} | {r.get('records', '–')} | "
                f"{r.get('answered_measured', '–')} | {r.get('dropped', '–')} | {r['errors']} |"
            )
    lines += [
        "",
        f"Throughput with capture: **{s['rps_ratio']:.3f}×** ({s['rps_capture']:,.0f} vs {s['rps_off']:,.0f} req/s), "
        f"p50 at c=1 **{s['p50_ratio']:.3f}×**, server CPU per request {s['cpu_ratio']:.3f}×. Every answered "
        f"request has its record (or a counted drop): {'yes' if s['records_complete'] else 'NO'}.",
        END,
    ]
    return "\n".join(lines)


def target_row(result: dict[str, Any]) -> str:
    if "unavailable" in result:
        return f"{TARGET_ROW} ≤ 10 % of W1 throughput, ≤ 1.1× p50 | not measured | – |"
    s = result["summary"]
    return (
        f"{TARGET_ROW} ≤ 10 % of W1 throughput, ≤ 1.1× p50 (2 workers) | {s['rps_ratio']:.3f}× throughput, "
        f"{s['p50_ratio']:.3f}× p50 at c=1, records complete: {'yes' if s['records_complete'] else 'no'} "
        f'— section "Data capture at 100 %" | {"**met**" if s["met"] else "**not met**"} |'
    )


PART = Part(
    name="capture",
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
