"""Train runs as background jobs, the cardiaco recipe, retrain on drift and a model's history,
end to end over one real server (issue 16).

- ``mlgate train cardiaco`` (CLI, small params) registers a version with a McNemar gate that the
  cardiaco service serves like the bundled one;
- ``POST /v1/train`` starts a job (a subprocess with its own minted key): a second start is a
  409 naming the running one, the run ends ``succeeded`` with its gate summary, is a ``train``
  event in the history (HTTP and ``mlgate models history``), and its key is disabled;
- a model opted in to retrain on drift gets a run (trigger ``drift``) when its drift alert fires,
  recorded as a ``retrain`` event.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.e2e.test_drift_e2e import _miami_windows, _write_capture
from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = {"x-api-key": ADMIN_KEY}
#: a small cardiaco fit: ~1-2 s, 200 held-out patients
SMALL = {"epochs": 3, "n_train": 400, "n_test": 200}
T = TypeVar("T")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    pytest.importorskip("torch")
    pytest.importorskip("pvlib")
    env = {
        "MLGATE_SERVICES": '["temperatura", "cardiaco"]',
        "MLGATE_MONITOR__INTERVAL_S": "0",
        "MLGATE_ALERTS__INTERVAL_S": "0.5",
        "MLGATE_ALERTS__SNAPSHOT_S": "0.2",
        "MLGATE_TRAIN__HEARTBEAT_S": "0.5",
    }
    with run_server(tmp_path_factory.mktemp("train-jobs") / "data", env=env) as s:
        yield s


def _wait(what: str, probe: Callable[[], T | None], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _cli(server: ServerProcess, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MLGATE_URL": server.url,
        "MLGATE_API_KEY": ADMIN_KEY,
        "COLUMNS": "250",
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "mlgate", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _patient() -> dict[str, Any]:
    from mlgate_services.cardiaco import generator

    return generator.to_columns(generator.generate(1, seed=5, first_id=7_000_000))


def test_cli_trains_cardiaco_with_a_classification_gate(server: ServerProcess, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    params = [arg for k, v in SMALL.items() for arg in ("--param", f"{k}={v}")]
    done = _cli(server, "train", "cardiaco", "--seed", "3", "--report", str(report_path), *params)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())
    assert report["task"] == "classification" and report["metric"] == "accuracy"
    assert report["current_version"] == 1 and report["n"] == SMALL["n_test"]
    assert report["quality"]["test"] == "mcnemar"
    assert {"b", "c", "p_value"} <= set(report["quality"])
    version = report["registered"]
    assert version == 2
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as c:
        info = c.get("/v1/models/cardiaco").json()
        v2 = next(v for v in info["versions"] if v["version"] == version)
        assert "gate.json" in v2["files"] and "baseline.json" in v2["files"]
        assert v2["params"]["gate"]["decision"] == report["decision"]
        assert v2["runtime"] == "onnx" and v2["artifact"] == "model.onnx"
        # Served by the cardiaco service exactly like the bundled version.
        answer = c.post(f"/v1/models/cardiaco/versions/{version}/predict", json=_patient())
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == version
        out = body["outputs"]
        assert out["idAtencion"] == 7_000_000 and out["State"] in out["inferences"]


def test_train_job_over_http(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as c:
        # bad input is a 4xx, never a 500
        assert c.post("/v1/train", json={"recipe": "cardiaco", "seed": -1}).status_code == 400
        assert c.post("/v1/train", json={"recipe": "nosuch"}).status_code == 400
        assert c.post("/v1/train", json={"recipe": "cardiaco", "trigger": "drift"}).status_code == 400
        not_json = c.post("/v1/train", content=b"{nope", headers={"content-type": "application/json"})
        assert not_json.status_code == 400
        denied = c.post("/v1/train", json={"recipe": "os:system", "model": "x"})
        assert denied.status_code == 403, denied.text
        user = {"x-api-key": server.api_key}
        assert (
            httpx.post(f"{server.url}/v1/train", json={"recipe": "cardiaco"}, headers=user).status_code == 403
        )

        started = c.post("/v1/train", json={"recipe": "cardiaco", "seed": 4, "params": SMALL})
        assert started.status_code == 202, started.text
        run = started.json()
        assert run["status"] in ("queued", "running") and run["trigger"] == "http"
        again = c.post("/v1/train", json={"recipe": "cardiaco", "params": SMALL})
        assert again.status_code == 409, again.text
        assert again.json()["error"]["details"]["run"] == run["id"]

        done = _wait(
            "the run to end",
            lambda: (r := c.get(f"/v1/train/{run['id']}").json())["status"] in ("succeeded", "failed") and r,
        )
        assert done["status"] == "succeeded", done
        assert done["version"] is not None and done["decision"] in ("promote", "keep")
        assert done["gate"]["quality"]["test"] == "mcnemar" and done["reason"]
        assert done["promoted"] is False  # no "promote": compared with production, nothing moved
        assert c.get("/v1/train/nosuchrun").status_code == 404
        listed = c.get("/v1/train", params={"model": "cardiaco"}).json()["runs"]
        assert listed[0]["id"] == run["id"]

        history = c.get("/v1/models/cardiaco/history", params={"kind": "train"}).json()
        [event] = [e for e in history["events"] if e["detail"].get("run") == run["id"]]
        assert event["version"] == done["version"] and event["detail"]["status"] == "succeeded"
        assert c.get("/v1/models/nosuch/history").status_code == 404
        assert c.get("/v1/models/cardiaco/history", params={"kind": "bogus"}).status_code == 400

        # the run's own key: an admin key, disabled once the run ended
        keys = c.get("/v1/keys").json()
        keys = keys.get("keys", keys) if isinstance(keys, dict) else keys
        mine = [k for k in keys if k["name"] == f"train-run-{run['id'][:12]}"]
        assert len(mine) == 1 and mine[0]["disabled"] is True
    assert ADMIN_KEY not in server.log()

    table = _cli(server, "models", "history", "cardiaco", "--kind", "train")
    assert table.returncode == 0, table.stderr
    assert "train" in table.stdout and str(done["version"]) in table.stdout

    # the CLI starts a job and follows it (a dry run: nothing registered)
    params = [arg for k, v in SMALL.items() for arg in ("--param", f"{k}={v}")]
    remote = _cli(server, "train", "cardiaco", "--remote", "--dry-run", "--seed", "4", *params)
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "succeeded" in remote.stdout and "started train run" in remote.stdout
    listed = _cli(server, "runs", "ls", "--model", "cardiaco")
    assert listed.returncode == 0 and listed.stdout.count("succeeded") == 2, listed.stdout
    assert " cli " in listed.stdout and " http " in listed.stdout


def test_retrain_on_drift(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as c:
        assert c.get("/v1/models/temperatura/retrain").status_code == 404
        bad = c.put("/v1/models/temperatura/retrain", json={"recipe": "temperatura", "cooldown": "soon"})
        assert bad.status_code == 400
        policy = {"recipe": "temperatura", "cooldown": "1h", "params": {"lags": 6, "alpha": 1.0}, "seed": 1}
        put = c.put("/v1/models/temperatura/retrain", json=policy)
        assert put.status_code == 200, put.text
        assert put.json()["cooldown_s"] == 3600 and put.json()["alias"] == "production"
        assert c.put("/v1/models/nosuch/retrain", json=policy).status_code == 404

        version = c.get("/v1/models/temperatura").json()["aliases"]["production"]
        _write_capture(server.data_dir, version, _miami_windows(300))
        assert c.get("/v1/models/temperatura/drift", params={"since": "1h"}).json()["verdict"] == "drift"

        def retrained() -> dict[str, Any] | None:
            events = c.get("/v1/models/temperatura/history", params={"kind": "retrain"}).json()["events"]
            return events[-1] if events else None  # the first decision

        event = _wait("the drift alert to start a run", retrained, timeout=60)
        assert event["detail"]["outcome"] == "started", event
        assert event["actor"] == "alert:MlgateDriftPsiHigh" and event["detail"]["features"]
        run_id = event["detail"]["run"]
        run = c.get(f"/v1/train/{run_id}").json()
        assert run["trigger"] == "drift" and run["options"]["promote"] == "production"
        done = _wait(
            "the retrain run to end",
            lambda: (r := c.get(f"/v1/train/{run_id}").json())["status"] in ("succeeded", "failed") and r,
            timeout=120,
        )
        assert done["status"] == "succeeded", done
        # 6 lags is worse than the bundled model: the gate keeps production
        assert done["decision"] == "keep" and done["promoted"] is False
        assert c.get("/v1/models/temperatura").json()["aliases"]["production"] == version
        assert c.get("/v1/models/temperatura/retrain").json()["last_started_at"] is not None
    shown = _cli(server, "monitor", "retrain", "temperatura")
    assert shown.returncode == 0 and '"cooldown_s": 3600' in shown.stdout, shown.stdout + shown.stderr
    assert _cli(server, "monitor", "retrain", "temperatura", "--off").returncode == 0
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as c:
        assert c.get("/v1/models/temperatura/retrain").status_code == 404
        assert c.delete("/v1/models/temperatura/retrain").status_code == 404
