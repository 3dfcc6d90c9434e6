"""Training recipe of the reference ``temperatura`` model: 60 hourly temperatures → the next hour.

Data: the measured hourly dry-bulb temperatures of the typical-meteorological-year files that
ship inside pvlib (NREL TMY3/TMY2, public data), kept in file order. Each station's last 20 %
of hours is the held-out test tail; model selection uses a validation slice carved from the end
of the training part. The winner is refitted on the whole training part, scored on the tail
against the naive last-value forecast, and saved with skops together with its metrics and the
training baseline for drift monitoring. The fitted pipeline is linear, so it is also exported as
one float64 ONNX graph (``y = x·w + b``, folded from the scaler and the ridge), which is what
the service serves: onnxruntime loads it in milliseconds, where importing scikit-learn and
SciPy to unpickle the skops file takes over a second of every cold start. The export is
checked against the pipeline's own predictions on the test tail. Same data → byte-identical
files::

    python -m mlgate_services.temperatura.recipe [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pvlib
import sklearn
import skops.io as sio
from sklearn.base import RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["ARTIFACT_DIR", "STATIONS", "WINDOW", "load_stations", "main", "train", "windows"]

ARTIFACT_DIR = Path(__file__).parent / "artifact"
WINDOW = 60
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.2
MAX_ARTIFACT_BYTES = 100_000
#: (file in pvlib/data, format). Only 723170TYA.CSV matches *TYA.CSV; 703165TY.csv is TMY3 too,
#: and 12839.tm2 (TMY2, same NREL typical-year method) adds a third, subtropical climate.
STATIONS: tuple[tuple[str, str], ...] = (
    ("723170TYA.CSV", "tmy3"),
    ("703165TY.csv", "tmy3"),
    ("12839.tm2", "tmy2"),
)

Array = np.ndarray[Any, np.dtype[np.float64]]


def load_stations() -> list[tuple[str, Array]]:
    """Return ``(label, hourly °C in file order)`` per station; TMY months come from different years."""
    data_dir = Path(pvlib.__file__).parent / "data"
    out: list[tuple[str, Array]] = []
    for filename, fmt in STATIONS:
        if fmt == "tmy3":
            frame, meta = pvlib.iotools.read_tmy3(data_dir / filename, map_variables=True)
            temps = frame["temp_air"].to_numpy(dtype=np.float64)
            label = f"{meta['USAF']} {str(meta['Name']).strip(chr(34))}, {meta['State']} (TMY3)"
        else:
            frame, meta = pvlib.iotools.read_tmy2(data_dir / filename)
            temps = frame["DryBulb"].to_numpy(dtype=np.float64) / 10.0  # TMY2 stores tenths of °C
            label = f"{meta['WBAN']} {meta['City']}, {meta['State']} (TMY2)"
        if temps.size != 8760 or not np.isfinite(temps).all():
            raise ValueError(f"{filename}: expected 8760 finite hourly temperatures")
        out.append((label, temps))
    return out


def windows(series: Array) -> tuple[Array, Array]:
    """Samples of one contiguous series: ``X[i]`` = 60 hours (oldest first), ``y[i]`` = the next hour."""
    x = np.lib.stride_tricks.sliding_window_view(series[:-1], WINDOW)
    return np.ascontiguousarray(x), series[WINDOW:].copy()


def _split_tail(series: Array, fraction: float) -> tuple[Array, Array]:
    cut = series.size - round(series.size * fraction)
    return series[:cut], series[cut:]


def _pool(parts: list[Array]) -> tuple[Array, Array]:
    # Windows are cut inside each part, so none crosses a station or split boundary.
    pairs = [windows(p) for p in parts]
    return np.vstack([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def _ridge(alpha: float, recent: int = WINDOW) -> Callable[[], Pipeline]:
    def make() -> Pipeline:
        if recent == WINDOW:
            return make_pipeline(StandardScaler(), Ridge(alpha=alpha))
        select = ColumnTransformer([("recent", "passthrough", list(range(WINDOW - recent, WINDOW)))])
        return make_pipeline(select, StandardScaler(), Ridge(alpha=alpha))

    return make


#: Candidates, in order of preference on ties: ridge on all 60 lags, or on the last 24 hours only.
CANDIDATES: dict[str, Callable[[], Pipeline]] = {
    **{f"ridge_60lags_alpha{a:g}": _ridge(a) for a in (0.1, 1.0, 10.0, 100.0)},
    **{f"ridge_24lags_alpha{a:g}": _ridge(a, recent=24) for a in (0.1, 1.0, 10.0)},
}


def _mae(pred: Array, y: Array) -> float:
    return float(np.mean(np.abs(pred - y)))


def _rmse(pred: Array, y: Array) -> float:
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def _canonical_skops(raw: bytes) -> bytes:
    """Rewrite a skops zip without run-dependent bytes: object ids → 0, 1, …; fixed timestamps."""
    src = zipfile.ZipFile(io.BytesIO(raw))
    schema = src.read("schema.json").decode()
    ids: dict[str, str] = {}

    def renumber(m: re.Match[str]) -> str:
        return ids.setdefault(m.group(0), str(len(ids)))

    schema = re.sub(r'(?<="__id__": )\d+|(?<=")\d+(?=\.npy")', renumber, schema)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for name in src.namelist():
            data = schema.encode() if name == "schema.json" else src.read(name)
            stem, dot, ext = name.partition(".")
            info = zipfile.ZipInfo(name if name == "schema.json" else ids[stem] + dot + ext)
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, data, compresslevel=9)  # ZipInfo's default date is 1980-01-01
    return buf.getvalue()


def _stats(values: Array) -> dict[str, Any]:
    return {
        "mean": round(float(values.mean()), 6),
        "std": round(float(values.std()), 6),
        "min": round(float(values.min()), 6),
        "max": round(float(values.max()), 6),
        # 11 edges at the 0, 10, …, 100 % quantiles: 10 equal-mass bins for PSI.
        "quantile_edges": [round(float(q), 6) for q in np.quantile(values, np.linspace(0, 1, 11))],
    }


def _baseline(x_train: Array, y_train: Array, fitted: Array) -> dict[str, Any]:
    """The drift baseline (``mlgate-baseline/1``): every lag of the pooled training windows, and
    the model's own predictions on them as the output distribution."""
    from mlgate.monitoring.baseline import build_baseline

    names = [f"lag_{WINDOW - i}" for i in range(WINDOW)]  # input order: oldest (lag_60) … lag_1
    columns = {name: x_train[:, i] for i, name in enumerate(names)}
    columns["output:value"] = fitted
    doc = build_baseline(
        columns,
        feature_names=names,
        output_names=["output:value"],
        input_spec={"type": "window", "key": "temperaturas"},
        output_spec={"kind": "regressor", "value": "prediccion"},
        meta={
            "source": "pooled training windows of the three pvlib TMY stations (recipe.py)",
            "unit": "Celsius",
            "pooled": _stats(x_train.ravel()),
            "target": _stats(y_train),
        },
    )
    return {**doc, "window": WINDOW, "unit": "Celsius", "n_samples": int(x_train.shape[0])}


def fold_linear(model: Pipeline) -> tuple[Array, float]:
    """The fitted pipeline as ``(w, b)`` with ``predict(x) == x @ w + b`` over all 60 lags:
    a column selection, the standard scaler and the ridge are all linear."""
    steps = [step for _, step in model.steps]
    ridge, scaler = steps[-1], steps[-2]
    if not isinstance(ridge, Ridge) or not isinstance(scaler, StandardScaler):
        raise TypeError(f"cannot fold {model!r}: expected [select,] StandardScaler, Ridge")
    columns = list(range(WINDOW))
    if len(steps) == 3:
        select = steps[0]
        assert isinstance(select, ColumnTransformer)
        ((_, how, picked),) = [t for t in select.transformers_ if t[0] != "remainder"]
        assert how == "passthrough"
        columns = list(picked)
    scale = np.asarray(scaler.scale_, dtype=np.float64)
    mean = np.asarray(scaler.mean_, dtype=np.float64)
    coef = np.asarray(ridge.coef_, dtype=np.float64) / scale
    weights = np.zeros(WINDOW, dtype=np.float64)
    weights[columns] = coef
    bias = float(ridge.intercept_) - float(coef @ mean)
    return weights, bias


def linear_onnx(weights: Array, bias: float) -> bytes:
    """``y = x·w + b`` as an ONNX graph in float64: input ``temperaturas`` [N, 60] → ``prediccion`` [N, 1]."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["temperaturas", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["prediccion"]),
        ],
        "temperatura",
        [helper.make_tensor_value_info("temperaturas", TensorProto.DOUBLE, ["N", WINDOW])],
        [helper.make_tensor_value_info("prediccion", TensorProto.DOUBLE, ["N", 1])],
        initializer=[
            numpy_helper.from_array(weights.reshape(WINDOW, 1), "w"),
            numpy_helper.from_array(np.array([bias], dtype=np.float64), "b"),
        ],
    )
    onnx_model = helper.make_model(
        graph, producer_name="mlgate_services.temperatura.recipe", opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx_model.ir_version = 8
    return bytes(onnx_model.SerializeToString(deterministic=True))


def _check_onnx(blob: bytes, x: Array, expected: Array) -> float:
    """The ONNX export's largest difference from the pipeline's predictions (raises past 1e-9)."""
    import onnxruntime as ort

    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    got = session.run(None, {"temperaturas": x.astype(np.float64)})[0][:, 0]
    worst = float(np.max(np.abs(got - expected)))
    if worst > 1e-9:
        raise RuntimeError(f"the ONNX export differs from the pipeline by {worst}")
    return worst


def train(out_dir: Path) -> dict[str, Any]:
    """Train, evaluate and write ``model.skops``, ``model.onnx``, ``metrics.json`` and
    ``baseline.json`` to ``out_dir``."""
    stations = load_stations()
    splits = [_split_tail(series, TEST_FRACTION) for _, series in stations]
    train_parts = [head for head, _ in splits]
    fit_val = [_split_tail(head, VALIDATION_FRACTION) for head in train_parts]
    x_fit, y_fit = _pool([f for f, _ in fit_val])
    x_val, y_val = _pool([v for _, v in fit_val])

    validation = {
        name: _mae(make().fit(x_fit, y_fit).predict(x_val), y_val) for name, make in CANDIDATES.items()
    }
    best = min(validation, key=lambda name: validation[name])

    x_train, y_train = _pool(train_parts)
    model: RegressorMixin = CANDIDATES[best]().fit(x_train, y_train)
    per_station: dict[str, dict[str, float]] = {}
    for (label, _), (_, tail) in zip(stations, splits, strict=True):
        x_s, y_s = windows(tail)
        per_station[label] = {"mae": _mae(model.predict(x_s), y_s), "naive_mae": _mae(x_s[:, -1], y_s)}
    x_test, y_test = _pool([tail for _, tail in splits])
    pred, naive = model.predict(x_test), x_test[:, -1]

    blob = _canonical_skops(sio.dumps(model))
    untrusted = sio.get_untrusted_types(data=blob)
    if not all(t.startswith(("sklearn.", "numpy.")) for t in untrusted):
        raise RuntimeError(f"artifact needs non-sklearn/numpy types: {untrusted}")
    if len(blob) > MAX_ARTIFACT_BYTES:
        raise RuntimeError(f"artifact is {len(blob)} bytes, limit {MAX_ARTIFACT_BYTES}")
    if not np.array_equal(sio.loads(blob, trusted=untrusted).predict(x_test), pred):
        raise RuntimeError("the saved artifact does not reproduce the trained model's predictions")
    assert isinstance(model, Pipeline)
    onnx_blob = linear_onnx(*fold_linear(model))
    onnx_error = _check_onnx(onnx_blob, x_test, pred)

    metrics: dict[str, Any] = {
        "mae": _mae(pred, y_test),
        "rmse": _rmse(pred, y_test),
        "naive_mae": _mae(naive, y_test),
        "naive_rmse": _rmse(naive, y_test),
        "n_train": int(x_train.shape[0]),
        "n_test": int(x_test.shape[0]),
        "stations": [label for label, _ in stations],
        "sklearn_version": sklearn.__version__,
        "model": best,
        "window": WINDOW,
        "test_fraction": TEST_FRACTION,
        "validation_mae": validation,
        "per_station": per_station,
        "onnx_max_abs_error": onnx_error,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.skops").write_bytes(blob)
    (out_dir / "model.onnx").write_bytes(onnx_blob)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    baseline = json.dumps(_baseline(x_train, y_train, model.predict(x_train)), separators=(",", ":"))
    (out_dir / "baseline.json").write_text(baseline + "\n", encoding="utf-8")
    return metrics


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: ``python -m mlgate_services.temperatura.recipe [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ARTIFACT_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    metrics = train(args.out)
    print(json.dumps({k: metrics[k] for k in ("model", "mae", "rmse", "naive_mae", "naive_rmse")}, indent=2))


if __name__ == "__main__":
    main()
