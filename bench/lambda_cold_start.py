"""Lambda cold start (issue 18): process start → first answer through AWS's Runtime Interface
Emulator, for the template's two functions (``mlgate deploy aws``: the regressor — temperatura,
cardiaco — and the detector — intrusos, vehiculos). Target: regressor < 1 s, detector < 2 s
(the seed measured 1–2 s and 3–5 s on AWS).

Each run is a fresh container: a fresh data dir (``/tmp/mlgate`` on Lambda: SQLite registry, local
store), the emulator spawned with ``<python> -m awslambdaric mlgate.aws_lambda.handler`` (as the
Lambda base image runs it; tests/lambda_rie.py) and the function's environment, then the seed's
own request as a REST API event — ``POST /prod`` with 60 readings, ``POST /prodfaces`` with a
photo of a cat — timed from just before the spawn to the answer (checked: 200 and the seed's
body). Also recorded: the CPU time the runtime process used up to that answer (every thread;
less sensitive to a busy machine than the wall time) and the emulator's billed ``Duration``.

Two variants, alternated run by run: ``image`` — the task root holds the registry at the newest
schema the Dockerfile makes (``python -m mlgate.aws_lambda schema``), copied at the cold start —
and ``migrate`` — without it: the migrations (Alembic) run at every cold start, as the handler
did before issue 18.

    .venv/bin/python bench/lambda_cold_start.py              # 5 runs per function and variant (~2 min)
    .venv/bin/python bench/lambda_cold_start.py --quick      # 2 runs
    options: --no-write (docs/benchmarks.md untouched), --out FILE

It needs the test venv (awslambdaric is a dev dependency) and the emulator
(``make .venv-tools/.installed``); bench/run.py (``make bench``, the serve venv) does not run it,
it only keeps its last section when it regenerates the file. Its section of docs/benchmarks.md sits between
``<!-- lambda-cold-start:start -->`` and ``<!-- lambda-cold-start:end -->``; its targets row
starts with ``| Lambda cold start``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sections import Part

from mlgate.deploy.aws import FUNCTIONS

START, END = "<!-- lambda-cold-start:start -->", "<!-- lambda-cold-start:end -->"
TARGET_ROW = "| Lambda cold start"
TARGETS_S = {"Regressor": 1.0, "Detector": 2.0}
SEED_FIGURES = {"Regressor": "1–2 s", "Detector": "3–5 s"}
VARIANTS = ("image", "migrate")
SEED_READINGS = [round(22.1 - i * (22.1 - 16.2) / 59, 1) for i in range(60)]


def log(msg: str) -> None:
    print(f"[lambda-cold-start {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cat_jpeg() -> bytes:
    import io

    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def rest_event(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The seed client's call as a REST API (v1) proxy event with API Gateway's key."""
    headers = {"Content-Type": "application/json", "Host": "abc123.execute-api.eu-west-1.amazonaws.com"}
    return {
        "resource": path,
        "path": path,
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": "POST",
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": "bench-0000",
            "identity": {"apiKey": "apigw-bench-key-0123456789", "sourceIp": "203.0.113.7"},
        },
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "isBase64Encoded": True,
    }


def seed_call(function: str, jpeg: bytes) -> dict[str, Any]:
    if function == "Regressor":
        return rest_event("/prod", {"temperaturas": SEED_READINGS})
    return rest_event("/prodfaces", {"body": {"image": base64.b64encode(jpeg).decode()}})


def check(function: str, result: dict[str, Any]) -> None:
    if result.get("statusCode") != 200:
        raise RuntimeError(f"{function}: {result!r}")
    body = json.loads(result["body"])
    if function == "Regressor":
        assert body["statusCode"] == 200 and body["body"]["unidad"] == "Celsius", body
    else:
        assert body["statusCode"] == 200 and body["body"]["objetos"][0]["clase"] == "cat", body


def one_run(function: Any, variant: str, schema_db: Path, jpeg: bytes, work: Path) -> dict[str, Any]:
    from tests.lambda_rie import run_lambda

    data_dir = work / "tmp-mlgate"
    env = {
        "MLGATE_SERVICES": json.dumps(list(function.services)),
        "MLGATE_LAMBDA_KEYS": "apigateway",
        "MLGATE_DATA_DIR": str(data_dir),
        "MLGATE_ALERTS__ENABLED": "false",
        "MLGATE_STATS__ENABLED": "false",
        "MLGATE_ADMIN_KEY": "mlg_benchadmin_" + "b" * 40,
    }
    event = seed_call(function.logical_id, jpeg)
    with run_lambda(
        work,
        env,
        function_name=f"mlgate-{function.logical_id}Function",
        memory_mb=function.memory_mb,
        timeout_s=function.timeout_s,
        schema_db=schema_db if variant == "image" else None,
    ) as emulator:
        invocation = emulator.invoke(event)
        wall = time.monotonic() - emulator.spawned_at
        cpu = emulator.runtime_cpu_seconds()
        check(function.logical_id, invocation.result)
        warm = emulator.invoke(event)
        check(function.logical_id, warm.result)
        reports = emulator.reports()
    billed = float(reports[0].split("\tDuration: ")[1].split(" ms")[0]) / 1000 if reports else None
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "invoke_s": invocation.seconds,
        "report_duration_s": billed,
        "warm_s": warm.seconds,
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(out_dir: Path, *, quick: bool = False) -> dict[str, Any]:
    # imported here: bench/run.py (the serve venv, without awslambdaric and pytest) imports this
    # module only to keep its section of docs/benchmarks.md
    from tests.lambda_rie import make_schema_db

    n = 2 if quick else 5
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_start = loadavg()
    jpeg = cat_jpeg()
    scratch = Path(tempfile.mkdtemp(prefix="lambda-cold-", dir=out_dir))
    schema_db = make_schema_db(scratch / "mlgate-schema.db")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for function in FUNCTIONS:
            per_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
            for i in range(n):
                order = VARIANTS if i % 2 == 0 else tuple(reversed(VARIANTS))
                for variant in order:
                    work = scratch / f"{function.logical_id}-{variant}-{i}"
                    work.mkdir()
                    result = one_run(function, variant, schema_db, jpeg, work)
                    per_variant[variant].append(result)
                    log(
                        f"{function.logical_id} {variant} #{i + 1}: {result['wall_s']:.2f} s to the first answer "
                        f"(runtime CPU {result['cpu_s']:.2f} s), warm {result['warm_s'] * 1000:.0f} ms"
                    )
                    shutil.rmtree(work, ignore_errors=True)
            runs[function.logical_id] = per_variant
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    functions: dict[str, Any] = {}
    for function in FUNCTIONS:
        name = function.logical_id
        functions[name] = {
            "services": list(function.services),
            "memory_mb": function.memory_mb,
            "target_s": TARGETS_S[name],
            "seed": SEED_FIGURES[name],
            "variants": {
                v: {
                    "wall_s": summary([r["wall_s"] for r in rs]),
                    "cpu_s": summary([r["cpu_s"] for r in rs]),
                    "warm_ms": summary([r["warm_s"] * 1000 for r in rs]),
                }
                for v, rs in runs[name].items()
            },
            "runs": runs[name],
        }
        functions[name]["met"] = functions[name]["variants"]["image"]["wall_s"]["median"] < TARGETS_S[name]
    return {
        "quick": quick,
        "started": started,
        "n": n,
        "cpus": os.cpu_count(),
        "load_start": load_start,
        "load_end": loadavg(),
        "functions": functions,
        "met": all(f["met"] for f in functions.values()),
    }


def render(result: dict[str, Any]) -> str:
    lines = [START, "## Lambda cold start (Runtime Interface Emulator)", ""]
    lines.append(
        f"Issue 18: `bench/lambda_cold_start.py` ({'quick mode, ' if result['quick'] else ''}{result['started']}; "
        f"{result['cpus']} cores, shared — load average {result['load_start'][0]:.1f} at the start, "
        f"{result['load_end'][0]:.1f} at the end). The template's two functions run by AWS's Runtime "
        "Interface Emulator with awslambdaric (as the Lambda base image runs them), each run a fresh "
        "container with a fresh data dir (SQLite, local store): from spawning the emulator to the answer "
        "to the seed's own request (`POST /prod`, `POST /prodfaces` with a cat photo) as a REST API event, "
        f"{result['n']} runs per function and variant, alternated. *image*: the task root holds the registry "
        "at the newest schema the Dockerfile makes (copied at the cold start); *migrate*: without it (the "
        "migrations run at every cold start, as before issue 18). Runtime CPU: what the runtime process "
        "used up to that answer, every thread (less sensitive to the machine's other load than the wall "
        "time). Targets: regressor < 1 s, detector < 2 s (the seed on AWS: 1–2 s, 3–5 s)."
    )
    lines += [
        "",
        "| function | services | variant | first answer s (median) | min | max | runtime CPU s (median) "
        "| warm answer ms (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, f in result["functions"].items():
        for variant, v in f["variants"].items():
            lines.append(
                f"| {name} ({f['memory_mb']} MB) | {', '.join(f['services'])} | {variant} | "
                f"{v['wall_s']['median']:.2f} | {v['wall_s']['min']:.2f} | {v['wall_s']['max']:.2f} | "
                f"{v['cpu_s']['median']:.2f} | {v['warm_ms']['median']:.1f} |"
            )
    lines.append(END)
    return "\n".join(lines)


def target_row(result: dict[str, Any]) -> str:
    parts = []
    for name, f in result["functions"].items():
        image = f["variants"]["image"]
        parts.append(
            f"{name.lower()} {image['wall_s']['median']:.2f} s (CPU {image['cpu_s']['median']:.2f} s; "
            f"seed {f['seed']})"
        )
    return (
        f"{TARGET_ROW}: regressor < 1 s, detector < 2 s (emulator, process start → first answer) | "
        f"{'; '.join(parts)}; load average {result['load_start'][0]:.0f}–{result['load_end'][0]:.0f} on "
        f'{result["cpus"]} shared cores — section "Lambda cold start" | '
        f"{'**met**' if result['met'] else '**not met**'} |"
    )


PART = Part(
    name="lambda_cold_start",
    start=START,
    end=END,
    target_row=TARGET_ROW,
    run=run,
    render=render,
    row=target_row,
    met=lambda r: bool(r["met"]),
)
read, write = PART.read, PART.write


def main() -> int:
    return PART.main(__doc__)


if __name__ == "__main__":
    sys.exit(main())
