"""Captured records → feature columns, as a baseline declares them (docs/monitoring.md).

A captured record is SageMaker Data Capture's JSON line (``captureData.endpointInput`` /
``endpointOutput``: ``data`` with ``encoding`` ``JSON`` or ``BASE64``). The baseline's ``input``
says how a request becomes feature rows — never the model's name:

- ``{"type": "window", "key": "temperaturas"}``: a list of numbers (under ``key``, or bare) →
  one row, positionally onto ``feature_names`` (``lag_60`` … ``lag_1``);
- ``{"type": "vector"}``: a list of numbers (or a list of such lists) → rows onto
  ``feature_names`` (``f0`` … ``fn`` by default);
- ``{"type": "records"}``: a record, a list of records or columns (``{"col": [..]}``) → rows;
- ``{"type": "long", "id", "time", "name", "value"}``: long-format readings (pandas
  ``to_dict()`` columns, like cardiaco's vitals) pivoted to one row per (id, time);
- ``{"type": "image", "key": "image"}``: an image (raw bytes, or base64 under ``key``, also
  inside ``{"body": …}``) → ``width``, ``height``, ``aspect``, ``mean_r/g/b``, ``std_r/g/b``,
  ``bytes`` (decoded with :func:`mlgate.runtimes.images.decode_image`'s budget, at most
  :data:`MAX_IMAGES` per evaluation).

The ``output`` spec: ``{"kind": "regressor", "value": path}`` → ``output:value``;
``{"kind": "classifier", "label": path, "scores": path, "confidence": path}`` →
``output:class`` (categorical), ``output:confidence`` (the top probability) and
``output:score.<k>``; ``{"kind": "detector", "detections": path, "confidence": key, "label":
key}`` → ``output:count``, ``output:max_confidence``, ``output:top_class``. Paths are dotted
(``top.0.clase``). API Gateway envelopes (``{"statusCode", "body"}``, ``{"body": "<json>"}``) are
unwrapped first. A record that does not fit is skipped and counted, never an error.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from mlgate.errors import InvalidInput, MlgateError
from mlgate.monitoring.baseline import MAX_FEATURES

__all__ = [
    "IMAGE_FEATURES",
    "MAX_IMAGES",
    "FeatureFrame",
    "collect_rows",
    "extract",
    "image_features",
    "infer_specs",
    "input_rows",
    "output_rows",
    "payloads",
    "rows_to_columns",
    "window_names",
]

IMAGE_FEATURES = (
    "width",
    "height",
    "aspect",
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "bytes",
)
#: Images decoded per evaluation at most (each decode is bounded; this bounds their number).
MAX_IMAGES = 1_000
#: Pixels the image statistics read at most (a strided sample of larger images).
_SAMPLE_PIXELS = 250_000

Row = dict[str, Any]
_NUMBER_TYPES = frozenset({int, float})


@dataclass
class FeatureFrame:
    """Feature columns of a set of captured records (inputs and outputs may differ in rows)."""

    columns: dict[str, np.ndarray]
    n_rows: int
    n_outputs: int
    n_records: int
    skipped: Counter[str] = field(default_factory=Counter)


# -- capture records ---------------------------------------------------------------------------


def _decode_part(part: Any) -> Any:
    """One ``endpointInput``/``endpointOutput``: JSON as its value, BASE64 as bytes (or JSON
    when its content type is JSON)."""
    if not isinstance(part, Mapping) or "data" not in part:
        return None
    data = part.get("data")
    encoding = str(part.get("encoding", "JSON")).upper()
    content_type = str(part.get("observedContentType", "")).lower()
    if encoding == "BASE64":
        if not isinstance(data, str):
            return None
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return None
        if "json" in content_type or (not content_type and raw[:1] in b'{["-0123456789tfn'):
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                return None if content_type else raw
        return raw
    if encoding == "CSV" and isinstance(data, str):
        return _csv_rows(data)
    if isinstance(data, str):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
    return data


def _csv_rows(text: str) -> Any:
    """CSV text as a list of number rows (one row: that row), or the text when it is not numbers."""
    rows: list[list[float]] = []
    for line in text.splitlines()[:20_000]:
        if not line.strip():
            continue
        try:
            rows.append([float(cell) for cell in line.split(",")])
        except ValueError:
            return text
    return rows[0] if len(rows) == 1 else rows


def payloads(record: Mapping[str, Any]) -> tuple[Any, Any]:
    """A captured record's (input, output), decoded; None where absent or undecodable."""
    capture = record.get("captureData") if isinstance(record, Mapping) else None
    if not isinstance(capture, Mapping):
        return None, None
    return _decode_part(capture.get("endpointInput")), _decode_part(capture.get("endpointOutput"))


def _unwrap(value: Any) -> Any:
    """API Gateway envelopes: ``{"statusCode", "body"}``, ``{"body": {...}}``, ``{"body": "<json>"}``;
    mlgate's native answers: ``{"model_name", "model_version", "outputs"}`` (predict) and
    ``{…, "results": [{"output"} | {"error"}]}`` (batch: the items answered)."""
    for _ in range(3):
        if isinstance(value, Mapping) and "model_name" in value and "model_version" in value:
            if "outputs" in value:
                value = value["outputs"]
            elif isinstance(value.get("results"), list):
                value = [r["output"] for r in value["results"] if isinstance(r, Mapping) and "output" in r]
            break
        if isinstance(value, Mapping) and "body" in value and (len(value) == 1 or "statusCode" in value):
            body = value["body"]
            if isinstance(body, str | bytes):
                try:
                    body = orjson.loads(body)
                except orjson.JSONDecodeError:
                    return body
            value = body
        else:
            break
    return value


def _path(value: Any, path: str | None) -> Any:
    if not path:
        return value
    for part in path.split("."):
        if isinstance(value, Mapping):
            if part not in value:
                return None
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(value) <= index < len(value):
                return None
            value = value[index]
        else:
            return None
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    f = float(value)
    return f if math.isfinite(f) else math.nan


def _is_numbers(value: Any) -> bool:
    # Exact types, one C pass: bools and strings are not numbers here.
    return isinstance(value, list) and bool(value) and _NUMBER_TYPES.issuperset(map(type, value))


# -- inputs ------------------------------------------------------------------------------------


def input_rows(payload: Any, spec: Mapping[str, Any], names: Sequence[str]) -> list[Row]:
    """The feature rows of one request (empty when it does not fit the spec)."""
    kind = spec.get("type", "records")
    if kind == "image":
        return []  # images are decoded by extract(), bounded per evaluation
    payload = _unwrap(payload)
    if kind == "window":
        key = spec.get("key")
        values: Any = payload.get(key) if isinstance(payload, Mapping) and key else payload
        if not _is_numbers(values) or len(values) != len(names):
            return []
        return [dict(zip(names, values, strict=True))]
    if kind == "vector":
        if isinstance(payload, Mapping) and len(payload) == 1:
            payload = next(iter(payload.values()))
        nested = isinstance(payload, list) and payload and isinstance(payload[0], list)
        rows = payload if nested else [payload]
        out = []
        for values in rows:
            if _is_numbers(values) and len(values) == len(names):
                out.append(dict(zip(names, values, strict=True)))
        return out
    if kind == "long":
        return _long_rows(payload, spec)
    # records
    if isinstance(payload, Mapping):
        for wrapper in ("instances", "records", "inputs", "data"):
            if isinstance(payload.get(wrapper), list) and len(payload) == 1:
                payload = payload[wrapper]
                break
    if isinstance(payload, list):
        return [dict(r) for r in payload if isinstance(r, Mapping)]
    if isinstance(payload, Mapping):
        columns = [v for v in payload.values() if isinstance(v, list)]
        if columns and len(columns) == len(payload) and len({len(c) for c in columns}) == 1:
            keys = list(payload)
            return [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]
        return [dict(payload)]
    return []


def _column(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        try:
            return [value[k] for k in sorted(value, key=lambda k: int(k))]
        except (TypeError, ValueError):
            return list(value.values())
    return None


def _long_rows(payload: Any, spec: Mapping[str, Any]) -> list[Row]:
    if not isinstance(payload, Mapping):
        return []
    names = _column(payload.get(spec.get("name", "name")))
    values = _column(payload.get(spec.get("value", "value")))
    if names is None or values is None or len(names) != len(values):
        return []
    n = len(names)
    ids = _column(payload.get(spec.get("id", "id")))
    times = _column(payload.get(spec.get("time", "time")))
    if ids is None:
        ids = [payload.get(spec.get("id", "id"))] * n
    if times is None or len(ids) != n or len(times) != n:
        return []
    rows: dict[tuple[str, str], Row] = {}
    counts: dict[tuple[str, str, str], int] = {}
    for pid, when, name, value in zip(ids, times, names, values, strict=True):
        number = _number(value)
        if not isinstance(name, str) or math.isnan(number):
            continue
        key = (str(pid), str(when))
        row = rows.setdefault(key, {})
        k = counts.get((*key, name), 0)
        row[name] = (row.get(name, 0.0) * k + number) / (k + 1)  # duplicates averaged
        counts[(*key, name)] = k + 1
    return list(rows.values())


def image_features(data: bytes) -> Row:
    """Cheap per-image features, decoded within the shared image budget."""
    from mlgate.runtimes.images import decode_image

    bgr = decode_image(data)
    height, width = bgr.shape[:2]
    step = max(1, int(math.sqrt(height * width / _SAMPLE_PIXELS)))
    pixels = bgr[::step, ::step].reshape(-1, 3).astype(np.float32)
    mean = pixels.mean(axis=0)
    std = pixels.std(axis=0)
    return {
        "width": float(width),
        "height": float(height),
        "aspect": width / height,
        "mean_r": float(mean[2]),
        "mean_g": float(mean[1]),
        "mean_b": float(mean[0]),
        "std_r": float(std[2]),
        "std_g": float(std[1]),
        "std_b": float(std[0]),
        "bytes": float(len(data)),
    }


def _image_bytes(payload: Any, spec: Mapping[str, Any]) -> bytes | None:
    if isinstance(payload, bytes):
        return payload
    payload = _unwrap(payload)
    key = spec.get("key", "image")
    value: Any = None
    if isinstance(payload, Mapping):
        for k in (key, "image", "image_data"):
            if isinstance(payload.get(k), str):
                value = payload[k]
                break
    elif isinstance(payload, str):
        value = payload
    if not isinstance(value, str):
        return None
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


# -- outputs -----------------------------------------------------------------------------------


def output_rows(answer: Any, spec: Mapping[str, Any]) -> list[Row]:
    """The output features of one answer (a list answer: one row per item)."""
    kind = spec.get("kind", "none")
    if kind == "none" or answer is None:
        return []
    answer = _unwrap(answer)
    items = answer if isinstance(answer, list) and not _is_numbers(answer) else [answer]
    if kind == "regressor" and _is_numbers(answer) and not spec.get("value"):
        items = list(answer)
    rows: list[Row] = []
    for item in items:
        row = _output_row(item, kind, spec)
        if row:
            rows.append(row)
    return rows


def _output_row(item: Any, kind: str, spec: Mapping[str, Any]) -> Row:
    if kind == "regressor":
        value = _path(item, spec.get("value"))
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        number = _number(value)
        return {} if math.isnan(number) else {"output:value": number}
    if kind == "classifier":
        row: Row = {}
        scores = _path(item, spec["scores"]) if spec.get("scores") else None
        labelled: list[tuple[str, float]] = []
        if isinstance(scores, Mapping):
            labelled = [(str(k), _number(v)) for k, v in scores.items()]
        elif isinstance(scores, list):
            labels = spec.get("labels") or [str(i) for i in range(len(scores))]
            labelled = [(str(k), _number(v)) for k, v in zip(labels, scores, strict=False)]
        for k, v in labelled:
            row[f"output:score.{k}"] = v
        label = _path(item, spec.get("label")) if spec.get("label") else None
        confidence = _number(_path(item, spec.get("confidence"))) if spec.get("confidence") else math.nan
        finite = [(k, v) for k, v in labelled if not math.isnan(v)]
        if label is None and finite:
            label = max(finite, key=lambda kv: kv[1])[0]
        if math.isnan(confidence) and finite:
            confidence = max(v for _, v in finite)
        if label is not None:
            row["output:class"] = str(label)
        if not math.isnan(confidence):
            row["output:confidence"] = confidence
        return row
    if kind == "detector":
        detections = _path(item, spec.get("detections"))
        if not isinstance(detections, list):
            return {}
        key = spec.get("confidence", "confidence")
        scores = [_number(d.get(key)) for d in detections if isinstance(d, Mapping)]
        scores = [s for s in scores if not math.isnan(s)]
        top = max(
            (d for d in detections if isinstance(d, Mapping) and not math.isnan(_number(d.get(key)))),
            key=lambda d: _number(d.get(key)),
            default=None,
        )
        label_key = spec.get("label", "label")
        return {
            "output:count": float(len(detections)),
            "output:max_confidence": max(scores) if scores else 0.0,
            "output:top_class": str(top.get(label_key)) if top is not None else "(none)",
        }
    return {}


# -- frames ------------------------------------------------------------------------------------


def _columns(rows: list[Row], names: Sequence[str], kinds: Mapping[str, str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    numeric = [n for n in names if kinds.get(n) != "categorical"]
    if numeric and rows:
        try:  # one C pass when every value is a number or null (the common case)
            with np.errstate(all="ignore"):
                matrix = np.array([[r.get(n) for n in numeric] for r in rows], dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            matrix = None
        if matrix is not None and matrix.shape == (len(rows), len(numeric)):
            matrix[~np.isfinite(matrix)] = np.nan
            out.update({n: np.ascontiguousarray(matrix[:, i]) for i, n in enumerate(numeric)})
    for name in names:
        if name in out:
            continue
        if kinds.get(name) == "categorical":
            out[name] = np.array(
                [None if r.get(name) is None else str(r.get(name)) for r in rows], dtype=object
            )
        else:
            out[name] = np.fromiter((_number(r.get(name)) for r in rows), dtype=np.float64, count=len(rows))
    return out


def collect_rows(
    records: Iterable[Mapping[str, Any]],
    in_spec: Mapping[str, Any],
    out_spec: Mapping[str, Any],
    names: Sequence[str],
    *,
    outputs: bool = True,
    max_rows: int = 20_000,
    max_images: int = MAX_IMAGES,
) -> tuple[list[Row], list[Row], int, Counter[str]]:
    """Input rows, output rows, the number of records read and what was skipped (and why)."""
    in_rows: list[Row] = []
    out_rows: list[Row] = []
    skipped: Counter[str] = Counter()
    n_records = images = 0
    for record in records:
        n_records += 1
        request, answer = payloads(record)
        if len(in_rows) < max_rows:
            if in_spec.get("type") == "image":
                data = _image_bytes(request, in_spec)
                if data is None:
                    skipped["input"] += 1
                elif images < max_images:
                    images += 1
                    try:
                        in_rows.append(image_features(data))
                    except MlgateError:
                        skipped["image"] += 1
            else:
                rows = input_rows(request, in_spec, names)
                if rows:
                    in_rows.extend(rows[: max_rows - len(in_rows)])
                else:
                    skipped["input"] += 1
        if outputs and len(out_rows) < max_rows:
            rows = output_rows(answer, out_spec)
            if rows:
                out_rows.extend(rows[: max_rows - len(out_rows)])
            else:
                skipped["output"] += 1
    return in_rows, out_rows, n_records, skipped


def extract(
    records: Iterable[Mapping[str, Any]],
    baseline: Mapping[str, Any],
    *,
    max_rows: int = 20_000,
    max_images: int = MAX_IMAGES,
) -> FeatureFrame:
    """Feature columns of captured ``records`` for ``baseline`` (its feature names and specs)."""
    names: list[str] = list(baseline.get("feature_names", []))
    outputs: list[str] = list(baseline.get("output_names", []))
    features: Mapping[str, Any] = baseline.get("features", {})
    kinds = {n: str(features.get(n, {}).get("type", "numeric")) for n in [*names, *outputs]}
    in_rows, out_rows, n_records, skipped = collect_rows(
        records,
        baseline.get("input", {}) or {},
        baseline.get("output", {}) or {},
        names,
        outputs=bool(outputs),
        max_rows=max_rows,
        max_images=max_images,
    )
    columns = _columns(in_rows, names, kinds)
    columns.update(_columns(out_rows, outputs, kinds))
    return FeatureFrame(columns, len(in_rows), len(out_rows), n_records, skipped)


def rows_to_columns(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Reference feature rows (uploaded records) → columns, input names, output names
    (``output:*`` columns). A column whose values are all numbers (or null) is numeric."""
    names: list[str] = []
    seen: set[str] = set()
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                names.append(str(key))
                if len(names) > MAX_FEATURES:  # before a column is built for each
                    raise InvalidInput(f"the reference rows have more than {MAX_FEATURES} features")
    kinds: dict[str, str] = {}
    for name in names:
        values = [r.get(name) for r in rows if r.get(name) is not None and r.get(name) != ""]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        kinds[name] = "numeric" if numeric else "categorical"
    columns = _columns([dict(r) for r in rows], names, kinds)
    inputs = [n for n in names if not n.startswith("output:")]
    outputs = [n for n in names if n.startswith("output:")]
    return columns, inputs, outputs


def infer_specs(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Guess the input and output specs from captured records (for a baseline from capture
    when the version declares none): the first record that decodes decides."""
    in_spec: dict[str, Any] = {"type": "records"}
    out_spec: dict[str, Any] = {"kind": "none"}
    for record in records[:50]:
        request, answer = payloads(record)
        if request is None:
            continue
        body = _unwrap(request)
        single = not (isinstance(body, Mapping) and len(body) > 1)
        if isinstance(request, bytes) or (single and _image_bytes(request, {"key": "image"}) is not None):
            in_spec = {"type": "image", "key": "image"}
        elif _is_numbers(body) or (isinstance(body, list) and body and _is_numbers(body[0])):
            in_spec = {"type": "vector"}
        elif isinstance(body, Mapping) and len(body) == 1 and _is_numbers(next(iter(body.values()))):
            in_spec = {"type": "window", "key": next(iter(body))}
        answer = _unwrap(answer)
        if isinstance(answer, int | float) or _is_numbers(answer):
            out_spec = {"kind": "regressor"}
        elif isinstance(answer, Mapping):
            numbers = [k for k, v in answer.items() if isinstance(v, int | float) and not isinstance(v, bool)]
            if len(numbers) == 1:
                out_spec = {"kind": "regressor", "value": numbers[0]}
        break
    return in_spec, out_spec


def window_names(spec: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Feature names for a vector/window input without declared names: ``f0`` … ``fn``."""
    for record in records[:50]:
        body = _unwrap(payloads(record)[0])
        values: Any = body.get(spec.get("key")) if isinstance(body, Mapping) else body
        if isinstance(values, list) and values and isinstance(values[0], list):
            values = values[0]
        if _is_numbers(values):
            return [f"f{i}" for i in range(len(values))]
    return []


def parse_time(value: str) -> datetime:
    """An ISO 8601 instant (``Z`` accepted)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
