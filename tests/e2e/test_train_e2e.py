"""``mlgate train temperatura`` end to end over a real server (issue 16, first piece).

On pvlib's real TMY hours: a deliberately worse candidate (6 lags) is registered with its gate
report and kept out of production with the reason; the default recipe, run twice with the same
seed (once as a dry run), gives the same numbers; and against a worse production it is promoted,
with the latency guardrail timed on the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = {"x-api-key": ADMIN_KEY}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("train") / "data"
    with run_server(data, env={"MLGATE_SERVICES": '["temperatura"]'}) as s:
        yield s


def _train(server: ServerProcess, tmp: Path, *args: str) -> dict[str, Any]:
    report = tmp / f"report-{len(list(tmp.glob('report-*')))}.json"
    env = {**os.environ, "MLGATE_URL": server.url, "MLGATE_API_KEY": ADMIN_KEY}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlgate",
            "train",
            "temperatura",
            "--seed",
            "7",
            "--report",
            str(report),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out: dict[str, Any] = json.loads(report.read_text())
    return out


def _model(server: ServerProcess) -> dict[str, Any]:
    body: dict[str, Any] = (
        httpx.get(f"{server.url}/v1/models/temperatura", headers=ADMIN).raise_for_status().json()
    )
    return body


def _version(server: ServerProcess, v: int) -> dict[str, Any]:
    return next(x for x in _model(server)["versions"] if x["version"] == v)


def test_train_gate_register_and_promote(server: ServerProcess, tmp_path: Path) -> None:
    assert _model(server)["aliases"]["production"] == 1  # the bundled version

    # A deliberately worse candidate: registered, production stays, the reason says why.
    worse = _train(server, tmp_path, "--promote", "production", "--param", "lags=6")
    assert worse["current_version"] == 1
    assert worse["decision"] == "keep" and not worse["promoted"]
    assert worse["reason"].startswith("candidate worse")
    q = worse["quality"]
    assert q["test"] == "paired bootstrap" and q["n"] == worse["n"] > 5_000
    assert q["interval"][1] < 0
    assert q["candidate"]["mae"] > q["current"]["mae"]
    v_worse = worse["registered"]
    assert _model(server)["aliases"]["production"] == 1
    info = _version(server, v_worse)
    assert {"model.onnx", "gate.json", "metrics.json", "baseline.json"} <= set(info["files"])
    assert info["params"]["gate"]["decision"] == "keep"
    assert info["params"]["gate"]["reason"] == worse["reason"]
    assert info["params"]["gate"]["data_hash"] == worse["data_hash"]
    baseline = httpx.get(
        f"{server.url}/v1/models/temperatura/versions/{v_worse}/baseline", headers=ADMIN
    ).raise_for_status()
    assert baseline.json()["format"] == "mlgate-baseline/1"

    # The default recipe reproduces the bundled model: not better, kept — the same numbers
    # when run again with the same seed (as a dry run, which registers nothing).
    first = _train(server, tmp_path, "--promote", "production")
    n_versions = len(_model(server)["versions"])
    again = _train(server, tmp_path, "--promote", "production", "--dry-run")
    assert again["registered"] is None and len(_model(server)["versions"]) == n_versions
    for key in ("quality", "data_hash", "decision", "reason", "candidate_metrics", "n"):
        assert first[key] == again[key], key
    assert first["decision"] == "keep"
    assert _model(server)["aliases"]["production"] == 1

    # Against a worse production, the same candidate is really better: promoted.
    httpx.put(
        f"{server.url}/v1/models/temperatura/aliases/production", json={"version": v_worse}, headers=ADMIN
    ).raise_for_status()
    better = _train(server, tmp_path, "--promote", "production")
    assert better["current_version"] == v_worse
    assert better["decision"] == "promote" and better["promoted"], better["reason"]
    assert better["quality"]["interval"][0] > 0
    assert better["guardrails"]["latency"]["passed"]
    assert better["guardrails"]["size"]["passed"]
    assert _model(server)["aliases"]["production"] == better["registered"]
    answer = httpx.post(
        f"{server.url}/v1/models/temperatura/predict",
        json={"temperaturas": [15.0] * 60},
        headers={"x-api-key": server.api_key},
    ).raise_for_status()
    assert answer.json()["model_version"] == better["registered"]
    print(json.dumps({k: better[k] for k in ("quality", "guardrails", "decision", "reason")}, indent=2))
