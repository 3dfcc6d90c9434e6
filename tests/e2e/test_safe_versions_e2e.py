"""End to end: safe versions (issue 14, part 1) and visible failures (part 4) over a real server.

A push that does not load is refused and moves no alias; a version that stops loading between
two runs is reported and the server serves the rest; versions and models are deleted with their
unreferenced blobs; a model's exception is a 500 whose traceback is only in the server log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression

from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e
ADMIN = {"x-api-key": ADMIN_KEY}

BOOM = """
class Model:
    def predict(self, batch):
        raise RuntimeError("kaboom inside /opt/secret/boom.py")
"""


def _skops_model(path: Path, factor: float) -> Path:
    x = np.arange(20, dtype=float).reshape(10, 2)
    sio.dump(LinearRegression().fit(x, factor * x.sum(axis=1)), path)
    return path


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"this is not a model at all" * 10)
    return path


def _push(client: httpx.Client, name: str, path: Path, **form: str) -> httpx.Response:
    with path.open("rb") as f:
        return client.post(
            f"/v1/models/{name}/versions", files={"files": (path.name, f)}, data=form, headers=ADMIN
        )


def _blob(server: ServerProcess, sha: str) -> Path:
    return server.data_dir / "store" / "blobs" / "sha256" / sha


def _metric(server: ServerProcess, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{server.url}/metrics", timeout=10.0).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, _, value = line.rpartition(" ")
            found = ",".join(sorted(series[len(name) + 1 : -1].split(",")))
            if found == wanted:
                return float(value)
    return None


def _wait_for_log(server: ServerProcess, *needles: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = server.log()
        if all(n in log for n in needles) or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLGATE_URL": server.url, "MLGATE_API_KEY": ADMIN_KEY, "NO_COLOR": "1"}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "mlgate", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("e2e-safe")) as s:
        yield s


def test_a_push_that_does_not_load_is_refused_and_moves_no_alias(
    server: ServerProcess, tmp_path: Path
) -> None:
    with server.client() as client:
        good = _push(client, "steady", _skops_model(tmp_path / "good.skops", 1.0), aliases="production")
        assert good.status_code == 201, good.text
        bad = _push(client, "steady", _corrupt(tmp_path / "bad.skops"), aliases="production")
        assert bad.status_code == 422, bad.text
        error = bad.json()["error"]
        assert error["code"] == "invalid_artifact"
        assert "not registered" in error["message"] and "load" in error["message"]
        assert str(tmp_path) not in bad.text and "Traceback" not in bad.text
        model = client.get("/v1/models/steady").json()
        assert model["latest_version"] == 1 and model["aliases"] == {"production": 1}
        answer = client.post("/v1/models/steady/predict", json=[1.0, 2.0])
        assert answer.status_code == 200 and answer.json()["model_version"] == 1
    assert (_metric(server, "mlgate_model_load_failures_total", model="steady", version="push") or 0) >= 1
    assert "refused: it does not load or warm up" in _wait_for_log(server, "refused: it does not load")


def test_cli_push_of_a_corrupt_file_exits_non_zero(server: ServerProcess, tmp_path: Path) -> None:
    done = _cli(
        server, "models", "push", "clipush", str(_corrupt(tmp_path / "m.skops")), "--alias", "production"
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert "invalid_artifact" in done.stderr
    with server.client() as client:
        assert client.get("/v1/models/clipush").status_code == 404  # nothing registered


def test_delete_versions_and_models_releases_unreferenced_blobs(
    server: ServerProcess, tmp_path: Path
) -> None:
    one = _skops_model(tmp_path / "one.skops", 1.0)
    with server.client() as client:
        v1 = _push(client, "gone", one, aliases="production").json()
        v2 = _push(client, "gone", _skops_model(tmp_path / "two.skops", 2.0)).json()
        sha1, sha2 = v1["files"]["one.skops"], v2["files"]["two.skops"]
        assert _blob(server, sha1).is_file() and _blob(server, sha2).is_file()
        shared = _push(client, "sharer", one)  # the same bytes: the same blob
        assert shared.status_code == 201, shared.text

        assert client.delete("/v1/models/gone/versions/1").status_code == 403  # not an admin
        refused = client.delete("/v1/models/gone/versions/1", headers=ADMIN)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["details"]["aliases"] == ["production"]
        assert client.delete("/v1/models/gone/versions/x", headers=ADMIN).status_code == 400
        assert client.delete("/v1/models/gone/versions/9", headers=ADMIN).status_code == 404

        assert client.post("/v1/models/gone/versions/2/predict", json=[1.0, 1.0]).status_code == 200
        deleted = client.delete("/v1/models/gone/versions/2", headers=ADMIN)
        assert deleted.status_code == 200, deleted.text
        assert not _blob(server, sha2).exists()
        assert client.post("/v1/models/gone/versions/2/predict", json=[1.0, 1.0]).status_code == 404
        assert [v["version"] for v in client.get("/v1/models/gone").json()["versions"]] == [1]

        whole = client.delete("/v1/models/gone", headers=ADMIN)
        assert whole.status_code == 200 and whole.json()["versions"] == [1]
        assert client.get("/v1/models/gone").status_code == 404
        assert client.post("/v1/models/gone/predict", json=[1.0, 1.0]).status_code == 404
        assert _blob(server, sha1).is_file()  # "sharer" still references it
        assert client.post("/v1/models/sharer/predict", json=[1.0, 1.0]).status_code == 200

    done = _cli(server, "models", "delete", "sharer", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not _blob(server, sha1).exists()
    assert _cli(server, "models", "delete", "sharer", "--yes").returncode != 0  # 404 now


def test_a_model_exception_is_a_500_with_its_traceback_only_in_the_log(
    server: ServerProcess, tmp_path: Path
) -> None:
    artifact = tmp_path / "boom.py"
    artifact.write_text(BOOM)
    manifest = json.dumps({"runtime": "python", "artifact": "boom.py", "trusted": True})
    with server.client() as client:
        pushed = _push(client, "boom", artifact, manifest=manifest, aliases="production")
        assert pushed.status_code == 201, pushed.text
        answer = client.post("/v1/models/boom/predict", json=[1], headers={"x-request-id": "req-boom-4242"})
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "prediction_failed"
    assert answer.headers["x-request-id"] == "req-boom-4242"
    for secret in ("Traceback", "kaboom", "/opt/secret", "boom.py"):
        assert secret not in answer.text
    log = _wait_for_log(server, "req-boom-4242", "kaboom inside")
    assert "Traceback (most recent call last)" in log
    assert "RuntimeError: kaboom inside /opt/secret/boom.py" in log
    assert "the model raised on boom v1 (request req-boom-4242)" in log


def test_a_version_that_stops_loading_is_reported_and_the_rest_serves(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with run_server(data) as first, first.client() as client:
        fragile = _push(client, "fragile", _skops_model(tmp_path / "f.skops", 3.0))
        assert fragile.status_code == 201, fragile.text
        sha = fragile.json()["files"]["f.skops"]
        steady = _push(client, "steady", _skops_model(tmp_path / "s.skops", 1.0), aliases="production")
        assert steady.status_code == 201, steady.text
    _corrupt(data / "store" / "blobs" / "sha256" / sha)
    shutil.rmtree(data / "cache" / "fragile", ignore_errors=True)

    with run_server(data) as second, second.client() as client:
        ready = httpx.get(f"{second.url}/readyz", timeout=10.0)
        assert ready.status_code == 200, ready.text  # nothing aliased failed
        assert ready.json()["failed"] == ["fragile:1"]
        assert "steady:1" in ready.json()["loaded"]
        assert client.post("/v1/models/steady/predict", json=[1.0, 2.0]).status_code == 200
        answer = client.post("/v1/models/fragile/predict", json=[1.0, 2.0])
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "model_load_error"
        assert str(data) not in answer.text
        assert _metric(second, "mlgate_model_load_failures_total", model="fragile", version="1") == 1.0
        log = second.log()
        assert "could not load fragile v1" in log and "Traceback" in log

        # An alias never moves to it: the load is tried again, fails, and the alias stays unset.
        moved = client.put("/v1/models/fragile/aliases/production", json={"version": 1}, headers=ADMIN)
        assert moved.status_code == 503, moved.text
        assert client.get("/v1/models/fragile").json()["aliases"] == {}
        # Deleting it clears the report.
        assert client.delete("/v1/models/fragile/versions/1", headers=ADMIN).status_code == 200
        assert httpx.get(f"{second.url}/readyz", timeout=10.0).json()["failed"] == []


def test_a_declared_input_schema_is_enforced_with_a_clear_400(server: ServerProcess, tmp_path: Path) -> None:
    schema = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
    manifest = json.dumps({"input_schema": schema})
    with server.client() as client:
        pushed = _push(client, "schemed", _skops_model(tmp_path / "s.skops", 1.0), manifest=manifest)
        assert pushed.status_code == 201, pushed.text
        assert client.post("/v1/models/schemed/predict", json=[1.0, 2.0]).status_code == 200
        bad = client.post("/v1/models/schemed/predict", json=[1.0, "two"])
        assert bad.status_code == 400, bad.text
        error = bad.json()["error"]
        assert error["code"] == "invalid_input"
        assert "input_schema" in error["message"] and "at 1" in error["message"], error
        short = client.post("/v1/models/schemed/predict", json=[1.0])
        assert short.status_code == 400 and "too short" in short.json()["error"]["message"]
        batch = client.post("/v1/models/schemed/batch", json={"inputs": [[1.0, 1.0], [1.0, "x"]]})
        results = batch.json()["results"]
        assert "output" in results[0] and results[1]["error"]["status"] == 400
        broken = _push(
            client,
            "schemed",
            _skops_model(tmp_path / "t.skops", 1.0),
            manifest=json.dumps({"input_schema": {"type": 12}}),
        )
        assert broken.status_code == 422 and "input_schema" in broken.json()["error"]["message"], broken.text
