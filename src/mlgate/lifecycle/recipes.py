"""Recipes: what ``mlgate train RECIPE`` runs.

A recipe is a function ``(data_dir: Path | None, seed: int, params: dict) -> TrainResult``:
``data_dir`` is where its data is (None: its own default), ``seed`` makes it deterministic and
``params`` are its knobs (``--param k=v``, values parsed as JSON when they are JSON). It returns
the fitted artifact folder and the manifest to register it with, the held-out rows the
promotion gate scores both versions on, the metric and its direction, the task kind and a
``predict`` callable for the candidate, plus how one held-out row is sent to the served model
(``to_payload``) and how its answer reads back (``from_output``), so the current version is
scored through the running server on exactly the same rows.

Built-in recipes are named (``temperatura``, ``cardiaco``); a user's recipe is
``package.module:function``.
"""

from __future__ import annotations

import functools
import importlib
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mlgate.errors import InvalidInput

__all__ = [
    "BUILTIN",
    "Recipe",
    "TrainResult",
    "cardiaco",
    "parse_params",
    "resolve_recipe",
    "temperatura",
]

Task = Literal["regression", "classification"]
Direction = Literal["lower", "higher"]


@dataclass
class TrainResult:
    """What a recipe hands back (see the module docstring)."""

    #: a folder holding every file of the new version (the artifact and anything it needs)
    artifact_dir: Path
    #: the version's manifest without ``files`` (runtime, artifact, params, metrics...)
    manifest: dict[str, Any]
    #: held-out inputs (one row per sample) and targets, never seen in training
    x_test: np.ndarray
    y_test: np.ndarray
    #: the candidate's outputs for rows of ``x_test`` (numbers, or class labels)
    predict: Callable[[np.ndarray], np.ndarray]
    metric: str = "mae"
    direction: Direction = "lower"
    task: Task = "regression"
    #: one held-out row → the JSON payload the served model takes
    to_payload: Callable[[np.ndarray], Any] = lambda row: row.tolist()
    #: one served output → the number or label compared with ``y``
    from_output: Callable[[Any], Any] = lambda output: output
    #: the candidate's own figures (go to metrics.json and the manifest)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: the drift baseline document (``mlgate-baseline/1``) of the training rows, if built
    baseline: dict[str, Any] | None = None
    #: rows are serially dependent in runs of about this length (time series): the bootstrap
    #: resamples blocks of it (1: independent rows)
    block_size: int = 1
    #: what to say about the data (source, split), for the report
    data: dict[str, Any] = field(default_factory=dict)
    #: ``artifact_dir`` is the recipe's scratch folder: deleted once the run is over
    scratch: bool = False


Recipe = Callable[[Path | None, int, dict[str, Any]], TrainResult]


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["lags=24", "alpha=1.0", "name=x"]`` → ``{"lags": 24, "alpha": 1.0, "name": "x"}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"a parameter is key=value, not {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def resolve_recipe(name: str) -> Recipe:
    """A built-in recipe by name, or ``module:function``."""
    if name in BUILTIN:
        return BUILTIN[name]
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        known = ", ".join(sorted(BUILTIN))
        raise InvalidInput(f"unknown recipe {name!r}: a built-in one ({known}) or module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import recipe module {module_name!r}: {exc}") from None
    recipe = getattr(module, attr, None)
    if not callable(recipe):
        raise InvalidInput(f"{module_name!r} has no callable {attr!r}")
    return recipe  # type: ignore[no-any-return]


# -- temperatura ----------------------------------------------------------------------------------

_ALPHAS = (0.1, 1.0, 10.0, 100.0)


def _series_from(data_dir: Path) -> list[tuple[str, np.ndarray]]:
    """Hourly series from ``data_dir``: one ``.csv``/``.txt`` file per station, one number a line."""
    files = sorted(p for p in data_dir.iterdir() if p.suffix.lower() in (".csv", ".txt"))
    if not files:
        raise InvalidInput(f"{data_dir}: no .csv or .txt hourly series")
    out = []
    for path in files:
        values = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=1)
        if values.ndim != 1 or values.size < 200 or not np.isfinite(values).all():
            raise InvalidInput(f"{path.name}: expected one column of at least 200 finite numbers")
        out.append((path.stem, values))
    return out


def _fit(x: np.ndarray, y: np.ndarray, lags: int, alpha: float) -> tuple[np.ndarray, float]:
    """Standard scaler + ridge on the last ``lags`` columns, folded into ``y = x @ w + b`` over
    all columns (the recipe's ``fold_linear``, for a column slice instead of a ColumnTransformer)."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x[:, -lags:], y)
    scaler, ridge = pipeline[0], pipeline[-1]
    coef = np.asarray(ridge.coef_, dtype=np.float64) / np.asarray(scaler.scale_, dtype=np.float64)
    weights = np.zeros(x.shape[1], dtype=np.float64)
    weights[-lags:] = coef
    bias = float(ridge.intercept_) - float(coef @ np.asarray(scaler.mean_, dtype=np.float64))
    return weights, bias


def _linear(weights: np.ndarray, bias: float, x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.asarray(x, dtype=np.float64) @ weights + bias
    return out


def temperatura(data_dir: Path | None, seed: int, params: dict[str, Any]) -> TrainResult:
    """The reference temperature model (``mlgate_services.temperatura.recipe``): ridge on the
    last ``lags`` hours (default: the recipe's own candidates, 60 or 24 lags), exported to ONNX.

    Params: ``lags`` (1-60: only ridge on the last ``lags`` hours), ``alpha`` (one ridge alpha
    instead of choosing among 0.1-100 on the validation slice). Held out: each station's last
    20 % of hours. ``seed`` is unused by the fit (ridge is deterministic)."""
    try:
        from mlgate_services.temperatura import recipe as tr
    except ImportError as exc:  # the recipe needs the training libraries, not installed to serve
        raise InvalidInput(
            f"the temperatura recipe needs {exc.name or 'its training libraries'}: "
            "pip install 'mlgate[train]' (the test environment, .venv, has them: "
            ".venv/bin/mlgate train temperatura …)"
        ) from None
    from mlgate_services.temperatura import service as ts

    unknown = set(params) - {"lags", "alpha"}
    if unknown:
        raise InvalidInput(f"temperatura takes the params lags and alpha, not {', '.join(sorted(unknown))}")
    stations = _series_from(data_dir) if data_dir is not None else tr.load_stations()
    # (lags, alpha) per candidate, named and ordered as the recipe's own CANDIDATES.
    candidates: dict[str, tuple[int, float]]
    if "lags" in params or "alpha" in params:
        lags = int(params.get("lags", tr.WINDOW))
        if not 1 <= lags <= tr.WINDOW:
            raise InvalidInput(f"lags must be between 1 and {tr.WINDOW}")
        alphas = (float(params["alpha"]),) if "alpha" in params else _ALPHAS
        candidates = {f"ridge_{lags}lags_alpha{a:g}": (lags, a) for a in alphas}
    else:
        candidates = {
            **{f"ridge_{tr.WINDOW}lags_alpha{a:g}": (tr.WINDOW, a) for a in _ALPHAS},
            **{f"ridge_24lags_alpha{a:g}": (24, a) for a in _ALPHAS[:3]},
        }

    splits = [tr._split_tail(series, tr.TEST_FRACTION) for _, series in stations]
    train_parts = [head for head, _ in splits]
    fit_val = [tr._split_tail(head, tr.VALIDATION_FRACTION) for head in train_parts]
    x_fit, y_fit = tr._pool([f for f, _ in fit_val])
    x_val, y_val = tr._pool([v for _, v in fit_val])
    validation = {
        name: tr._mae(_linear(*_fit(x_fit, y_fit, *spec), x_val), y_val) for name, spec in candidates.items()
    }
    best = min(validation, key=lambda name: validation[name])
    x_train, y_train = tr._pool(train_parts)
    weights, bias = _fit(x_train, y_train, *candidates[best])
    x_test, y_test = tr._pool([tail for _, tail in splits])
    onnx_blob = tr.linear_onnx(weights, bias)
    fitted = _linear(weights, bias, x_test)
    onnx_error = tr._check_onnx(onnx_blob, x_test, fitted)

    def predict(rows: np.ndarray) -> np.ndarray:
        # What the served model answers: the folded linear graph, rounded to 0.01 °C as the
        # service's processor renders "prediccion" (the current version is read back rounded too).
        return np.round(_linear(weights, bias, rows), 2)

    pred = predict(x_test)
    metrics: dict[str, Any] = {
        "mae": tr._mae(pred, y_test),
        "rmse": tr._rmse(pred, y_test),
        "naive_mae": tr._mae(x_test[:, -1], y_test),
        "naive_rmse": tr._rmse(x_test[:, -1], y_test),
        "n_train": int(x_train.shape[0]),
        "n_test": int(x_test.shape[0]),
        "model": best,
        "validation_mae": validation,
        "onnx_max_abs_error": onnx_error,
    }
    folder = Path(tempfile.mkdtemp(prefix="mlgate-train-temperatura-"))
    (folder / "model.onnx").write_bytes(onnx_blob)
    baseline = tr._baseline(x_train, y_train, _linear(weights, bias, x_train))
    manifest = ts._manifest().model_dump(mode="json", exclude={"files"})
    manifest.update(
        description=f"Next-hour temperature from the last 60 hourly readings ({best}; mlgate train).",
        metrics={k: float(metrics[k]) for k in ("mae", "rmse", "naive_mae", "naive_rmse")},
        params={"recipe": "temperatura", "recipe_params": dict(params), "seed": seed, "model": best},
    )
    source = "pvlib TMY stations" if data_dir is None else str(data_dir)
    return TrainResult(
        artifact_dir=folder,
        manifest=manifest,
        x_test=x_test,
        y_test=y_test,
        predict=predict,
        metric="mae",
        direction="lower",
        task="regression",
        to_payload=lambda row: {"temperaturas": [float(v) for v in row]},
        from_output=lambda output: float(output["prediccion"] if isinstance(output, Mapping) else output),
        metrics=metrics,
        baseline=baseline,
        block_size=24,
        data={
            "source": source,
            "stations": [label for label, _ in stations],
            "held_out": f"each station's last {tr.TEST_FRACTION:.0%} of hours",
        },
        scratch=True,
    )


# -- cardiaco -------------------------------------------------------------------------------------

#: cardiaco's knobs and their defaults (the reference recipe's own: ``mlgate_services.cardiaco.recipe``)
CARDIACO_PARAMS: dict[str, tuple[type, int | float, int | float]] = {
    # name: (type, minimum, maximum)
    "epochs": (int, 1, 100),
    "hidden": (int, 2, 128),
    "n_train": (int, 40, 8000),
    "n_test": (int, 40, 2000),
    "lr": (float, 1e-5, 1.0),
}


def _cardiaco_params(params: dict[str, Any]) -> dict[str, Any]:
    unknown = set(params) - set(CARDIACO_PARAMS)
    if unknown:
        known = ", ".join(CARDIACO_PARAMS)
        raise InvalidInput(f"cardiaco takes the params {known}, not {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, (kind, lo, hi) in CARDIACO_PARAMS.items():
        if name not in params:
            continue
        value = params[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (kind is int and value != int(value))
        ):
            raise InvalidInput(f"cardiaco param {name} must be a{'n integer' if kind is int else ' number'}")
        if not lo <= value <= hi:
            raise InvalidInput(f"cardiaco param {name} must be between {lo:g} and {hi:g}")
        out[name] = kind(value)
    return out


@functools.lru_cache(maxsize=1)
def _cardiaco_test_set(seed: int) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """The reference held-out set (2,000 patients; ~1.5 s to generate and pre-process), kept for
    the next run in this process. A run's rows are a prefix of it: the generator balances the
    states over the whole set, so asking it for fewer patients would give other patients."""
    from mlgate_services.cardiaco import recipe as cr

    return cr.dataset(cr.SIZES["test"], seed=seed, first_id=cr.FIRST_IDS["test"])


def cardiaco(data_dir: Path | None, seed: int, params: dict[str, Any]) -> TrainResult:
    """The reference cardiac-state classifier (``mlgate_services.cardiaco.recipe``): the same LSTM,
    data path (the synthetic generator through the *serving* pre-processing), epoch selection on a
    validation set, ONNX export and check, so the candidate is served by the cardiaco service
    exactly as the bundled version is (``POST /predict`` and ``/v1/models/cardiaco/predict``).

    ``seed`` picks the training and validation patients and torch's seed (seed 0 = the reference
    recipe's own seeds); the held-out patients are always the reference's test set (generator seed
    33, ids from 3,000,000), which no version trained by either recipe has seen, so runs with any
    seed are gated on the same rows. Params: ``epochs`` (default 30), ``hidden`` (32), ``n_train``
    (4,000 patients), ``n_test`` (the first n of the 2,000 held-out patients), ``lr`` (3e-3).
    Synthetic data, not clinical: the generator needs no ``data_dir``."""
    if data_dir is not None:
        raise InvalidInput("the cardiaco recipe trains on its synthetic generator: it takes no --data-dir")
    knobs = _cardiaco_params(params)
    try:
        import torch
    except ImportError:
        raise InvalidInput(
            "the cardiaco recipe needs torch: pip install 'mlgate[train-torch,train]' (the test "
            "environment, .venv, has it: .venv/bin/mlgate train cardiaco …)"
        ) from None
    from mlgate_services.cardiaco import recipe as cr
    from mlgate_services.cardiaco import service as cs
    from mlgate_services.cardiaco.processing import STATES

    if seed < 0:
        raise InvalidInput("the seed must be ≥ 0")
    seeds = {k: v + 1000 * seed for k, v in cr.SEEDS.items() if k != "test"} | {"test": cr.SEEDS["test"]}
    epochs = int(knobs.get("epochs", cr.EPOCHS))
    hidden = int(knobs.get("hidden", cr.HIDDEN))
    n_train = int(knobs.get("n_train", cr.SIZES["train"]))
    n_val = max(40, min(cr.SIZES["validation"], n_train // 5))
    n_test = int(knobs.get("n_test", cr.SIZES["test"]))
    lr = float(knobs.get("lr", cr.LEARNING_RATE))

    x_train, y_train, train_patients = cr.dataset(
        n_train, seed=seeds["train"], first_id=cr.FIRST_IDS["train"]
    )
    x_val, y_val, _ = cr.dataset(n_val, seed=seeds["validation"], first_id=cr.FIRST_IDS["validation"])
    x_all, y_all, test_patients = _cardiaco_test_set(seeds["test"])
    x_test, y_idx, test_patients = x_all[:n_test], y_all[:n_test], test_patients[:n_test]

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seeds["torch"])
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # float reductions independent of the core count: same seed, same model
    try:
        model = cr.build_model(hidden)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        xt, yt, xv = torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(x_val)
        shuffle = torch.Generator().manual_seed(seeds["torch"])
        best_acc, best_epoch, history = cr.fit_best_epoch(
            model, optimiser, xt, yt, xv, y_val, epochs=epochs, shuffle=shuffle
        )
        model.eval()
        with torch.no_grad():
            torch_test = model(torch.from_numpy(x_test)[None]).numpy()[0]
        blob = cr.export_onnx(model)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)

    test_probabilities = cr._onnx_probabilities(blob, x_test)
    max_diff = float(np.abs(test_probabilities - torch_test).max())
    if max_diff > cr.ONNX_TOLERANCE:
        raise InvalidInput(
            f"cardiaco: onnxruntime differs from torch by {max_diff:g} (> {cr.ONNX_TOLERANCE:g})"
        )
    labels = np.asarray(STATES)

    def predict(rows: np.ndarray) -> np.ndarray:
        # What the served model answers: the ONNX graph on the served input, State = argmax.
        out: np.ndarray = labels[
            cr._onnx_probabilities(blob, np.asarray(rows, dtype=np.float32)).argmax(axis=1)
        ]
        return out

    # A held-out row is a patient's model input (what the data hash covers); the server is sent
    # that patient's long-format readings. Two patients with byte-identical inputs would get the
    # same answer from any version, so looking the payload up by the row's bytes is exact.
    by_row = {row.tobytes(): p for row, p in zip(x_test, test_patients, strict=True)}

    def to_payload(row: np.ndarray) -> Any:
        from mlgate_services.cardiaco import generator

        return generator.to_columns([by_row[np.asarray(row, dtype=np.float32).tobytes()]])

    def from_output(output: Any) -> Any:
        if isinstance(output, list):  # one patient per request: one object (a list only for several)
            output = output[0]
        return str(output["State"]) if isinstance(output, Mapping) else str(output)

    evaluation = cr.evaluate(test_probabilities, y_idx)
    metrics: dict[str, Any] = {
        **evaluation,
        "n_train": len(y_train),
        "n_validation": len(y_val),
        "n_test": len(y_idx),
        "validation_accuracy": round(best_acc, 4),
        "best_epoch": best_epoch + 1,
        "epochs": epochs,
        "hidden": hidden,
        "validation_accuracy_by_epoch": history,
        "seeds": seeds,
        "artifact_bytes": len(blob),
        "onnx_max_abs_diff_vs_torch": float(f"{max_diff:.3g}"),
        "torch_version": torch.__version__,
        "data": "synthetic (mlgate_services.cardiaco.generator); not clinical data",
    }
    folder = Path(tempfile.mkdtemp(prefix="mlgate-train-cardiaco-"))
    (folder / "model.onnx").write_bytes(blob)
    baseline = cr._baseline(
        train_patients, y_train, cr._onnx_probabilities(blob, x_train), test_probabilities
    )
    manifest = cs._manifest().model_dump(mode="json", exclude={"files"})
    manifest.update(
        description=(
            f"Cardiac state from the last 20 five-minute readings of nine ICU vital signs (LSTM {hidden} "
            f"hidden, {epochs} epochs, seed {seed}; mlgate train) — SYNTHETIC data, not for clinical use."
        ),
        metrics={
            "accuracy": float(evaluation["accuracy"]),
            "macro_f1": float(evaluation["macro_f1"]),
            "n_test": float(len(y_idx)),
            **{f"recall_{s}": float(evaluation["per_class"][s]["recall"]) for s in STATES},
        },
        params={
            **(manifest.get("params") or {}),
            "recipe": "cardiaco",
            "recipe_params": dict(params),
            "seed": seed,
        },
    )
    return TrainResult(
        artifact_dir=folder,
        manifest=manifest,
        x_test=x_test,
        y_test=labels[y_idx],
        predict=predict,
        metric="accuracy",
        direction="higher",
        task="classification",
        to_payload=to_payload,
        from_output=from_output,
        metrics=metrics,
        baseline=baseline,
        block_size=1,
        data={
            "source": "synthetic generator (mlgate_services.cardiaco.generator), not clinical data",
            "train": f"{len(y_train)} patients, generator seed {seeds['train']}",
            "held_out": f"the first {len(y_idx)} of the reference test set (generator seed {seeds['test']})",
        },
        scratch=True,
    )


BUILTIN: dict[str, Recipe] = {"temperatura": temperatura, "cardiaco": cardiaco}
