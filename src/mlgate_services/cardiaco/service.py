"""The cardiac state service: bundled LSTM, its processor and the original routes (SPEC §2.4).

Request: the long-format vitals record (see ``processing.py``), one or several patients.
Response, per patient::

    {"idAtencion": 1408826,
     "inferences": {"Arresto_Cardiaco": 0.06, "Bajo_Gasto_Cardiaco": 0.0, "Sano": 0.94,
                    "Shock_Cardiogenico": 0.0},
     "State": "Sano"}

A request with one patient answers that object (as the original did); with several, a list
of them in the order each patient first appears in the record. Probabilities are rounded to
2 decimals; ``State`` is the most probable state before rounding.

One request → one runtime item: the processor hands the runtime a ``[patients, 20, 9]``
array, and the model takes ``[batch, patients, 20, 9]`` (the onnx runtime stacks requests
with the same number of patients and runs the others one by one). The patient ids do not go
through the model: ``decode`` keeps them in a context variable that ``encode`` reads back.
The dataplane calls both inside the same asyncio task for one request (concurrent requests
are separate tasks, each with its own context), so ids never cross requests; ``encode``
also checks the row count and clears the value.

Original routes, kept for existing clients: ``POST /predict`` (user token), ``GET /home``
(public health check) and ``GET /`` (the caller's user); errors as FastAPI's ``{"detail": ...}``.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.errors import PredictionFailed
from mlgate.payloads import parse_json
from mlgate.types import (
    BatchingConfig,
    BundledModel,
    InfoContext,
    InfoRoute,
    Manifest,
    RouteAdapter,
    Service,
)
from mlgate_services.cardiaco.processing import (
    COLUMNS,
    MAX_PATIENTS,
    SIGNS,
    STATES,
    WINDOW,
    PatientId,
    preprocess,
)

__all__ = ["ARTIFACT_DIR", "MODEL", "CardiacProcessor", "service"]

MODEL = "cardiaco"
ARTIFACT_DIR = Path(__file__).parent / "artifact"
AUTH_FAILED = "Authentication Failed"

#: Patient ids of the request being served, from ``decode`` to ``encode`` (see the module docstring).
_PATIENTS: ContextVar[tuple[PatientId, ...] | None] = ContextVar("cardiaco_patients", default=None)


class CardiacProcessor:
    """Long-format vitals in (one or several patients); one state object per patient out."""

    def decode(self, payload: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
        sequences = preprocess(payload)
        _PATIENTS.set(sequences.ids)
        return sequences.x

    def encode(self, output: Any) -> dict[str, Any] | list[dict[str, Any]]:
        ids = _PATIENTS.get()
        _PATIENTS.set(None)
        if ids is None:
            raise PredictionFailed("cardiaco: encode called without a decoded request")
        probabilities = np.asarray(output, dtype=np.float64)
        if probabilities.shape != (len(ids), len(STATES)):
            raise PredictionFailed(
                f"cardiaco: the model answered shape {list(probabilities.shape)}, "
                f"expected [{len(ids)}, {len(STATES)}] (patients x states)"
            )
        objects = [_state(pid, row) for pid, row in zip(ids, probabilities, strict=True)]
        return objects[0] if len(objects) == 1 else objects


def _state(pid: PatientId, row: np.ndarray[Any, Any]) -> dict[str, Any]:
    return {
        "idAtencion": pid,
        "inferences": {name: round(float(p), 2) for name, p in zip(STATES, row, strict=True)},
        "State": STATES[int(np.argmax(row))],
    }


# -- original routes -----------------------------------------------------------------------------


def _parse(body: bytes, _content_type: str) -> Any:
    return parse_json(body)


def _render(output: Any) -> tuple[int, Any]:
    return 200, output


def _render_error(status: int, message: str) -> tuple[int, Any]:
    return status, {"detail": message}


def _render_auth_error(status: int, message: str) -> tuple[int, Any]:
    return status, {"detail": AUTH_FAILED if status in (401, 403) else message}


def _home(ctx: InfoContext) -> tuple[int, Any]:
    version = ctx.model_versions.get(MODEL)
    if version is None:
        return 503, {"detail": f"model '{MODEL}' is not available"}
    return 200, {"health_check": "OK", "model_version": f"{MODEL} v{version}"}


def _user(ctx: InfoContext) -> tuple[int, Any]:
    caller = ctx.caller
    if caller.kind != "user":
        return 401, {"detail": AUTH_FAILED}
    user: dict[str, Any] = {"username": caller.username or caller.id}
    user_id = caller.claims.get("id", caller.claims.get("uid"))
    if user_id is not None:
        user["id"] = user_id
    if caller.role is not None:
        user["role"] = caller.role
    return 200, {"User": user}


def _manifest() -> Manifest:
    metrics = json.loads((ARTIFACT_DIR / "metrics.json").read_text(encoding="utf-8"))
    # The drift baseline (mlgate-baseline/1, with KS reservoirs) ships as one of the version's
    # files (recipe.write_baseline); the manifest only points at it.
    baseline = {"format": "mlgate-baseline/1", "file": "baseline.json"}
    column = {"oneOf": [{"type": "object"}, {"type": "array"}]}
    return Manifest(
        runtime="onnx",
        artifact="model.onnx",
        description=(
            "Cardiac state from the last 20 five-minute readings of nine ICU vital signs "
            "(LSTM trained on SYNTHETIC data, not for clinical use; see MODEL_CARD.md)."
        ),
        input_schema={
            "type": "object",
            "description": "long-format vitals, pandas DataFrame.to_dict() ('dict' orient)",
            "required": ["idAtencion", "nomSigno", "valor", "fecRegistro"],
            "properties": {
                "idAtencion": {"oneOf": [{"type": "integer"}, {"type": "string"}, *column["oneOf"]]},
                **{name: column for name in COLUMNS[1:]},
            },
            "x-signs": list(SIGNS),
            "x-window": WINDOW,
            "x-max-patients": MAX_PATIENTS,
        },
        output_schema={
            "description": "one object per patient (a list when the request has several)",
            "type": "object",
            "properties": {
                "idAtencion": {},
                "inferences": {"type": "object", "properties": {s: {"type": "number"} for s in STATES}},
                "State": {"enum": list(STATES)},
            },
        },
        params={"threads": 1},
        metrics={
            "accuracy": float(metrics["accuracy"]),
            "macro_f1": float(metrics["macro_f1"]),
            "n_test": float(metrics["n_test"]),
            **{f"recall_{s}": float(metrics["per_class"][s]["recall"]) for s in STATES},
        },
        baseline=baseline,
        batching=BatchingConfig(max_batch_size=16, max_wait_ms=0, max_queue=256, max_concurrency=1),
        timeout_s=60.0,
    )


def service() -> Service:
    return Service(
        name="cardiaco",
        models=(
            BundledModel(
                name=MODEL,
                artifact_dir=ARTIFACT_DIR,
                manifest=_manifest(),
                description="Cardiac state (4 classes) from ICU vital signs; synthetic-data reference LSTM",
            ),
        ),
        processors={MODEL: CardiacProcessor()},
        routes=(
            RouteAdapter(
                path="/predict",
                model=MODEL,
                parse=_parse,
                render=_render,
                render_error=_render_error,
                summary="Cardiac state per patient (original route; needs a user token)",
                auth="user",
            ),
        ),
        info_routes=(
            InfoRoute(
                path="/home",
                respond=_home,
                summary="Health check with the served model version (original route)",
                auth="public",
                render_error=_render_error,
            ),
            InfoRoute(
                path="/",
                respond=_user,
                summary="The authenticated user (original route)",
                auth="user",
                render_error=_render_auth_error,
            ),
        ),
    )
