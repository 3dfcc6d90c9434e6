"""Gateway at scale (issue 13): does a request cost more with 100,000 keys, 10,000 users and 50
models in the database than with one key and one model? Target: at most 1.2x.

Two data directories (SQLite, the default embedded setup), each prepared the same way — a first
``mlgate serve`` (migrations), the models pushed over HTTP, then the rows inserted straight into
the registry's tables (``mlgate.db.tables``) with the server stopped:

- **baseline**: 1 user, 1 API key owned by it on a plan that never throttles, 1 model;
- **scaled**: 10,000 users, 100,000 keys (10 per user; some disabled or expired), 21 plans
  attached to 70 % of the keys (10 % with a model-scoped one too), ~250,000 usage rows, and 50
  models (the same ONNX file under 50 names). 5,000 of the keys — 5,000 different owners, spread
  over the table — are on the never-throttling plan and carry the load.

Every model is the temperature forecast's ONNX graph (W1's model) registered as a plain ``onnx``
model, called on ``POST /v1/models/<name>/predict`` with ``{"inputs": [60 temperatures]}``. One
server per directory, one worker each, both started once; the load is ``wrk`` (one thread,
``wrk/rotate.lua``: the key, and the path, change on every request) at a fixed concurrency.
Variants, measured alternately, the order rotated each repetition (A B C D, B C D A, ...):

- ``baseline``       — the one key, the one model;
- ``scaled-1key``    — the scaled database, one of its keys, one model (the database's size alone);
- ``scaled-keys``    — the scaled database, 5,000 keys in turn, one model (past the key
  verification cache's 4,096 entries and the gate's 4,096 passes);
- ``scaled-models``  — the scaled database, 5,000 keys in turn, over the 50 models.

Per run: requests/s and the server's CPU time per request (user + system of its processes, from
/proc — steadier than throughput on a shared machine). The verdict is the median over
repetitions of the per-repetition ratio scaled / baseline of CPU per request.

    .venv-serve/bin/python bench/gateway_scale.py            # 3 repetitions x 5 s (~4 min)
    .venv-serve/bin/python bench/gateway_scale.py --quick    # 2 x 3 s (~2.5 min)
    options: --no-write (docs/benchmarks.md untouched), --out FILE, --keep-data

``make bench`` runs it too (bench/run.py, part ``scale``), honouring BENCH_QUICK. Its section of
docs/benchmarks.md sits between ``<!-- gateway-scale:start -->`` and ``<!-- gateway-scale:end -->``
and its row in the targets table starts with ``| gateway at scale``; both are replaced in place.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import Server, ServerSpec, loadavg, memory_mb, post, start_ready, wrk

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
MLGATE = str(Path(PY).parent / "mlgate")
ONNX_MODEL = ROOT / "src" / "mlgate_services" / "temperatura" / "artifact" / "model.onnx"
ROTATE_LUA = BENCH / "wrk" / "rotate.lua"
ADMIN_KEY = "mlg_benchadm_" + "b" * 40
START, END = "<!-- gateway-scale:start -->", "<!-- gateway-scale:end -->"
TARGET_ROW = "| gateway at scale"

N_USERS = 10_000
N_KEYS = 100_000
N_MODELS = 50
N_LOAD_KEYS = 5_000
N_PLANS = 20  # plus "bench", the one the load keys are on
TARGET = 1.2
CONNECTIONS = 16

TEMPS = [round(20 + 4 * math.sin(i / 24 * 6.28), 1) for i in range(60)]
BODY = json.dumps({"inputs": TEMPS}).encode()
MANIFEST = {
    "runtime": "onnx",
    "artifact": "model.onnx",
    "description": "W1's temperature graph under another name (bench/gateway_scale.py)",
    # The bundled temperatura model's batching (mlgate_services/temperatura/service.py).
    "batching": {"max_batch_size": 64, "max_wait_ms": 0, "max_queue": 512, "max_concurrency": 1},
    "timeout_s": 60.0,
}
VARIANTS = ("baseline", "scaled-1key", "scaled-keys", "scaled-models")
TARGETED = ("scaled-1key", "scaled-keys")  # held to TARGET (see summarise)
LABELS = {
    "baseline": "1 user, 1 key, 1 model",
    "scaled-1key": "scaled database, 1 of its keys, 1 model",
    "scaled-keys": "scaled database, 5,000 keys in turn, 1 model",
    "scaled-models": "scaled database, 5,000 keys in turn, 50 models in turn",
}


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def model_name(i: int) -> str:
    return f"m{i:02d}"


# -- keys as access/keys.py makes them -----------------------------------------------------


def key_id(i: int) -> str:
    """8 hex digits, distinct for every i < 2**32 (an odd multiplier is a bijection mod 2**32)."""
    return f"{(i * 2654435761 + 0x5CA1E) % 2**32:08x}"


def key_secret(prefix: str) -> str:
    """``mlg_<prefix>_<43 url-safe characters>`` like ``secrets.token_urlsafe(32)``, but derived
    from the prefix so the load generator can know it (a throw-away bench database)."""
    raw = hashlib.sha256(b"mlgate-bench-scale:" + prefix.encode()).digest()
    return f"mlg_{prefix}_{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}"


def load_indices(n_keys: int, n_load: int) -> list[int]:
    """Which keys carry the load: stride 19 (coprime with the 10,000 users): every one a different
    owner, spread over the whole table."""
    if n_keys == 1:
        return [0]
    stride = 19
    return [(j * stride) % n_keys for j in range(n_load)]


# -- preparing a data directory ------------------------------------------------------------


def server_env(data_dir: Path) -> dict[str, str]:
    return {
        "MLGATE_DATA_DIR": str(data_dir),
        "MLGATE_ADMIN_KEY": ADMIN_KEY,
        "MLGATE_SERVICES": "[]",  # only the pushed models
        "MLGATE_LOG__ACCESS_STDOUT": "false",
        "MLGATE_LOG__LEVEL": "WARNING",
    }


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, (filename, data) in files.items():
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _ready_server(key: str, data_dir: Path, logs: Path) -> Server:
    """``mlgate serve`` on ``data_dir``, ready once ``/readyz`` answers 200."""
    spec = ServerSpec(
        key,
        key,
        lambda p: [MLGATE, "serve", "--port", str(p)],
        "/readyz",
        b"",
        lambda s, b: None,
        env=server_env(data_dir),
        startup_timeout=300,
    )
    return start_ready(spec, logs, poll_s=0.05)


def prepare(data_dir: Path, logs: Path, *, scaled: bool) -> dict[str, Any]:
    """A first start (schema), the models over HTTP, then the bulk rows with the server stopped."""
    started = time.perf_counter()
    n_models = N_MODELS if scaled else 1
    server = _ready_server(f"scale-setup-{data_dir.name}", data_dir, logs)
    try:
        onnx = ONNX_MODEL.read_bytes()
        for i in range(n_models):
            body, ctype = _multipart(
                {"manifest": json.dumps(MANIFEST), "aliases": "production"},
                {"files": ("model.onnx", onnx)},
            )
            status, answer = post(
                server.port,
                f"/v1/models/{model_name(i)}/versions",
                body,
                {"x-api-key": ADMIN_KEY, "Content-Type": ctype},
                timeout=60,
            )
            if status != 201:
                raise RuntimeError(f"push {model_name(i)}: {status} {answer[:300]!r}")
    finally:
        server.stop()
    counts = populate(
        f"sqlite:///{(data_dir / 'mlgate.db').resolve()}",
        n_users=N_USERS if scaled else 1,
        n_keys=N_KEYS if scaled else 1,
        n_models=n_models,
        n_plans=N_PLANS if scaled else 0,
    )
    indices = load_indices(counts["keys"], N_LOAD_KEYS)
    keys = [key_secret(key_id(i)) for i in indices]
    log(f"prepared {data_dir.name} in {time.perf_counter() - started:.1f} s: {counts}")
    return {"keys": keys, "models": n_models, "counts": counts}


def populate(url: str, *, n_users: int, n_keys: int, n_models: int, n_plans: int) -> dict[str, int]:
    """Insert the users, keys, plans, attachments and usage straight into the registry tables.

    Users share one argon2id hash (hashing 10,000 would take minutes; nobody logs in here).
    Keys are stored as access/keys.py stores them (sha256 of the secret, id = prefix).
    """
    import sqlalchemy as sa
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    from mlgate.db.tables import api_keys, key_plans, registry_state, usage_daily, usage_plans, users

    engine = sa.create_engine(url)
    now = datetime.now(UTC)
    password_hash = PasswordHash((Argon2Hasher(),)).hash("bench-scale-password")
    load = set(load_indices(n_keys, N_LOAD_KEYS))
    load_owners = {i % n_users for i in load}
    plans = [
        {
            "name": "bench",
            "description": "never throttles the bench",
            "rate": 1_000_000.0,
            "burst": 1_000_000,
            "quota_limit": 10**15,
            "quota_period": "MONTH",
            "quota_offset": 0,
            "created_at": now,
        }
    ]
    for p in range(n_plans):
        plans.append(
            {
                "name": f"tier-{p:02d}",
                "description": f"tier {p}",
                "rate": float(5 + p),
                "burst": 10 + p,
                "quota_limit": 1000 * (p + 1),
                "quota_period": ("DAY", "WEEK", "MONTH")[p % 3],
                "quota_offset": 0,
                "created_at": now,
            }
        )
    user_rows = [
        {
            "username": f"user{u:05d}",
            "email": f"user{u:05d}@example.com",
            "first_name": "Bench",
            "last_name": f"User {u}",
            "password_hash": password_hash,
            "role": "user",
            "disabled": u % 97 == 96 and u not in load_owners,  # a few (their keys carry no load)
            "created_at": now,
        }
        for u in range(n_users)
    ]
    key_rows, attach_rows, usage_rows = [], [], []
    days = [(now - timedelta(days=d)).strftime("%Y-%m-%d") for d in range(30)]
    for i in range(n_keys):
        kid = key_id(i)
        owner = i % n_users
        carries_load = i in load
        disabled = not carries_load and i % 50 == 7
        expired = not carries_load and i % 50 == 13
        key_rows.append(
            {
                "id": kid,
                "prefix": kid,
                "key_hash": hashlib.sha256(key_secret(kid).encode()).hexdigest(),
                "name": f"key-{i}",
                "role": "user",
                "owner": f"user{owner:05d}",
                "created_at": now - timedelta(seconds=n_keys - i),
                "expires_at": now - timedelta(days=1) if expired else None,
                "disabled": disabled,
            }
        )
        if carries_load:
            attach_rows.append({"key_id": kid, "scope": "*", "plan": "bench"})
        elif n_plans and i % 10 < 7:
            attach_rows.append({"key_id": kid, "scope": "*", "plan": f"tier-{i % n_plans:02d}"})
            if i % 10 == 0:
                scope = model_name(i % n_models)
                attach_rows.append({"key_id": kid, "scope": scope, "plan": f"tier-{(i + 1) % n_plans:02d}"})
        # usage: every key yesterday; the load keys every day of the last month
        for day in days if carries_load else days[1:2]:
            usage_rows.append(
                {
                    "key_id": kid,
                    "day": day,
                    "scope": model_name(i % n_models),
                    "requests": 100 + i % 900,
                    "throttled": i % 7,
                    "errors": i % 3,
                }
            )
    if "lineage" in api_keys.c:  # 0004: the first key of a rotation chain (itself here)
        for row in key_rows:
            row["lineage"] = row["id"]
    tables = ((usage_plans, plans), (users, user_rows), (api_keys, key_rows), (key_plans, attach_rows))
    with engine.begin() as conn:
        for table, rows in (*tables, (usage_daily, usage_rows)):
            names = set(table.c.keys())  # only the columns the schema has (it evolves)
            for start in range(0, len(rows), 20_000):
                chunk = [{k: v for k, v in r.items() if k in names} for r in rows[start : start + 20_000]]
                conn.execute(table.insert(), chunk)
        conn.execute(registry_state.update().values(generation=registry_state.c.generation + 1))
    engine.dispose()
    return {
        "users": n_users,
        "keys": n_keys,
        "plans": len(plans),
        "attachments": len(attach_rows),
        "usage_rows": len(usage_rows),
        "models": n_models,
    }


# -- load ----------------------------------------------------------------------------------


def wrk_rotating(
    server: Server, keys_file: Path, paths_file: Path, body_file: Path, *, connections: int, seconds: float
) -> dict[str, Any]:
    """One bounded wrk run (1 thread) rotating keys and paths; the server's CPU per request."""
    return wrk(
        server.port,
        "/",
        body_file,
        connections=connections,
        seconds=seconds,
        server=server,
        script=ROTATE_LUA,
        script_env={"BENCH_KEYS": str(keys_file), "BENCH_PATHS": str(paths_file)},
    )


def _check_answer(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"status {status}"
    try:
        json.loads(body)
    except ValueError:
        return "not JSON"
    return None


def _serve(name: str, data_dir: Path, key: str, logs: Path) -> Server:
    spec = ServerSpec(
        f"scale-{name}",
        f"mlgate, {name} data dir, 1 worker",
        lambda p: [MLGATE, "serve", "--port", str(p)],
        f"/v1/models/{model_name(0)}/predict",
        BODY,
        _check_answer,
        headers={"x-api-key": key},
        env=server_env(data_dir),
        startup_timeout=300,
    )
    return Server(spec, logs)


# -- the run -------------------------------------------------------------------------------


def run(out_dir: Path, *, quick: bool, keep_data: bool = False) -> dict[str, Any]:
    """Prepare both directories, measure the variants alternately, return the results."""
    reps = int(os.environ.get("BENCH_SCALE_REPS", "2" if quick else "3"))
    seconds = float(os.environ.get("BENCH_SCALE_SECONDS", "3" if quick else "5"))
    data, logs = out_dir / "data-scale", out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if shutil.which("wrk") is None:
        return {"unavailable": "wrk is missing (apt-get install wrk)"}
    started = time.time()
    base = prepare(data / "baseline", logs, scaled=False)
    scaled = prepare(data / "scaled", logs, scaled=True)
    body_file = out_dir / "scale-body.json"
    body_file.write_bytes(BODY)

    def lines(name: str, values: list[str]) -> Path:
        path = out_dir / f"scale-{name}.txt"
        path.write_text("\n".join(values) + "\n")
        return path

    one_model = lines("paths-1", [f"/v1/models/{model_name(0)}/predict"])
    files = {
        "baseline": (lines("keys-baseline", base["keys"][:1]), one_model),
        "scaled-1key": (lines("keys-1", scaled["keys"][:1]), one_model),
        "scaled-keys": (lines("keys-5000", scaled["keys"]), one_model),
        "scaled-models": (
            out_dir / "scale-keys-5000.txt",
            lines("paths-50", [f"/v1/models/{model_name(i)}/predict" for i in range(N_MODELS)]),
        ),
    }
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "reps": reps,
        "seconds": seconds,
        "connections": CONNECTIONS,
        "counts": {"baseline": base["counts"], "scaled": scaled["counts"]},
        "load_keys": len(scaled["keys"]),
        "load": {"start": loadavg()},
    }
    servers: dict[str, Server] = {}
    try:
        servers["baseline"] = _serve("baseline", data / "baseline", base["keys"][0], logs)
        servers["scaled"] = _serve("scaled", data / "scaled", scaled["keys"][0], logs)
        result["ready_s"] = {k: s.cold_start_s for k, s in servers.items()}
        result["idle"] = {k: memory_mb(s.pids()) for k, s in servers.items()}
        log(f"ready: {result['ready_s']}")
        for variant in VARIANTS:  # warm-up: every key verified, every model called, buckets made
            server = servers["baseline" if variant == "baseline" else "scaled"]
            wrk_rotating(
                server, *files[variant], body_file, connections=CONNECTIONS, seconds=2 if quick else 3
            )
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for rep in range(reps):
            order = VARIANTS[rep % len(VARIANTS) :] + VARIANTS[: rep % len(VARIANTS)]
            for variant in order:
                server = servers["baseline" if variant == "baseline" else "scaled"]
                r = wrk_rotating(server, *files[variant], body_file, connections=CONNECTIONS, seconds=seconds)
                r["rep"] = rep
                runs[variant].append(r)
                log(
                    f"  rep {rep + 1}/{reps} {variant:<14} {r['rps']:8.0f} req/s  "
                    f"cpu {r['server_cpu_us_per_req'] or 0:6.0f} µs/req  p50 {r['p50_us'] / 1000:6.2f} ms  "
                    f"errors {r['errors']}  load {r['load1']:.2f}"
                )
        result["runs"] = runs
        result["after_load"] = {k: memory_mb(s.pids()) for k, s in servers.items()}
        checks = {}
        for variant in VARIANTS:
            server = servers["baseline" if variant == "baseline" else "scaled"]
            key_file, paths_file = files[variant]
            key = key_file.read_text().split()[-1]
            path = paths_file.read_text().split()[-1]
            checks[variant] = _check_answer(*post(server.port, path, BODY, {"x-api-key": key})) or "correct"
        result["answer_after_load"] = checks
    finally:
        for server in servers.values():
            server.stop()
        if not keep_data:
            shutil.rmtree(data, ignore_errors=True)
    result["summary"] = summarise(result)
    result["load"]["end"] = loadavg()
    result["elapsed_s"] = time.time() - started
    return result


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    runs = result["runs"]
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        rs = runs[variant]
        out[variant] = {
            "rps": statistics.median(r["rps"] for r in rs),
            "cpu_us": statistics.median(r["server_cpu_us_per_req"] for r in rs),
            "p50_us": statistics.median(r["p50_us"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
        }
        if variant != "baseline":
            base = runs["baseline"]
            cpu = [
                r["server_cpu_us_per_req"] / b["server_cpu_us_per_req"] for r, b in zip(rs, base, strict=True)
            ]
            rps = [b["rps"] / r["rps"] for r, b in zip(rs, base, strict=True)]
            out[variant]["cpu_ratio"] = statistics.median(cpu)
            out[variant]["cpu_ratios"] = cpu
            out[variant]["rps_ratio"] = statistics.median(rps)  # baseline / scaled: cost ratio
    # The target: the scaled database, its load over 5,000 keys on one of the 50 models. Spreading
    # the calls over 50 models also changes the model path (batches of ~1 instead of ~16), so
    # that variant is reported beside the target, not held to it.
    worst = max(out[v]["cpu_ratio"] for v in TARGETED)
    out["worst_cpu_ratio"] = worst
    out["met"] = worst <= TARGET and all(out[v]["errors"] == 0 for v in VARIANTS)
    return out


# -- the report ----------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    lines = [START, "## Gateway at scale", ""]
    add = lines.append
    if "unavailable" in result:
        add(f"Not measured: {result['unavailable']}.")
        add(END)
        return "\n".join(lines)
    s = result["summary"]
    c = result["counts"]["scaled"]
    add(
        f"Issue 13: per-request cost with {c['keys']:,} API keys, {c['users']:,} users, {c['plans']} plans "
        f"({c['attachments']:,} attachments), {c['usage_rows']:,} usage rows and {c['models']} models in "
        f"the database, against 1 user, 1 key and 1 model; target ≤ {TARGET}× server CPU per request. "
        f"`bench/gateway_scale.py` ({'quick mode, ' if result['quick'] else ''}{result['started']}): "
        f"SQLite, one worker per server, `wrk` at c={result['connections']} rotating the API key (and "
        f"the model) on every request over {result['load_keys']:,} keys (each of a different owner), "
        f"{result['reps']} repetitions of {result['seconds']:g} s per variant, alternated with the order "
        f"rotated; ratios are medians of the per-repetition ratios. Model: W1's temperature graph pushed "
        f"as a plain ONNX model, `POST /v1/models/<name>/predict`."
    )
    add("")
    add(
        "| variant | req/s (median) | server CPU µs/request (median) | CPU ratio to baseline (per repetition) | p50 ms | errors |"
    )
    add("|---|---|---|---|---|---|")
    for v in VARIANTS:
        row = s[v]
        if v == "baseline":
            ratio = "1"
        else:
            per = ", ".join(f"{x:.2f}" for x in row["cpu_ratios"])
            ratio = f"**{row['cpu_ratio']:.2f}×** ({per})"
        add(
            f"| {v}: {LABELS[v]} | {row['rps']:,.0f} | {row['cpu_us']:,.0f} | {ratio} | "
            f"{row['p50_us'] / 1000:.2f} | {row['errors']} |"
        )
    add("")
    add(
        f"Held to the target: {' and '.join(TARGETED)} (100,000 keys, 10,000 users and 50 models in the "
        f"database; the load on one model) — worst {s['worst_cpu_ratio']:.2f}×: "
        + ("**met**." if s["met"] else "**not met**.")
        + " `scaled-models` spreads the calls over the 50 models as well, which also changes the model "
        "path (each model's batcher gets ~1 request per batch instead of up to 16), so it is reported, "
        "not held to the gateway's target."
    )
    add("")
    add("Each repetition (req/s / CPU µs per request):")
    add("")
    add("| variant | " + " | ".join(f"rep {i + 1}" for i in range(result["reps"])) + " |")
    add("|---|" + "---|" * result["reps"])
    for v in VARIANTS:
        cells = [f"{r['rps']:,.0f} / {r['server_cpu_us_per_req']:,.0f}" for r in result["runs"][v]]
        add(f"| {v} | " + " | ".join(cells) + " |")
    add("")
    idle, after = result["idle"], result["after_load"]
    add(
        f"Memory (RSS, MB) idle → after load: baseline {idle['baseline']['rss_mb']:.0f} → "
        f"{after['baseline']['rss_mb']:.0f}, scaled {idle['scaled']['rss_mb']:.0f} → "
        f"{after['scaled']['rss_mb']:.0f}. Start to ready: baseline {result['ready_s']['baseline']:.1f} s, "
        f"scaled (50 models) {result['ready_s']['scaled']:.1f} s. Answers after load: "
        + ", ".join(f"{k} {v}" for k, v in result["answer_after_load"].items())
        + f". Load average {result['load']['start'][0]:.2f} → {result['load']['end'][0]:.2f}. "
        'What the profiles showed: bench/findings.md, "Gateway at scale" (in the findings section '
        "from the next full `make bench`)."
    )
    add(END)
    return "\n".join(lines)


def target_row(result: dict[str, Any]) -> str:
    if "unavailable" in result:
        return f"{TARGET_ROW}: ≤ {TARGET}× one key / one model (CPU per request) | not measured | – |"
    s = result["summary"]
    parts = ", ".join(f"{v} {s[v]['cpu_ratio']:.2f}×" for v in TARGETED)
    verdict = "**met**" if s["met"] else "**not met**"
    return (
        f"{TARGET_ROW}: 100,000 keys, 10,000 users, 50 models registered ≤ {TARGET}× one key / one "
        f"model (server CPU per request, 1 worker, load over 5,000 keys) | {parts} (baseline "
        f"{s['baseline']['cpu_us']:,.0f} µs; calls spread over the 50 models too: "
        f'{s["scaled-models"]["cpu_ratio"]:.2f}×, not held to it) — section "Gateway at scale" | {verdict} |'
    )


def read_section(
    out: Path, *, start: str = START, end: str = END, target_row: str = TARGET_ROW
) -> tuple[str, str] | None:
    """The section and target row already in ``out`` (to keep them when this part is not run).
    Other parts with their own section (bench/capture_overhead.py) pass their markers."""
    if not out.exists():
        return None
    text = out.read_text()
    if start not in text or end not in text:
        return None
    section = text[text.index(start) : text.index(end) + len(end)]
    row = next((ln for ln in text.splitlines() if ln.startswith(target_row)), "")
    return section, row


def write_section(
    out: Path, section: str, row: str, *, start: str = START, end: str = END, target_row: str = TARGET_ROW
) -> None:
    """Put ``section`` between the markers (else before the workflow-overhead section, else at the
    end) and ``row`` as the last row of the targets table; the rest of the file is left as it is."""
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    elif "<!-- workflow-overhead:start -->" in text:
        at = text.index("<!-- workflow-overhead:start -->")
        text = text[:at] + section + "\n\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    if row:
        lines = [ln for ln in text.split("\n") if not ln.startswith(target_row)]
        head = next((i for i, ln in enumerate(lines) if ln.startswith("## Targets")), None)
        if head is not None:
            i = head + 1
            while i < len(lines) and not lines[i].startswith("|"):
                i += 1
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            lines.insert(i, row)
        text = "\n".join(lines)
    out.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md as it is")
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("BENCH_OUT", ROOT / "docs" / "benchmarks.md"))
    )
    parser.add_argument("--keep-data", action="store_true", default=os.environ.get("BENCH_KEEP_DATA") == "1")
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = BENCH / "results" / f"{stamp}-scale"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = run(out_dir, quick=args.quick, keep_data=args.keep_data)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    section, row = render(result), target_row(result)
    print(section)
    print(row)
    if not args.no_write:
        write_section(args.out, section, row)
        log(f"wrote its section of {args.out}")
    log(f"raw: {out_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
