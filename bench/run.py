"""The mlgate benchmark suite (``make bench``): floors, mlgate and the peers in one run.

Workloads: W1 temperature (60 floats -> 1 float) on the bare ASGI floor, mlgate's full gateway
path and every peer; W2 the intruder detector (640x480 JPEG as base64) against its in-process
limit; W3 the vehicle workflow when its route exists. Systems are interleaved round by round
(rotating the order: A B C, B C A, ...) so machine drift cancels, medians of the rounds are
reported, and every figure is also a ratio to the floor measured in the same round.

Environment: ``BENCH_QUICK=1`` (1 round, 3 s points, FastAPI as the only peer),
``BENCH_PEERS=fastapi-async,ray`` (a subset), ``BENCH_ONLY=mlgate-1w,w2,w3,all,scale,capture,shadow,stats,ray`` (parts),
``BENCH_ROUNDS``, ``BENCH_SECONDS``,
``BENCH_OUT`` (default docs/benchmarks.md). Raw results go to bench/results/<stamp>/.
Run with the serving venv's python (``make bench`` does).
"""

from __future__ import annotations

import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import capture_overhead
import envs
import gateway_scale
import lambda_cold_start
import ray_overhead
import report
import shadow_overhead
import stats_api
from procs import Server, ServerSpec, loadavg, memory_mb, post, start_ready, wrk

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
MLGATE = str(Path(PY).parent / "mlgate")
MODEL = ROOT / "src" / "mlgate_services" / "temperatura" / "artifact" / "model.skops"
ONNX_MODEL = MODEL.with_name("model.onnx")
IMAGES = BENCH / ".envs" / "images" / "photos"
IMAGE = IMAGES / "person_640x480.jpg"
ADMIN_KEY = "mlg_benchadm_" + "b" * 40

QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if QUICK else "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3" if QUICK else "5"))
W2_SECONDS = float(os.environ.get("BENCH_W2_SECONDS", "4" if QUICK else "8"))
CONCURRENCY = (1, 16, 64)
ALL_PEERS = ("fastapi-async", "fastapi-sync", "bentoml", "litserve", "mlserver", "ray")
PEER_ENV = {"fastapi-async": "fastapi", "fastapi-sync": "fastapi"}

TEMPS = [round(20 + 4 * __import__("math").sin(i / 24 * 6.28), 1) for i in range(60)]
W1_BODY = json.dumps({"temperaturas": TEMPS}).encode()
V2_BODY = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [1, 60], "datatype": "FP64", "data": TEMPS}]}
).encode()


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- answer checks -------------------------------------------------------------------------


def _find(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for v in value.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


def check_prediction(expected: float) -> Callable[[int, bytes], str | None]:
    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return "status"
        try:
            doc = json.loads(body)
        except ValueError:
            return "not JSON"
        value = _find(doc, "prediccion")
        if value is None:
            value = _find(doc, "outputs")
            if isinstance(value, list) and value and isinstance(value[0], dict):
                value = value[0].get("data", [None])[0]  # V2: outputs[0].data[0]
        if isinstance(value, dict):
            value = value.get("prediccion")
        if not isinstance(value, int | float) or abs(round(float(value), 2) - expected) > 0.0051:
            return f"expected {expected}, got {value!r}"
        return None

    return check


def check_ok(status: int, body: bytes) -> str | None:
    return None if status == 200 else "status"


def check_detection(expected: dict[str, Any]) -> Callable[[int, bytes], str | None]:
    want = [(o["clase"], round(o["confianza"], 2)) for o in expected["objetos"]]

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return "status"
        doc = json.loads(body)
        got = [(o["clase"], round(o["confianza"], 2)) for o in doc.get("body", {}).get("objetos", [])]
        return None if got == want else f"expected {want}, got {got}"

    return check


# -- mlgate state: a data dir with a key on a large plan -----------------------------------


def prepare_mlgate(
    data_dir: Path, services: list[str] | None, logs: Path, *, launcher: str | None = None
) -> dict[str, Any]:
    """First start on an empty data dir (migrations + registration), then a plan and a key."""
    env = mlgate_env(data_dir, services)
    spec = ServerSpec(
        key=f"mlgate-setup-{data_dir.name}",
        label="setup",
        command=lambda port: [launcher or MLGATE, "serve", "--port", str(port)],
        path="/readyz",
        body=b"",
        check=check_ok,
        env=env,
        startup_timeout=300,
    )
    # /readyz is a GET: poll it by hand, timing the very first start.
    started = time.perf_counter()
    server = start_ready(spec, logs)
    first_ready = time.perf_counter() - started
    try:
        admin = {"x-api-key": ADMIN_KEY}
        plan = {"name": "bench", "rate": 1_000_000, "burst": 1_000_000, "quota_limit": 10**12}
        plan["quota_period"] = "MONTH"  # type: ignore[assignment]
        status, body = post(server.port, "/v1/plans", json.dumps(plan).encode(), admin)
        if status not in (201, 409):
            raise RuntimeError(f"plan: {status} {body[:200]!r}")
        status, body = post(server.port, "/v1/keys", b'{"name": "bench", "plan": "bench"}', admin)
        if status != 201:
            raise RuntimeError(f"key: {status} {body[:200]!r}")
        key = json.loads(body)["key"]
    finally:
        server.stop()
    return {"key": key, "first_start_ready_s": first_ready, "env": env}


def mlgate_env(data_dir: Path, services: list[str] | None) -> dict[str, str]:
    env = {
        "MLGATE_DATA_DIR": str(data_dir),
        "MLGATE_ADMIN_KEY": ADMIN_KEY,
        # Production logging: the access log to its rotating file, not to a terminal.
        "MLGATE_LOG__ACCESS_STDOUT": "false",
        "MLGATE_LOG__LEVEL": "WARNING",
    }
    if services is not None:
        env["MLGATE_SERVICES"] = json.dumps(services)
    return env


# -- the systems ---------------------------------------------------------------------------


def w1_specs(expected: float, w1: dict[str, Any], peers: list[str], logs: Path) -> list[ServerSpec]:
    check = check_prediction(expected)
    key = {"x-api-key": w1["key"]}
    specs = [
        ServerSpec(
            "floor-1w",
            "bare ASGI floor, 1 worker",
            lambda p: [PY, str(BENCH / "floor_app.py"), "--port", str(p)],
            "/prod",
            W1_BODY,
            check_ok,
        ),
        ServerSpec(
            "floor-2w",
            "bare ASGI floor, 2 workers",
            lambda p: [PY, str(BENCH / "floor_app.py"), "--port", str(p), "--workers", "2"],
            "/prod",
            W1_BODY,
            check_ok,
            workers=2,
        ),
        ServerSpec(
            "mlgate-1w",
            "mlgate, 1 worker",
            lambda p: [MLGATE, "serve", "--port", str(p)],
            "/prod",
            W1_BODY,
            check,
            headers=key,
            env=w1["env"],
        ),
        ServerSpec(
            "mlgate-2w",
            "mlgate, 2 workers (sharing the limiter file)",
            lambda p: [MLGATE, "serve", "--port", str(p), "--workers", "2"],
            "/prod",
            W1_BODY,
            check,
            headers=key,
            env=w1["env"],
            workers=2,
        ),
        ServerSpec(
            "mlgate-2w-db",
            "mlgate, 2 workers, limiter in the database (SQLite)",
            lambda p: [MLGATE, "serve", "--port", str(p), "--workers", "2"],
            "/prod",
            W1_BODY,
            check,
            headers=key,
            env={**w1["env"], "MLGATE_LIMITER__URL": "database"},
            workers=2,
        ),
    ]
    for workers in (1, 2):  # the predict lane off: every request through the ASGI driver
        specs.append(
            ServerSpec(
                f"nolane-{workers}w",
                f"mlgate, predict lane off, {workers} worker(s)",
                lambda p, w=workers: [MLGATE, "serve", "--port", str(p), "--workers", str(w)],
                "/prod",
                W1_BODY,
                check,
                headers=key,
                env={**w1["env"], "MLGATE_HTTP__LANE": "false"},
                workers=workers,
            )
        )
    for peer in peers:
        spec = peer_spec(peer, check, logs)
        specs.append(spec)
    baseline = os.environ.get("BENCH_BASELINE")  # an mlgate launcher of an older tree: before/after
    if baseline:
        old = prepare_mlgate(logs.parent / "data" / "w1-baseline", ["temperatura"], logs, launcher=baseline)
        for workers in (1, 2):
            specs.append(
                ServerSpec(
                    f"baseline-{workers}w",
                    f"mlgate at BENCH_BASELINE (an older tree), {workers} worker(s)",
                    lambda p, w=workers: [baseline, "serve", "--port", str(p), "--workers", str(w)],
                    "/prod",
                    W1_BODY,
                    check,
                    headers={"x-api-key": old["key"]},
                    env=old["env"],
                    workers=workers,
                )
            )
    return specs


def peer_spec(peer: str, check: Callable[[int, bytes], str | None], logs: Path) -> ServerSpec:
    env_name = PEER_ENV.get(peer, peer)
    python, why = envs.ensure(env_name, logs / f"env-{env_name}.log")
    folder = BENCH / "peers" / env_name
    common = {"BENCH_MODEL": str(MODEL)}
    if python is None:
        return ServerSpec(peer, peer, lambda p: [], "/", b"", check, unavailable=why)
    bindir = python.parent
    if peer in ("fastapi-async", "fastapi-sync"):
        module = "app_async" if peer == "fastapi-async" else "app_sync"
        style = "async def" if peer == "fastapi-async" else "def"
        return ServerSpec(
            peer,
            f"FastAPI ({style}) + uvicorn, 2 workers",
            lambda p: [
                str(bindir / "uvicorn"),
                f"{module}:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(p),
                "--workers",
                "2",
            ],
            "/prod",
            W1_BODY,
            check,
            env=common,
            cwd=folder,
            workers=2,
        )
    if peer == "bentoml":
        home = envs.ENVS / "bentoml" / "home"
        return ServerSpec(
            peer,
            "BentoML, workers=2",
            lambda p: [
                str(bindir / "bentoml"),
                "serve",
                "service:Temperatura",
                "--host",
                "127.0.0.1",
                "--port",
                str(p),
            ],
            "/predict",
            W1_BODY,
            check,
            env={**common, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"},
            cwd=folder,
            workers=2,
        )
    if peer == "litserve":
        return ServerSpec(
            peer,
            "LitServe, 2 CPU workers, fast_queue",
            lambda p: [str(python), "server.py", "--port", str(p)],
            "/predict",
            W1_BODY,
            check,
            env={**common, "LITSERVE_DISABLE_TELEMETRY": "1"},
            cwd=folder,
            workers=2,
        )
    if peer == "mlserver":
        repo = envs.ENVS / "mlserver" / "repo"
        model_dir = repo / "temperatura"
        model_dir.mkdir(parents=True, exist_ok=True)
        joblib_file = model_dir / "model.joblib"
        if not joblib_file.exists():
            subprocess.run([str(python), str(folder / "export.py"), str(MODEL), str(joblib_file)], check=True)
        (model_dir / "model-settings.json").write_text((folder / "model-settings.json").read_text())

        def command(p: int) -> list[str]:
            from procs import free_port

            settings = (folder / "settings.template.json").read_text()
            for name, value in (("http_port", p), ("grpc_port", free_port()), ("metrics_port", free_port())):
                settings = settings.replace(f'"{{{name}}}"', str(value))
            (repo / "settings.json").write_text(settings)
            return [str(bindir / "mlserver"), "start", str(repo)]

        return ServerSpec(
            peer,
            "MLServer (V2), parallel_workers=2",
            command,
            "/v2/models/temperatura/infer",
            V2_BODY,
            check,
            env=common,
            workers=2,
        )
    if peer == "ray":
        return ServerSpec(
            peer,
            "Ray Serve, 2 replicas",
            lambda p: [str(python), "app.py", "--port", str(p)],
            "/prod",
            W1_BODY,
            check,
            env={**common, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"},
            cwd=folder,
            workers=2,
            startup_timeout=180,
        )
    raise ValueError(peer)


# -- measurements --------------------------------------------------------------------------


def inprocess(kind: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [PY, str(BENCH / "inprocess.py"), kind, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON "))
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    return result


def make_images(logs: Path) -> None:
    """W2's and W3's photos, drawn from scikit-image's sample data in a helper env (bench/images)."""
    if (IMAGES / "person_640x480.jpg").is_file() and (IMAGES / "motorcycle.jpg").is_file():
        return
    python, why = envs.ensure("images", logs / "env-images.log")
    if python is None:
        raise SystemExit(f"bench: cannot draw the photos: {why}")
    subprocess.run([str(python), str(BENCH / "images" / "make_images.py"), str(IMAGES)], check=True)


def model_cold_start() -> float:
    """The floor under any Python server's W1 cold start: a fresh interpreter imports skops and
    scikit-learn, loads the model and predicts once (process start → exit)."""
    code = (
        f"import numpy as np, skops.io as sio; p = {str(MODEL)!r}; "
        "m = sio.load(p, trusted=sio.get_untrusted_types(file=p)); m.predict(np.zeros((1, 60)))"
    )
    started = time.perf_counter()
    subprocess.run([PY, "-c", code], check=True, timeout=120)
    return time.perf_counter() - started


def onnx_cold_start() -> float:
    """The floor under mlgate's W1 cold start: a fresh interpreter imports onnxruntime, loads the
    served export (model.onnx) and predicts once (process start → exit)."""
    code = (
        f"import numpy as np, onnxruntime as ort; s = ort.InferenceSession({str(ONNX_MODEL)!r}, "
        "providers=['CPUExecutionProvider']); s.run(None, {'temperaturas': np.zeros((1, 60))})"
    )
    started = time.perf_counter()
    subprocess.run([PY, "-c", code], check=True, timeout=120)
    return time.perf_counter() - started


#: The libraries mlgate's serving path imports before it can answer (settings, manifests, the
#: registry and key store, numpy, the runtime, metrics, the HTTP server): the floor under its
#: cold start that no code of mlgate's can lower.
SERVING_DEPENDENCIES = (
    "numpy, pydantic, pydantic_settings, sqlalchemy, prometheus_client, starlette.convertors, "
    "uvicorn, uvloop, httptools, onnxruntime, orjson"
)


def deps_cold_start() -> float:
    """A fresh interpreter importing :data:`SERVING_DEPENDENCIES` (process start → exit)."""
    started = time.perf_counter()
    subprocess.run([PY, "-c", f"import {SERVING_DEPENDENCIES}"], check=True, timeout=120)
    return time.perf_counter() - started


def precompile() -> None:
    """Bytecode for the source tree, as an installed package has it (pip compiles what it installs).

    ``make bench`` runs with PYTHONDONTWRITEBYTECODE=1 (as this machine's environment does), so
    the editable source tree would be compiled again on every server start (~0.2 s of each cold
    start here). Written to the tree's ``__pycache__`` directories (git-ignored), beside the
    bytecode pip wrote for the installed packages and the stdlib's own. Not
    PYTHONPYCACHEPREFIX: with it set, Python looks for *every* module's bytecode under the
    prefix only, so the stdlib and site-packages would be compiled from source at each start."""
    os.environ.pop("PYTHONPYCACHEPREFIX", None)
    subprocess.run(
        [PY, "-m", "compileall", "-q", "-x", r"[/\\]\.envs[/\\]", str(ROOT / "src"), str(BENCH)],
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
        stdout=subprocess.DEVNULL,
    )


def serve_points(
    spec: ServerSpec,
    body_file: Path,
    logs: Path,
    concurrency: tuple[int, ...],
    seconds: float,
    *,
    extra: Callable[[Server], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Start, warm up, one wrk point per concurrency, memory after load, stop."""
    if spec.unavailable:
        return {"unavailable": spec.unavailable}
    try:
        server = Server(spec, logs)
    except (RuntimeError, OSError) as exc:
        log(f"{spec.key}: could not start: {exc}")
        return {"unavailable": f"did not start: {str(exc)[:300]}"}
    result: dict[str, Any] = {"cold_start_s": server.cold_start_s, "idle": memory_mb(server.pids())}
    try:
        wrk(server.port, spec.path, body_file, connections=16, seconds=1, headers=spec.headers)  # warm-up
        points = {}
        for c in concurrency:
            points[str(c)] = wrk(
                server.port,
                spec.path,
                body_file,
                connections=c,
                seconds=seconds,
                headers=spec.headers,
                server=server,
            )
            p = points[str(c)]
            log(
                f"  {spec.key:<14} c={c:<3} {p['rps']:>9.0f} req/s  p50 {p['p50_us'] / 1000:7.2f} ms  "
                f"p99 {p['p99_us'] / 1000:7.2f} ms  cpu {p['server_cpu_us_per_req'] or 0:6.0f} µs/req  "
                f"errors {p['errors']}  load {p['load1']:.2f}"
            )
        result["points"] = points
        result["after_load"] = memory_mb(server.pids())
        if extra is not None:
            result.update(extra(server))
        problem = spec.check(*post(server.port, spec.path, spec.body, spec.headers))
        result["answer_after_load"] = problem or "correct"
    finally:
        server.stop()
    return result


def limits_exact(server: Server, key_for_plan: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Across the server's workers: a burst of 40 (no refill to speak of) and a quota of 60
    must admit exactly 40 and 60 of 120 concurrent requests."""
    results: dict[str, Any] = {}
    for name, plan, allowed in (
        ("bucket", {"rate": 0.001, "burst": 40}, 40),
        ("quota", {"rate": 1_000_000, "burst": 1_000_000, "quota_limit": 60, "quota_period": "MONTH"}, 60),
    ):
        key = key_for_plan({"name": f"exact-{name}-{int(time.time() * 1000)}", **plan})
        statuses: Counter[int] = Counter()
        lock = threading.Lock()

        def fire(
            n: int, key: str = key, statuses: Counter[int] = statuses, lock: threading.Lock = lock
        ) -> None:
            for _ in range(n):
                status, _ = post(server.port, "/prod", W1_BODY, {"x-api-key": key}, timeout=30)
                with lock:
                    statuses[status] += 1

        threads = [threading.Thread(target=fire, args=(10,)) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results[name] = {
            "allowed": allowed,
            "ok": statuses[200],
            "refused": statuses[429],
            "other": sum(v for k, v in statuses.items() if k not in (200, 429)),
            "exact": statuses[200] == allowed and statuses[429] == 120 - allowed,
        }
    return results


def make_key_for_plan(port: int) -> Callable[[dict[str, Any]], str]:
    def create(plan: dict[str, Any]) -> str:
        admin = {"x-api-key": ADMIN_KEY}
        status, body = post(port, "/v1/plans", json.dumps(plan).encode(), admin)
        if status != 201:
            raise RuntimeError(f"plan: {status} {body[:200]!r}")
        status, body = post(
            port, "/v1/keys", json.dumps({"name": "exact", "plan": plan["name"]}).encode(), admin
        )
        if status != 201:
            raise RuntimeError(f"key: {status} {body[:200]!r}")
        return str(json.loads(body)["key"])

    return create


def main() -> int:
    started = time.time()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = BENCH / "results" / stamp
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    peers = [
        p
        for p in os.environ.get("BENCH_PEERS", "fastapi-async" if QUICK else ",".join(ALL_PEERS)).split(",")
        if p
    ]
    if subprocess.run(["wrk", "--version"], capture_output=True, check=False).returncode not in (0, 1):
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    precompile()
    log(f"rounds={ROUNDS} seconds={SECONDS} peers={peers} load={loadavg()}")
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": QUICK,
        "rounds": ROUNDS,
        "seconds": SECONDS,
        "w2_seconds": W2_SECONDS,
        "concurrency": list(CONCURRENCY),
        "machine": machine(),
        "load": {"start": loadavg(), "samples": []},
    }

    body_file = out_dir / "w1.json"
    body_file.write_bytes(W1_BODY)
    v2_file = out_dir / "w1-v2.json"
    v2_file.write_bytes(V2_BODY)
    w1_inproc = inprocess("temperature", "--seconds", "1", "--body", str(body_file))
    expected = float(w1_inproc["answer"]["prediccion"])
    log(f"W1 expected answer {expected}")

    data = out_dir / "data"
    make_images(logs)
    w1 = prepare_mlgate(data / "w1", ["temperatura"], logs)
    results["mlgate_first_start_ready_s"] = w1["first_start_ready_s"]
    specs = w1_specs(expected, w1, peers, logs)
    only = [k for k in os.environ.get("BENCH_ONLY", "").split(",") if k]  # iteration: a subset
    if only:
        specs = [s for s in specs if s.key in only]
    results["versions"] = versions(specs)
    results["labels"] = {s.key: s.label for s in specs}
    for s in specs:
        if s.unavailable:
            log(f"{s.key}: unavailable: {s.unavailable}")

    # -- W1: rounds, rotating the order ----------------------------------------------------
    w1_rounds: list[dict[str, Any]] = []
    for r in range(ROUNDS):
        shift = r % len(specs) if specs else 0
        order = specs[shift:] + specs[:shift]
        log(f"W1 round {r + 1}/{ROUNDS}: {[s.key for s in order]}")
        rnd: dict[str, Any] = {
            "inprocess": inprocess("temperature", "--seconds", "2", "--body", str(body_file))
        }
        rnd["inprocess"]["model_cold_s"] = model_cold_start()
        rnd["inprocess"]["onnx_cold_s"] = onnx_cold_start()
        rnd["inprocess"]["deps_cold_s"] = deps_cold_start()
        for spec in order:
            results["load"]["samples"].append(loadavg()[0])
            extra = None
            if spec.key == "mlgate-1w":

                def extra(server: Server, spec: ServerSpec = spec) -> dict[str, Any]:
                    native = wrk(
                        server.port,
                        "/v1/models/temperatura/predict",
                        body_file,
                        connections=64,
                        seconds=SECONDS,
                        headers=spec.headers,
                        server=server,
                    )
                    return {"native_c64": native}

            elif spec.key == "mlgate-2w" and r == 0:

                def extra(server: Server) -> dict[str, Any]:
                    return {"limits": limits_exact(server, make_key_for_plan(server.port))}

            file = v2_file if spec.body == V2_BODY else body_file
            rnd[spec.key] = serve_points(spec, file, logs, CONCURRENCY, SECONDS, extra=extra)
        w1_rounds.append(rnd)
    results["w1"] = w1_rounds

    def wanted(part: str) -> bool:
        return not only or part in only

    # -- W2: mlgate /prodfaces vs the in-process detector, interleaved ----------------------
    results["w2"] = w2_part(out_dir, data, logs, results) if wanted("w2") else []
    results["w3"] = w3_rounds(out_dir, data, logs) if wanted("w3") else {}
    results["all_models"] = all_models(data / "all", logs) if wanted("all") else {}
    if wanted("scale"):  # issue 13: 100,000 keys, 10,000 users, 50 models vs one of each
        results["gateway_scale"] = gateway_scale.run(
            out_dir, quick=QUICK, keep_data=os.environ.get("BENCH_KEEP_DATA") == "1"
        )
    if wanted("capture"):  # issue 15: W1 with every request captured vs capture off
        results["capture"] = capture_overhead.run(out_dir, quick=QUICK)
    if wanted("shadow"):  # issue 16: W1 with every request mirrored to a shadow version vs none
        results["shadow"] = shadow_overhead.run(out_dir, quick=QUICK)
    if wanted("stats"):  # issue 17: the dashboard's /v1/stats answers over 7 days of history
        results["stats"] = stats_api.run(out_dir, quick=QUICK)
    if wanted("ray"):  # issue 18: mlgate's gateway + Ray Serve (2 nodes) vs single-process, W1/W2
        results[ray_overhead.PART.name] = ray_overhead.run(out_dir, quick=QUICK)
    return finish(results, started, out_dir)


def w2_part(out_dir: Path, data: Path, logs: Path, results: dict[str, Any]) -> list[dict[str, Any]]:
    image_b64 = base64.b64encode(IMAGE.read_bytes()).decode()
    w2_body = json.dumps({"body": {"image": image_b64}}).encode()
    w2_file = out_dir / "w2.json"
    w2_file.write_bytes(w2_body)
    first = inprocess("detector", "--seconds", "1", "--image", str(IMAGE), "--batch", "1")
    w2 = prepare_mlgate(data / "w2", ["intrusos"], logs)
    w2_spec = ServerSpec(
        "mlgate-w2",
        "mlgate POST /prodfaces, 1 worker",
        lambda p: [MLGATE, "serve", "--port", str(p)],
        "/prodfaces",
        w2_body,
        check_detection(first["answer"]),
        headers={"x-api-key": w2["key"]},
        env=w2["env"],
    )
    results["mlgate_w2_first_start_ready_s"] = w2["first_start_ready_s"]
    w2_rounds = []
    for r in range(ROUNDS):
        log(f"W2 round {r + 1}/{ROUNDS}")
        rnd = {}
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            (
                "inprocess",
                lambda: inprocess("detector", "--seconds", "3" if not QUICK else "2", "--image", str(IMAGE)),
            ),
            ("mlgate", lambda: serve_points(w2_spec, w2_file, logs, (1, 16), W2_SECONDS)),
        ]
        for name, step in steps if r % 2 == 0 else reversed(steps):
            results["load"]["samples"].append(loadavg()[0])
            rnd[name] = step()
            if name == "inprocess":
                ip = rnd[name]
                log(
                    f"  in-process detector: b1 {ip['batch1_img_s']:.1f} b4 {ip['batch4_img_s']:.1f} "
                    f"b8 {ip['batch8_img_s']:.1f} img/s"
                )
        w2_rounds.append(rnd)
    return w2_rounds


def finish(results: dict[str, Any], started: float, out_dir: Path) -> int:
    if os.environ.get("BENCH_KEEP_DATA") != "1":
        # The servers' data dirs: the W3 execution histories alone reach ~1 GB per run.
        shutil.rmtree(out_dir / "data", ignore_errors=True)
    results["load"]["end"] = loadavg()
    results["elapsed_s"] = time.time() - started
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    out = Path(os.environ.get("BENCH_OUT", ROOT / "docs" / "benchmarks.md"))
    kept_scale = gateway_scale.read_section(out)  # report.write regenerates the file
    # lambda_cold_start runs on its own (`make bench-lambda`: the test venv has awslambdaric and
    # the emulator): make bench only keeps its last measured section
    parts = [
        capture_overhead.PART,
        shadow_overhead.PART,
        stats_api.PART,
        lambda_cold_start.PART,
        ray_overhead.PART,
    ]
    kept = {part.name: part.read(out) for part in parts}
    report.write(results, out)
    scale = results.get("gateway_scale")
    if scale:
        gateway_scale.write_section(out, gateway_scale.render(scale), gateway_scale.target_row(scale))
    elif kept_scale:  # the part was not run (BENCH_ONLY): keep the last measured section
        gateway_scale.write_section(out, *kept_scale)
    for part in parts:
        part.finish(out, results.get(part.name), kept[part.name])
    log(f"done in {results['elapsed_s'] / 60:.1f} min: {out} (raw: {out_dir / 'results.json'})")
    return 0


W3_BUCKET, W3_KEY = "vehiculos-fotos", "motos/moto.jpg"


def check_workflow(status: int, body: bytes) -> str | None:
    if status != 200:
        return "status"
    doc = json.loads(body)
    inferences = (doc.get("output") or {}).get("inferences")
    if doc.get("status") != "SUCCEEDED" or not inferences or inferences[1] < 0.75:
        return f"expected SUCCEEDED with p_motorcycle >= 0.75, got {doc.get('status')} {inferences}"
    return None


def w3_rounds(out_dir: Path, data: Path, logs: Path) -> dict[str, Any]:
    """`POST /v1/workflows/vehiculos/executions?mode=sync` (read the photo from the store,
    classify it, the confidence gate), against the same photo sent to the model directly."""
    try:
        setup = prepare_mlgate(data / "w3", ["vehiculos"], logs)
    except RuntimeError as exc:
        return {"unavailable": f"mlgate with vehiculos did not start: {str(exc)[:200]}"}
    photo = IMAGES / "motorcycle.jpg"
    target = data / "w3" / "store" / "buckets" / W3_BUCKET / W3_KEY
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(photo.read_bytes())
    body = json.dumps({"s3_bucket": W3_BUCKET, "s3_key": W3_KEY}).encode()
    body_file = out_dir / "w3.json"
    body_file.write_bytes(body)
    direct_file = out_dir / "w3-direct.json"
    direct_file.write_bytes(json.dumps({"image": base64.b64encode(photo.read_bytes()).decode()}).encode())
    headers = {"x-api-key": setup["key"]}
    spec = ServerSpec(
        "mlgate-w3",
        "mlgate vehiculos workflow (sync), 1 worker",
        lambda p: [MLGATE, "serve", "--port", str(p)],
        "/v1/workflows/vehiculos/executions?mode=sync",
        body,
        check_workflow,
        headers=headers,
        env=setup["env"],
    )

    def direct(server: Server) -> dict[str, Any]:
        out = {}
        for c in (1, 16):
            out[str(c)] = wrk(
                server.port,
                "/v1/models/vehiculos/predict",
                direct_file,
                connections=c,
                seconds=W2_SECONDS,
                headers=headers,
                server=server,
            )
        return {"direct": out}

    rounds = []
    for r in range(ROUNDS):
        log(f"W3 round {r + 1}/{ROUNDS}")
        rounds.append(serve_points(spec, body_file, logs, (1, 16), W2_SECONDS, extra=direct))
        if "unavailable" in rounds[-1]:
            break
    return {"rounds": rounds}


def all_models(data_dir: Path, logs: Path) -> dict[str, Any]:
    """Every reference service: cold start to ready, RSS once idle, and whether W3's route exists."""
    setup = prepare_mlgate(data_dir, None, logs)
    spec = ServerSpec(
        "mlgate-all",
        "mlgate, all four reference models",
        lambda p: [MLGATE, "serve", "--port", str(p)],
        "/readyz",
        b"",
        check_ok,
        env=setup["env"],
    )
    server = start_ready(spec, logs)
    try:
        time.sleep(3)
        idle = memory_mb(server.pids())
    finally:
        server.stop()
    return {"ready_s": server.cold_start_s, "idle": idle, "first_start_ready_s": setup["first_start_ready_s"]}


def machine() -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version.split("[")[0].strip() or "wrk",
    }


def versions(specs: list[ServerSpec]) -> dict[str, str]:
    import importlib.metadata as md

    out = {
        d: md.version(d)
        for d in (
            "mlgate",
            "uvicorn",
            "starlette",
            "fastapi",
            "orjson",
            "uvloop",
            "httptools",
            "scikit-learn",
            "opencv-python-headless",
        )
    }
    dists = {
        "fastapi": "fastapi",
        "bentoml": "bentoml",
        "litserve": "litserve",
        "mlserver": "mlserver",
        "ray": "ray",
    }
    for name, dist in dists.items():
        python = envs.ENVS / name / "bin" / "python"
        if python.exists():
            out[f"peer {dist}"] = envs.version(python, dist)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
