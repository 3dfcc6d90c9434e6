"""The ``yolo`` runtime on small ONNX graphs whose output is a constant we choose.

Every score and coordinate is a dyadic number (exact in float32) and the letterbox gain
is a power of two, so decoding, the confidence filter, class-wise NMS and the mapping back
to original pixels are checked with ``==``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate.errors import ConfigurationError, InvalidInput, UnsafeArtifact
from mlgate.runtimes import create_runtime
from mlgate.runtimes.yolo import YoloRuntime, letterbox, nms, postprocess
from mlgate.types import RawInput
from tests.unit.runtimes.artifacts import image_bytes, load_context, onnx_tiny_conv

NAMES = {0: "person", 1: "dog"}

#: Anchors of a [1, 4+2, 8] classic head for a 64x64 input: (cx, cy, w, h, p_person, p_dog).
ANCHORS = [
    (32, 32, 32, 16, 0.875, 0.125),  # person, best
    (34, 32, 32, 16, 0.75, 0.0),  # person, IoU 0.88 with the best: suppressed
    (32, 32, 32, 16, 0.0, 0.625),  # dog on the same box: another class, kept
    (40, 40, 8, 8, 0.125, 0.0625),  # below conf 0.25: filtered
    (60, 44, 16, 16, 0.5, 0.0),  # person crossing the right and bottom edges: clipped
    (8, 16, 8, 16, 0.3125, 0.0),  # person reaching into the top padding: clipped to 0
    (56, 24, 8, 8, 0.0, 0.25),  # dog exactly at conf 0.25: kept
    (48, 32, 32, 16, 0.0, 0.375),  # dog, IoU 1/3 with the other dog: kept
]

#: What a 256x128 image gets (gain 1/4, 16 px of padding above and below), best first.
EXPECTED = [
    ("person", 0, 0.875, (64.0, 32.0, 192.0, 96.0)),
    ("dog", 1, 0.625, (64.0, 32.0, 192.0, 96.0)),
    ("person", 0, 0.5, (208.0, 80.0, 256.0, 128.0)),
    ("dog", 1, 0.375, (128.0, 32.0, 256.0, 96.0)),
    ("person", 0, 0.3125, (16.0, 0.0, 48.0, 32.0)),
    ("dog", 1, 0.25, (208.0, 16.0, 240.0, 48.0)),
]


def classic_output(anchors: list[tuple[float, ...]] = ANCHORS) -> np.ndarray:
    """``[1, 4+C, N]``: one column per anchor."""
    return np.asarray(anchors, dtype=np.float32).T[None]


def constant_yolo_onnx(
    path: Path,
    output: np.ndarray,
    *,
    batch: str | int = "N",
    size: tuple[int | str, int | str] = (64, 64),
    metadata: dict[str, str] | None = None,
) -> Path:
    """An ONNX model ``images`` [batch, 3, h, w] -> ``output0`` = ``output`` (broadcast over the batch).

    The image only enters as ``0 * max(image)``, so the output is exactly the constant.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMax", ["images"], ["peak"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["peak", "axes"], ["peak3"]),
        helper.make_node("Mul", ["peak3", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "head"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant-yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, *size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, *output.shape[1:]])],
        [
            numpy_helper.from_array(np.asarray([1, 2], np.int64), "axes"),
            numpy_helper.from_array(np.zeros((), np.float32), "zero"),
            numpy_helper.from_array(output.astype(np.float32), "head"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _runtime(
    folder: Path, artifact: str = "model.onnx", *, trusted: bool = False, **params: Any
) -> YoloRuntime:
    runtime = YoloRuntime()
    runtime.load(load_context(folder, "yolo", artifact, params=params, trusted=trusted))
    return runtime


def _rows(detections: list[dict[str, Any]]) -> list[tuple[str, int, float, tuple[float, ...]]]:
    return [
        (
            d["class"],
            d["class_id"],
            d["confidence"],
            tuple(d["bbox"][k] for k in ("xmin", "ymin", "xmax", "ymax")),
        )
        for d in detections
    ]


@pytest.fixture
def model(tmp_path: Path) -> YoloRuntime:
    constant_yolo_onnx(tmp_path / "model.onnx", classic_output(), metadata={"names": repr(NAMES)})
    return _runtime(tmp_path)


def test_registered_as_yolo() -> None:
    assert isinstance(create_runtime("yolo"), YoloRuntime)


def test_decodes_filters_suppresses_and_maps_back_exactly(model: YoloRuntime) -> None:
    image = np.zeros((128, 256, 3), np.uint8)  # non-square: letterboxed with 16 px bands
    [detections] = model.predict([model.decode(image)])
    assert _rows(detections) == EXPECTED
    assert all(type(d["confidence"]) is float and type(d["bbox"]["xmin"]) is float for d in detections)


def test_batches_match_single_predictions(model: YoloRuntime) -> None:
    small = np.full((128, 256, 3), 30, np.uint8)
    tall = np.full((256, 128, 3), 200, np.uint8)
    batch = model.predict([small, tall])
    assert batch[0] == model.predict([small])[0]
    assert batch[1] == model.predict([tall])[0]
    # The tall image is padded left and right instead: (cx 32 -> 64 - 16 px) / (1/4).
    assert _rows(batch[1])[0] == ("person", 0, 0.875, (0.0, 96.0, 128.0, 160.0))


def test_fixed_batch_model_runs_items_one_by_one(tmp_path: Path) -> None:
    constant_yolo_onnx(tmp_path / "model.onnx", classic_output(), batch=1)
    runtime = _runtime(tmp_path, names=["person", "dog"])
    image = np.zeros((128, 256, 3), np.uint8)
    assert [_rows(d) for d in runtime.predict([image, image])] == [EXPECTED, EXPECTED]


def test_conf_iou_and_max_det_params(tmp_path: Path) -> None:
    constant_yolo_onnx(tmp_path / "model.onnx", classic_output())
    image = np.zeros((128, 256, 3), np.uint8)
    strict = _runtime(tmp_path, conf=0.5, names=["person", "dog"])
    assert [r[2] for r in _rows(strict.predict([image])[0])] == [0.875, 0.625, 0.5]
    no_nms = _runtime(tmp_path, iou=1.0, names=["person", "dog"])
    assert [r[2] for r in _rows(no_nms.predict([image])[0])] == [0.875, 0.75, 0.625, 0.5, 0.375, 0.3125, 0.25]
    top2 = _runtime(tmp_path, max_det=2, names=["person", "dog"])
    assert [r[2] for r in _rows(top2.predict([image])[0])] == [0.875, 0.625]


def test_names_from_metadata_params_override_and_fallback(tmp_path: Path) -> None:
    constant_yolo_onnx(tmp_path / "model.onnx", classic_output(), metadata={"names": repr(NAMES)})
    image = np.zeros((128, 256, 3), np.uint8)
    from_meta = _runtime(tmp_path).predict([image])[0]
    assert [d["class"] for d in from_meta[:2]] == ["person", "dog"]
    overridden = _runtime(tmp_path, names={"0": "persona", "1": "perro"}).predict([image])[0]
    assert [d["class"] for d in overridden[:2]] == ["persona", "perro"]
    constant_yolo_onnx(tmp_path / "bare.onnx", classic_output())
    bare = _runtime(tmp_path, "bare.onnx").predict([image])[0]
    assert [(d["class"], d["class_id"]) for d in bare[:2]] == [("0", 0), ("1", 1)]


def test_imgsz_from_dynamic_input_metadata(tmp_path: Path) -> None:
    meta = {"names": repr(NAMES), "imgsz": "[64, 64]"}
    constant_yolo_onnx(tmp_path / "model.onnx", classic_output(), size=("H", "W"), metadata=meta)
    runtime = _runtime(tmp_path)
    assert runtime.warmup_input().shape == (64, 64, 3)
    assert _rows(runtime.predict([np.zeros((128, 256, 3), np.uint8)])[0]) == EXPECTED
    assert runtime.metadata()["inputs"][0]["parameters"]["imgsz"] == [64, 64]


def test_end_to_end_head_needs_only_the_confidence_filter(tmp_path: Path) -> None:
    # YOLO26-style [1, N, 6]: x1, y1, x2, y2, score, class; already free of duplicates.
    rows = [
        (16, 24, 48, 40, 0.5, 1),
        (16, 24, 48, 40, 0.875, 0),
        (18, 24, 50, 40, 0.75, 0),  # overlapping, but an end-to-end head's rows are final
        (0, 0, 8, 8, 0.125, 0),  # below conf
    ] + [(0, 0, 0, 0, 0.0, 0)] * 4
    constant_yolo_onnx(tmp_path / "model.onnx", np.asarray(rows, np.float32)[None])
    runtime = _runtime(tmp_path, names=["person", "dog"])
    [detections] = runtime.predict([np.zeros((128, 256, 3), np.uint8)])
    assert _rows(detections) == [
        ("person", 0, 0.875, (64.0, 32.0, 192.0, 96.0)),
        ("person", 0, 0.75, (72.0, 32.0, 200.0, 96.0)),
        ("dog", 1, 0.5, (64.0, 32.0, 192.0, 96.0)),
    ]


def test_letterbox_pads_with_114_and_keeps_the_aspect() -> None:
    import cv2

    image = np.full((128, 256, 3), 7, np.uint8)
    canvas, gain, pad = letterbox(image, (64, 64), cv2=cv2)
    assert canvas.shape == (64, 64, 3) and gain == 0.25 and pad == (0, 16)
    assert (canvas[:16] == 114).all() and (canvas[48:] == 114).all() and (canvas[16:48] == 7).all()
    # Odd padding splits as ultralytics does (one more row below); a 100x45 image scales by 0.64.
    canvas, gain, pad = letterbox(np.zeros((45, 100, 3), np.uint8), (64, 64), cv2=cv2)
    assert canvas.shape == (64, 64, 3) and gain == 0.64 and pad == (0, 17)
    assert (canvas[:17] == 114).all() and (canvas[46:] == 114).all() and (canvas[17:46] == 0).all()
    # A rectangular input size, and an image already the right size, are not resized.
    canvas, gain, pad = letterbox(np.zeros((32, 64, 3), np.uint8), (32, 64), cv2=cv2)
    assert canvas.shape == (32, 64, 3) and gain == 1.0 and pad == (0, 0) and not canvas.any()


def test_nms_keeps_other_classes_and_equal_iou() -> None:
    boxes = np.asarray([[0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 10]], np.float64)
    scores = np.asarray([0.9, 0.8, 0.7, 0.6])
    groups = np.asarray([0, 0, 0, 1])
    # Box 2 overlaps box 0 by IoU 50/150 = 1/3: kept at iou=1/3 (only IoU > iou suppresses).
    assert nms(boxes, scores, 1 / 3, groups=groups).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.3, groups=groups).tolist() == [0, 3]
    assert nms(boxes, scores, 0.3).tolist() == [0]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5, groups=np.zeros(0, np.int64)).tolist() == []


def test_postprocess_without_detections_is_empty() -> None:
    rows = postprocess(
        classic_output()[0] * 0, shape=(10, 10), gain=1.0, pad=(0, 0), conf=0.25, iou=0.45, max_det=300
    )
    assert rows.shape == (0, 6)


def test_decode_accepts_images_and_refuses_other_formats(model: YoloRuntime) -> None:
    png = image_bytes("PNG", size=(40, 30))
    for payload in (png, base64.b64encode(png).decode(), RawInput(png, "image/png"), {"image": png}):
        assert model.decode(payload).shape == (30, 40, 3)
    gif = image_bytes("GIF", size=(40, 30))
    for bad in (gif, "not base64!", {"image": png, "extra": 1}, {"img": png}, None, 3):
        with pytest.raises(InvalidInput):
            model.decode(bad)


def test_oip_tensors_are_padded(model: YoloRuntime) -> None:
    empty: list[dict[str, Any]] = []
    [full] = model.predict([np.zeros((128, 256, 3), np.uint8)])
    tensors = model.encode_tensors([full, empty])
    assert tensors["boxes"].shape == (2, 6, 4)
    assert tensors["num_detections"].tolist() == [6, 0]
    assert tensors["scores"][0].tolist() == [e[2] for e in EXPECTED]
    assert tensors["classes"][1].tolist() == [-1] * 6
    assert len(model.decode_tensors({"image": np.zeros((3, 8, 8, 3), np.uint8)})) == 3
    names = model.metadata()["outputs"][2]["parameters"]["names"]
    assert names == ["person", "dog"]


def test_untrusted_pt_is_refused_before_anything_is_imported(tmp_path: Path) -> None:
    (tmp_path / "yolov8n.pt").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeArtifact, match="pickle"):
        _runtime(tmp_path, "yolov8n.pt")


def test_trusted_pt_without_ultralytics_names_the_extra(tmp_path: Path) -> None:
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ultralytics is installed here")
    (tmp_path / "yolov8n.pt").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ConfigurationError, match=r"pip install 'mlgate\[yolo-pt\]'"):
        _runtime(tmp_path, "yolov8n.pt", trusted=True)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"conf": 1.5}, "conf"),
        ({"iou": "0.5"}, "iou"),
        ({"max_det": 0}, "max_det"),
        ({"imgsz": [64]}, "imgsz"),
        ({"imgsz": 320}, "imgsz"),  # the model's input is fixed at 64x64
        ({"names": "person"}, "names"),
        ({"threads": -1}, "threads"),
    ],
)
def test_bad_params(tmp_path: Path, params: dict[str, Any], message: str) -> None:
    constant_yolo_onnx(tmp_path / "model.onnx", classic_output())
    with pytest.raises(ConfigurationError, match=message):
        _runtime(tmp_path, **params)


def test_unknown_artifact_kind(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ConfigurationError, match="onnx"):
        _runtime(tmp_path, "model.bin")


def test_a_classifier_is_not_a_detector(tmp_path: Path) -> None:
    onnx_tiny_conv(tmp_path, size=16)  # [N, 3, 16, 16] -> [N, 2]
    with pytest.raises(ConfigurationError, match="4\\+classes"):
        _runtime(tmp_path, "conv.onnx")
