"""The temperature forecast service: bundled model, its processor and the original ``POST /prod``.

Seed contract (SPEC §2.2): ``{"temperaturas": [60 numbers]}`` (optionally wrapped in
``{"body": ...}``) → ``{"statusCode": 200, "body": {"prediccion": 15.85, "unidad": "Celsius"}}``;
a wrong count is 400 ``Se requieren exactamente 60 valores de temperatura``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mlgate.errors import InvalidInput
from mlgate.types import BatchingConfig, BundledModel, Manifest, RouteAdapter, Service

__all__ = ["MODEL", "TemperatureProcessor", "service"]

MODEL = "temperatura"
WINDOW = 60
ARTIFACT_DIR = Path(__file__).parent / "artifact"
WRONG_COUNT = f"Se requieren exactamente {WINDOW} valores de temperatura"
NOT_NUMBERS = "Todos los valores de temperatura deben ser números finitos (sin NaN ni infinitos)"
#: Beyond any temperature measured on Earth: a unit or sensor error, not a forecastable reading.
PLAUSIBLE_C = 100.0
_NUMBER_TYPES = frozenset({int, float})
OUT_OF_RANGE = f"Las temperaturas deben estar entre -{PLAUSIBLE_C:g} y {PLAUSIBLE_C:g} °C"


def _unwrap(payload: Any) -> Any:
    """Accept the bare object, ``{"body": {...}}`` and API Gateway's ``{"body": "<json string>"}``."""
    if isinstance(payload, dict) and "body" in payload and "temperaturas" not in payload:
        body = payload["body"]
        if isinstance(body, str | bytes):
            try:
                body = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise InvalidInput("body no es JSON válido") from None
        return body
    return payload


class TemperatureProcessor:
    """60 hourly temperatures in; ``{"prediccion", "unidad"}`` out."""

    def decode(self, payload: Any) -> np.ndarray:
        """The 60 readings as one float64 row, checked once (the runtime takes the array as is)."""
        if type(payload) is not dict or "temperaturas" not in payload:
            payload = _unwrap(payload)
            if not isinstance(payload, dict) or "temperaturas" not in payload:
                raise InvalidInput(f'se espera {{"temperaturas": [{WINDOW} números]}}')
        values = payload["temperaturas"]
        if not isinstance(values, list) or len(values) != WINDOW:
            raise InvalidInput(WRONG_COUNT)
        # Vectorised: one C pass per check instead of a Python loop over 60 values.
        # Exact types: numpy would read True as 1.0 and "1.5" as 1.5.
        if not _NUMBER_TYPES.issuperset(map(type, values)):
            raise InvalidInput(NOT_NUMBERS)
        try:
            row = np.array(values, dtype=np.float64)
        except OverflowError:
            raise InvalidInput(NOT_NUMBERS) from None
        # One reduction checks both: NaN fails every comparison, infinity is out of range.
        if not np.abs(row).max() <= PLAUSIBLE_C:
            raise InvalidInput(OUT_OF_RANGE if np.isfinite(row).all() else NOT_NUMBERS)
        return row

    def encode(self, output: Any) -> dict[str, Any]:
        value = output[0] if isinstance(output, list) else output
        return {"prediccion": round(float(value), 2), "unidad": "Celsius"}


def _parse(body: bytes, _content_type: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput(
            "el cuerpo de la petición no es JSON válido (NaN, Infinity y 1e309 no se aceptan)"
        ) from None


def _render(output: Any) -> tuple[int, Any]:
    return 200, {"statusCode": 200, "body": output}


def _render_error(status: int, message: str) -> tuple[int, Any]:
    return status, {"statusCode": status, "body": {"error": message}}


def _manifest() -> Manifest:
    metrics = json.loads((ARTIFACT_DIR / "metrics.json").read_text())
    # The drift baseline (mlgate-baseline/1, ~0.6 MB with its KS reservoirs) ships as one of the
    # version's files; the manifest only points at it.
    baseline = {"format": "mlgate-baseline/1", "file": "baseline.json"}
    return Manifest(
        # The trained Ridge pipeline (model.skops) folded into one float64 linear ONNX graph by the
        # recipe: serving needs no scikit-learn/SciPy import (see MODEL_CARD.md).
        runtime="onnx",
        artifact="model.onnx",
        description="Next-hour temperature from the last 60 hourly readings (Ridge; see MODEL_CARD.md).",
        input_schema={"type": "array", "items": {"type": "number"}, "minItems": WINDOW, "maxItems": WINDOW},
        output_schema={"type": "number", "unit": "Celsius"},
        metrics={k: float(metrics[k]) for k in ("mae", "rmse", "naive_mae", "naive_rmse")},
        baseline=baseline,
        batching=BatchingConfig(max_batch_size=64, max_wait_ms=0, max_queue=512, max_concurrency=1),
        timeout_s=60.0,
    )


def service() -> Service:
    return Service(
        name="temperatura",
        models=(
            BundledModel(
                name=MODEL,
                artifact_dir=ARTIFACT_DIR,
                files=("model.onnx", "metrics.json", "baseline.json"),
                manifest=_manifest(),
                description="Temperature forecast: next hour from 60 hourly readings (°C)",
            ),
        ),
        processors={MODEL: TemperatureProcessor()},
        routes=(
            RouteAdapter(
                path="/prod",
                model=MODEL,
                parse=_parse,
                render=_render,
                render_error=_render_error,
                summary="Temperature forecast (original API Gateway stage path)",
            ),
        ),
    )
