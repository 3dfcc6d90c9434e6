"""``mlgate train``: run a recipe, gate the candidate against the version an alias points at,
register it, promote it when the gate passes.

1. The recipe trains the candidate and hands back its held-out rows (:mod:`.recipes`).
2. The current version (the one ``alias`` points at) answers the same rows through the running
   server (``POST /v1/models/{name}/versions/{v}/batch``, in chunks), read back as the served
   model renders them; the candidate's ``predict`` gives its own.
3. The paired test (:func:`.gate.quality_gate`) and the size guardrail decide; ``gate.json``
   records both models' figures, the interval, n, the rows' sha256, the seeds and the libraries.
4. Unless ``dry_run``, the candidate is registered whatever the decision (``POST
   /v1/models/{name}/versions``, as ``mlgate models push``), with ``gate.json``, ``metrics.json``
   and its drift baseline (``baseline.json``, pointed at by the manifest).
5. When the gate passed, the latency guardrail times both versions on the same server, pinned
   routes, one-row requests interleaved (the candidate can only be timed fairly once it is
   served, so this runs after registration and before any alias moves); then, with
   ``promote``, the alias moves.

With no version at the alias there is nothing to compare: the candidate is promoted only when
``promote`` was asked for, and the report says so.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlgate.lifecycle.gate import (
    GateConfig,
    data_hash,
    decide,
    latency_guardrail,
    quality_gate,
    size_guardrail,
)
from mlgate.lifecycle.recipes import TrainResult, resolve_recipe

if TYPE_CHECKING:
    import httpx

__all__ = ["FORMAT", "TrainError", "run_train"]

FORMAT = "mlgate-gate/1"
CHUNK = 256
LATENCY_REQUESTS = 40
LATENCY_REPEATS = 5

#: ``progress(phase, done, total)``
Progress = Callable[[str, int, int], None]


class TrainError(Exception):
    """A run that cannot go on (the server refused something, the recipe failed)."""


def _ok(response: httpx.Response) -> Any:
    if response.is_error:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        raise TrainError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {body}"
        )
    return response.json()


def _libraries() -> dict[str, str]:
    out = {}
    for dist in ("mlgate", "numpy", "scikit-learn", "scipy", "onnxruntime", "onnx"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _current(client: httpx.Client, model: str, alias: str) -> tuple[int | None, dict[str, Any] | None]:
    response = client.get(f"/v1/models/{model}")
    if response.status_code == 404:
        return None, None
    body = _ok(response)
    version = body["aliases"].get(alias)
    if version is None:
        return None, None
    info = next((v for v in body["versions"] if v["version"] == version), None)
    return int(version), info


def served_outputs(
    client: httpx.Client, model: str, version: int, result: TrainResult, progress: Progress | None = None
) -> np.ndarray:
    """The version's answers to every held-out row, through the server's batch route."""
    rows = result.x_test
    out: list[Any] = []
    for lo in range(0, len(rows), CHUNK):
        inputs = [result.to_payload(row) for row in rows[lo : lo + CHUNK]]
        body = _ok(client.post(f"/v1/models/{model}/versions/{version}/batch", json={"inputs": inputs}))
        for i, item in enumerate(body["results"]):
            if "output" not in item:
                raise TrainError(f"v{version} failed on held-out row {lo + i}: {item.get('error')}")
            out.append(result.from_output(item["output"]))
        if progress is not None:
            progress(f"scoring v{version}", min(lo + CHUNK, len(rows)), len(rows))
    return np.asarray(out)


def _time_versions(
    client: httpx.Client, model: str, versions: tuple[int, int], result: TrainResult
) -> tuple[list[list[float]], list[list[float]]]:
    """Per repeat, each version's one-row request latencies (seconds), interleaved."""
    payloads = [result.to_payload(row) for row in result.x_test[:LATENCY_REQUESTS]]
    runs: tuple[list[list[float]], list[list[float]]] = ([], [])
    for v in versions:  # warm both up (loaded on first use)
        for p in payloads[:5]:
            _ok(client.post(f"/v1/models/{model}/versions/{v}/predict", json=p))
    for _ in range(LATENCY_REPEATS):
        for which, v in enumerate(versions):
            samples = []
            for p in payloads:
                t0 = time.perf_counter()
                _ok(client.post(f"/v1/models/{model}/versions/{v}/predict", json=p))
                samples.append(time.perf_counter() - t0)
            runs[which].append(samples)
    return runs


def _upload(client: httpx.Client, model: str, folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Register ``folder``'s files as a new version: the upload ``mlgate models push`` makes
    (multipart ``files`` + ``manifest``, each file's sha256 checked by the server)."""
    import hashlib

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    parts = [
        ("files", (p.relative_to(folder).as_posix(), p.read_bytes(), "application/octet-stream"))
        for p in files
    ]
    checks = [
        f"{p.relative_to(folder).as_posix()}={hashlib.sha256(p.read_bytes()).hexdigest()}" for p in files
    ]
    form = {"manifest": json.dumps(manifest), "aliases": "", "sha256": checks}
    body: dict[str, Any] = _ok(
        client.post(f"/v1/models/{model}/versions", files=parts, data=form, timeout=600)
    )
    return body


def run_train(
    recipe: str,
    *,
    client: httpx.Client | None,
    model: str | None = None,
    alias: str = "production",
    promote: bool = False,
    dry_run: bool = False,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    data_dir: Path | None = None,
    config: GateConfig | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run one train → evaluate → gate → register → promote cycle; the run's report."""
    fn = resolve_recipe(recipe)
    if model is None and ":" in recipe:
        raise TrainError("a module:function recipe needs the model's name (--model)")
    model = model or recipe
    params = dict(params or {})
    config = config or GateConfig(seed=seed)
    if progress is not None:
        progress(f"training {recipe}", 0, 1)
    result = fn(data_dir, seed, params)
    if progress is not None:
        progress(f"training {recipe}", 1, 1)
    try:
        return _evaluate_and_register(
            result, client, recipe, model, alias, promote, dry_run, seed, params, config, progress
        )
    finally:
        if result.scratch:
            shutil.rmtree(result.artifact_dir, ignore_errors=True)


def _evaluate_and_register(
    result: TrainResult,
    client: httpx.Client | None,
    recipe: str,
    model: str,
    alias: str,
    promote: bool,
    dry_run: bool,
    seed: int,
    params: dict[str, Any],
    config: GateConfig,
    progress: Progress | None,
) -> dict[str, Any]:
    y = np.asarray(result.y_test)
    candidate = np.asarray(result.predict(result.x_test))

    current_version, current_info = (None, None) if client is None else _current(client, model, alias)
    artifact = result.artifact_dir / str(result.manifest["artifact"])
    candidate_bytes = artifact.stat().st_size
    report: dict[str, Any] = {
        "format": FORMAT,
        "model": model,
        "alias": alias,
        "recipe": recipe,
        "params": params,
        "seeds": {"recipe": seed, "bootstrap": config.seed},
        "task": result.task,
        "metric": result.metric,
        "direction": result.direction,
        "n": int(y.shape[0]),
        "data_hash": data_hash(np.asarray(result.x_test), y),
        "data": result.data,
        "current_version": current_version,
        "candidate_metrics": result.metrics,
        "config": asdict(config),
        "libraries": _libraries(),
    }
    quality: dict[str, Any] | None = None
    guardrails: dict[str, dict[str, Any]] = {}
    if client is not None and current_version is not None:
        current = served_outputs(client, model, current_version, result, progress)
        quality = quality_gate(
            result.task, result.metric, y, current, candidate, config, block=result.block_size
        )
        params_of = (current_info or {}).get("params") or {}
        known = params_of.get("artifact_bytes")
        guardrails["size"] = size_guardrail(
            int(known) if known is not None else None, candidate_bytes, config.size_factor
        )
        decision, reason = decide(quality, guardrails)
    elif promote:
        decision, reason = (
            "promote",
            f"no version at alias {alias!r}: nothing to compare, promoted as asked (--promote)",
        )
    else:
        decision, reason = (
            "keep",
            f"no version at alias {alias!r}: nothing to compare (give --promote to promote)",
        )
    report.update(quality=quality, guardrails=guardrails, decision=decision, reason=reason)
    if decision == "promote" and current_version is not None:
        report["guardrails"]["latency"] = {
            "status": "timed on the server after registration, before any alias moves (see the run report)"
        }

    if dry_run or client is None:
        if current_version is not None and decision == "promote":
            report["guardrails"]["latency"] = {"status": "not measured: a dry run serves no candidate"}
        report.update(registered=None, promoted=False)
        return report

    folder = result.artifact_dir
    (folder / "gate.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (folder / "metrics.json").write_text(
        json.dumps(result.metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    manifest = dict(result.manifest)
    manifest["params"] = {
        **manifest.get("params", {}),
        "artifact_bytes": candidate_bytes,
        "gate": {
            "file": "gate.json",
            "decision": decision,
            "reason": reason,
            "current_version": current_version,
            "interval": (quality or {}).get("interval"),
            "data_hash": report["data_hash"],
        },
    }
    if result.baseline is not None:
        (folder / "baseline.json").write_text(
            json.dumps(result.baseline, separators=(",", ":")) + "\n", encoding="utf-8"
        )
        manifest["baseline"] = {"format": result.baseline.get("format"), "file": "baseline.json"}
    if progress is not None:
        progress(f"registering {model}", 0, 1)
    pushed = _upload(client, model, folder, manifest)
    version = int(pushed["version"])
    report["registered"] = version
    if progress is not None:
        progress(f"registering {model}", 1, 1)

    if decision == "promote" and current_version is not None:
        if progress is not None:
            progress("timing both versions", 0, 1)
        cur_runs, can_runs = _time_versions(client, model, (current_version, version), result)
        guardrails["latency"] = latency_guardrail(cur_runs, can_runs, config.latency_margin)
        decision, reason = decide(quality, guardrails)
        report.update(decision=decision, reason=reason, guardrails=guardrails)
    promoted = decision == "promote" and promote
    if promoted:
        _ok(client.put(f"/v1/models/{model}/aliases/{alias}", json={"version": version}))
    report["promoted"] = promoted
    report["alias_version"] = version if promoted else current_version
    return report
