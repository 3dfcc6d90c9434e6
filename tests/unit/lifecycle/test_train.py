"""The orchestration (mlgate.lifecycle.train) against a fake server (httpx.MockTransport)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlgate.lifecycle.recipes import TrainResult
from mlgate.lifecycle.train import TrainError, run_train

RNG = np.random.default_rng(0)
X = RNG.normal(0.0, 1.0, (600, 3))
Y = X @ np.array([1.0, 2.0, 3.0])
#: what the served "current" version answers: the truth plus noise of sd 1
SERVED = Y + RNG.normal(0.0, 1.0, Y.size)


def recipe(data_dir: Path | None, seed: int, params: dict[str, Any]) -> TrainResult:
    """A user recipe: predictions with noise of sd ``params["noise"]``."""
    noise = np.random.default_rng(seed).normal(0.0, float(params.get("noise", 0.1)), Y.size)
    folder = Path(tempfile.mkdtemp(prefix="mlgate-test-recipe-"))
    (folder / "model.onnx").write_bytes(b"x" * 100)
    lookup = {row.tobytes(): i for i, row in enumerate(X)}
    return TrainResult(
        artifact_dir=folder,
        manifest={"runtime": "onnx", "artifact": "model.onnx"},
        x_test=X,
        y_test=Y,
        predict=lambda rows: np.array([Y[lookup[r.tobytes()]] + noise[lookup[r.tobytes()]] for r in rows]),
        metrics={"mae": 0.0},
        scratch=True,
    )


class FakeServer:
    def __init__(self, aliases: dict[str, int] | None) -> None:
        self.aliases = aliases
        self.uploads: list[dict[str, Any]] = []
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.calls.append(f"{method} {path}")
        if method == "GET" and path == "/v1/models/m":
            if self.aliases is None:
                return httpx.Response(404, json={"error": "not found"})
            return httpx.Response(
                200, json={"aliases": self.aliases, "versions": [{"version": 1, "params": {}}]}
            )
        if path == "/v1/models/m/versions/1/batch":
            inputs = json.loads(request.content)["inputs"]
            index = {tuple(row): i for i, row in enumerate(X.tolist())}
            return httpx.Response(
                200, json={"results": [{"output": SERVED[index[tuple(r)]]} for r in inputs]}
            )
        if path.endswith("/predict"):
            return httpx.Response(200, json={"outputs": 1.0})
        if method == "POST" and path == "/v1/models/m/versions":
            self.uploads.append({"body": request.content})
            return httpx.Response(201, json={"version": 2})
        if method == "PUT" and path == "/v1/models/m/aliases/production":
            self.aliases = {**(self.aliases or {}), "production": json.loads(request.content)["version"]}
            return httpx.Response(200, json={})
        return httpx.Response(500, json={"error": f"unexpected {method} {path}"})


def _run(server: FakeServer, **kwargs: Any) -> dict[str, Any]:
    with httpx.Client(base_url="http://fake", transport=httpx.MockTransport(server)) as client:
        return run_train(f"{__name__}:recipe", client=client, model="m", seed=3, **kwargs)


def test_a_better_candidate_is_registered_and_promoted() -> None:
    server = FakeServer({"production": 1})
    out = _run(server, promote=True)
    assert out["decision"] == "promote" and out["promoted"], out["reason"]
    assert out["registered"] == 2 and server.aliases == {"production": 2}
    assert out["guardrails"]["latency"]["passed"]
    assert out["quality"]["interval"][0] > 0 and out["quality"]["n"] == 600
    body = server.uploads[0]["body"]
    assert b'filename="gate.json"' in body and b'filename="metrics.json"' in body
    assert b'"artifact_bytes": 100' in body


def test_a_worse_candidate_is_registered_and_kept() -> None:
    server = FakeServer({"production": 1})
    out = _run(server, promote=True, params={"noise": 2.0})
    assert out["decision"] == "keep" and not out["promoted"]
    assert out["reason"].startswith("candidate worse")
    assert out["registered"] == 2 and server.aliases == {"production": 1}
    assert not any(c.endswith("/predict") for c in server.calls)  # no latency run for a kept one


def test_dry_run_registers_nothing_and_is_deterministic() -> None:
    server = FakeServer({"production": 1})
    a = _run(server, dry_run=True)
    b = _run(server, dry_run=True)
    assert a["registered"] is None and not server.uploads
    assert a["quality"] == b["quality"] and a["data_hash"] == b["data_hash"]


def test_nothing_to_compare() -> None:
    server = FakeServer(None)
    kept = _run(server)
    assert kept["decision"] == "keep" and "nothing to compare" in kept["reason"]
    promoted = _run(server, promote=True)
    assert promoted["decision"] == "promote" and promoted["promoted"]
    assert server.aliases == {"production": 2}


def test_a_user_recipe_needs_a_model_name() -> None:
    with pytest.raises(TrainError):
        run_train(f"{__name__}:recipe", client=None)


def test_temperatura_recipe_reads_a_data_dir(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    hours = np.arange(1_200)
    for name in ("a", "b"):
        series = 15 + 8 * np.sin(2 * np.pi * hours / 24) + rng.normal(0.0, 0.5, hours.size)
        np.savetxt(tmp_path / f"{name}.csv", series, fmt="%.2f")
    out = run_train("temperatura", client=None, data_dir=tmp_path, seed=1, params={"lags": 24})
    assert out["registered"] is None and out["decision"] == "keep"
    assert out["candidate_metrics"]["model"].startswith("ridge_24lags")
    assert out["candidate_metrics"]["mae"] < 1.0
    assert out["data"]["stations"] == ["a", "b"]
    assert out["n"] == 2 * (240 - 60)
