"""Drift end to end over real HTTP: captured traffic of one station only → the temperature
model's drift report shows it, and ``/metrics`` carries ``mlgate_drift_psi``.

The captured records are written straight into the server's store folder in SageMaker Data
Capture's JSON-lines shape (``capture/<model>/<version>/YYYY/MM/DD/HH/*.jsonl``), the way the
capture module writes them.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e

ADMIN = {"x-api-key": ADMIN_KEY}


def _record(payload: object, answer: object, when: datetime, i: int) -> dict[str, object]:
    return {
        "captureData": {
            "endpointInput": {
                "observedContentType": "application/json",
                "mode": "INPUT",
                "data": orjson.dumps(payload).decode(),
                "encoding": "JSON",
            },
            "endpointOutput": {
                "observedContentType": "application/json",
                "mode": "OUTPUT",
                "data": base64.b64encode(orjson.dumps(answer)).decode(),
                "encoding": "BASE64",
            },
        },
        "eventMetadata": {
            "eventId": f"e2e-{i}",
            "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "customAttributes": None,
        },
        "eventVersion": "0",
    }


def _miami_windows(n: int) -> np.ndarray:
    from mlgate_services.temperatura.recipe import load_stations, windows

    stations = dict(load_stations())
    series = next(s for label, s in stations.items() if "MIAMI" in label)
    x, _ = windows(series)
    rng = np.random.default_rng(7)
    return x[rng.choice(len(x), size=n, replace=False)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    pytest.importorskip("pvlib")
    with run_server(tmp_path_factory.mktemp("e2e-drift"), env={"MLGATE_MONITOR__INTERVAL_S": "0"}) as s:
        yield s


def _write_capture(data_dir: Path, version: int, rows: np.ndarray) -> None:
    now = datetime.now(UTC)
    folder = data_dir / "store" / "capture" / "temperatura" / str(version) / now.strftime("%Y/%m/%d/%H")
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        orjson.dumps(_record({"temperaturas": [float(v) for v in row]}, {"prediccion": 25.0}, now, i))
        for i, row in enumerate(rows)
    ]
    (folder / "e2e-0001.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def test_drift_of_miami_only_traffic(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60.0) as c:
        version = c.get("/v1/models/temperatura").json()["aliases"].get("production", 1)
        # No captured data yet: a clear 422, not a 500.
        empty = c.get("/v1/models/temperatura/drift", params={"since": "1h"})
        assert empty.status_code == 422, empty.text
        assert "too few captured rows" in empty.json()["error"]["message"]
        assert c.get("/v1/models/nosuchmodel/drift").status_code == 404
        assert c.get("/v1/models/temperatura/drift", params={"since": "yesterday"}).status_code == 400

        _write_capture(server.data_dir, version, _miami_windows(300))
        r = c.get("/v1/models/temperatura/drift", params={"since": "1h", "version": str(version)})
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["n_rows"] == 300
        lags = [f for f in report["features"] if f["kind"] == "input"]
        assert len(lags) == 60
        drifted = [f for f in lags if f["psi"] > 0.25]
        assert len(drifted) >= 50, [f["psi"] for f in lags]
        assert report["verdict"] == "drift"
        print(
            f"\nMiami-only traffic: PSI min {min(f['psi'] for f in lags):.2f}, "
            f"median {float(np.median([f['psi'] for f in lags])):.2f}; {len(drifted)}/60 lags > 0.25"
        )

        latest = c.get("/v1/models/temperatura/drift/reports")
        assert latest.status_code == 200
        assert latest.json()["evaluated_at"] == report["evaluated_at"]

        metrics = httpx.get(f"{server.url}/metrics", timeout=10.0).text
        psi_lines = [line for line in metrics.splitlines() if line.startswith("mlgate_drift_psi{")]
        assert any('feature="lag_1"' in line and 'model="temperatura"' in line for line in psi_lines)
        assert any(line.startswith("mlgate_drift_ks{") for line in metrics.splitlines())

        store = server.data_dir / "store" / "monitoring" / "temperatura" / str(version) / "reports"
        [folder] = list(store.iterdir())
        violations = orjson.loads((folder / "constraint_violations.json").read_bytes())
        assert any(v["constraint_check_type"] == "baseline_drift_check" for v in violations["violations"])


def test_drift_from_real_captured_requests(tmp_path: Path) -> None:
    """Real requests to ``/prod`` captured by the server (sample 1, flushed every 0.2 s), then
    the drift report over them; a baseline built from that capture reads the same traffic as ok."""
    pytest.importorskip("pvlib")
    env = {"MLGATE_MONITOR__INTERVAL_S": "0", "MLGATE_CAPTURE__SAMPLE": "1", "MLGATE_CAPTURE__FLUSH_S": "0.2"}
    with run_server(tmp_path / "srv", env=env) as server:
        rows = _miami_windows(120)
        with server.client() as c:
            for row in rows:
                assert c.post("/prod", json={"temperaturas": [float(v) for v in row]}).status_code == 200
        with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60.0) as admin:
            deadline = time.monotonic() + 20
            while True:
                r = admin.get("/v1/models/temperatura/drift", params={"since": "1h"})
                if (r.status_code == 200 and r.json()["n_rows"] == len(rows)) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert r.status_code == 200, r.text
            report = r.json()
            assert report["n_rows"] == len(rows)
            assert report["verdict"] == "drift"
            assert sum(f["psi"] > 0.25 for f in report["features"] if f["kind"] == "input") >= 50
            output = next(f for f in report["features"] if f["name"] == "output:value")
            assert output["n"] == len(rows)

            version = report["version"]
            built = admin.post(
                f"/v1/models/temperatura/versions/{version}/baseline/from-capture", params={"since": "1h"}
            )
            assert built.status_code == 200, built.text
            assert built.json()["n_rows"] == len(rows)
            again = admin.get("/v1/models/temperatura/drift", params={"since": "1h"}).json()
            assert again["input_verdict"] == "ok"


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MLGATE_URL": server.url,
        "MLGATE_API_KEY": ADMIN_KEY,
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "mlgate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_baseline_uploads_and_cli(server: ServerProcess, tmp_path: Path) -> None:
    """PUT a baseline as CSV, JSON lines, rows or a document; bad bodies are 4xx; the CLI's
    ``monitor baseline --data`` and ``monitor drift`` table."""
    names = [f"lag_{60 - i}" for i in range(60)]
    rows = _miami_windows(200)
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60.0) as c:
        version = c.get("/v1/models/temperatura").json()["aliases"].get("production", 1)
        url = f"/v1/models/temperatura/versions/{version}/baseline"
        saved = c.get(url).json()  # the shipped baseline (the version's baseline.json)
        assert saved["format"] == "mlgate-baseline/1" and len(saved["feature_names"]) == 60
        stats = c.get(url, params={"view": "statistics"}).json()
        assert stats["features"][0]["numerical_statistics"]["distribution"]["kll"]["buckets"]

        csv = ",".join(names) + "\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in rows)
        r = c.put(url, content=csv, headers={"content-type": "text/csv"})
        assert r.status_code == 200, r.text
        assert r.json()["n_rows"] == 200 and r.json()["input"] == {"type": "window", "key": "temperaturas"}
        jsonl = "\n".join(
            orjson.dumps(dict(zip(names, map(float, row), strict=True))).decode() for row in rows
        )
        assert c.put(url, content=jsonl, headers={"content-type": "application/x-ndjson"}).status_code == 200
        records = {"records": [{"temperaturas": [float(v) for v in row]} for row in rows]}
        assert c.put(url, json=records).json()["n_rows"] == 200

        for body, ctype in (
            (b"not json", "application/json"),
            (b"a,b\n1,2", "text/csv"),  # not the version's features
            (b'{"rows": []}', "application/json"),
            (b'{"format": "mlgate-baseline/9"}', "application/json"),
            (b"[1, 2", "application/x-ndjson"),
        ):
            bad = c.put(url, content=body, headers={"content-type": ctype})
            assert 400 <= bad.status_code < 500, (body, bad.status_code, bad.text)
            assert "error" in bad.json()
        assert c.put("/v1/models/nosuch/versions/1/baseline", json=records).status_code == 404
        assert c.put(url, json=records, headers={"x-api-key": server.api_key}).status_code == 403

        # Back to the shipped baseline through the CLI (a CSV of Greensboro's real hours).
        from mlgate_services.temperatura.recipe import load_stations, windows

        greensboro = next(s for label, s in load_stations() if "GREENSBORO" in label)
        data = tmp_path / "reference.csv"
        data.write_text(
            ",".join(names)
            + "\n"
            + "\n".join(",".join(f"{v:g}" for v in row) for row in windows(greensboro)[0][::5])
        )
    out = _cli(server, "monitor", "baseline", "temperatura", "--version", str(version), "--data", str(data))
    assert out.returncode == 0, out.stderr
    assert "baseline stored" in out.stdout
    table = _cli(server, "monitor", "drift", "temperatura", "--since", "1h")
    assert table.returncode == 0, table.stderr
    assert "lag_1" in table.stdout and "verdict" in table.stdout
    usage = _cli(server, "monitor", "baseline", "temperatura")
    assert usage.returncode == 2


def test_push_with_baseline_then_drift_of_its_traffic(server: ServerProcess, tmp_path: Path) -> None:
    """``mlgate models push … --baseline rows.csv`` stores the new version's baseline; its captured
    list-of-numbers traffic is read as f0, f1 (a ``vector`` input)."""
    import skops.io as sio
    from sklearn.linear_model import LinearRegression

    x = np.random.default_rng(0).normal(0, 1, (300, 2))
    model = tmp_path / "lin.skops"
    sio.dump(LinearRegression().fit(x, x.sum(axis=1)), model)
    rows = tmp_path / "rows.csv"
    rows.write_text("f0,f1\n" + "\n".join(f"{a:.4f},{b:.4f}" for a, b in x))
    out = _cli(server, "models", "push", "lin", str(model), "--baseline", str(rows))
    assert out.returncode == 0, out.stderr
    assert "baseline stored" in out.stdout
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60.0) as c:
        version = c.get("/v1/models/lin").json()["latest_version"]
        doc = c.get(f"/v1/models/lin/versions/{version}/baseline").json()
        assert doc["input"] == {"type": "vector"} and doc["feature_names"] == ["f0", "f1"]
        now = datetime.now(UTC)
        folder = server.data_dir / "store" / "capture" / "lin" / str(version) / now.strftime("%Y/%m/%d/%H")
        folder.mkdir(parents=True, exist_ok=True)
        shifted = np.random.default_rng(1).normal(0, 1, (200, 2)) + np.array([3.0, 0.0])
        lines = [orjson.dumps(_record([float(a), float(b)], 1.0, now, i)) for i, (a, b) in enumerate(shifted)]
        (folder / "e2e.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        report = c.get("/v1/models/lin/drift", params={"since": "1h"}).json()
        bands = {f["name"]: f["band"] for f in report["features"]}
        assert bands == {"f0": "drift", "f1": "ok"}, report
