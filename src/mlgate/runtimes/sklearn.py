"""scikit-learn estimators saved with skops (safe) or pickle/joblib (trusted versions only).

A ``.skops`` artifact is loaded only when every type it would instantiate belongs to
scikit-learn, NumPy or SciPy (or the version is trusted). Pickle-based formats execute
code on load, so they need trust::

    runtime = SklearnRuntime()
    runtime.load(LoadContext(path, Manifest(runtime="sklearn", artifact="model.skops")))
    runtime.predict([runtime.decode([5.1, 3.5, 1.4, 0.2])])     # -> [0]

Params: ``output`` = ``"predict"`` (default) or ``"proba"`` (``predict_proba``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlgate.errors import ConfigurationError, InvalidInput, UnsafeArtifact
from mlgate.runtimes.base import (
    LoadContext,
    ModelRuntime,
    import_optional,
    load_failed,
    numeric_array,
    oip_datatype,
)

__all__ = ["SKOPS_TRUSTED_PREFIXES", "SklearnRuntime", "skops_refused_types"]

#: Module prefixes whose types a ``.skops`` file may instantiate without trust.
SKOPS_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
# Within those, modules that read/write files or run code are never implicitly trusted.
_DENIED_PREFIXES = (
    "numpy.testing",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.ctypeslib",
    "numpy.lib.npyio",
    "numpy.load",
    "numpy.save",
    "numpy.fromfile",
    "numpy.memmap",
    "scipy.io",
    "scipy._lib",
)
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
_PICKLE_REFUSAL = (
    "pickle executes code on load; mark the version trusted or pin its sha256 in MLGATE_TRUSTED_SHA256"
)


def skops_refused_types(untrusted: Sequence[str]) -> list[str]:
    """The untrusted skops types outside the allowlist (empty: safe to load)."""
    return sorted(
        t for t in untrusted if not t.startswith(SKOPS_TRUSTED_PREFIXES) or t.startswith(_DENIED_PREFIXES)
    )


class SklearnRuntime(ModelRuntime):
    """One scikit-learn estimator; each item is one row of features."""

    name = "sklearn"

    def __init__(self) -> None:
        self._estimator: Any = None
        self._method = "predict"
        self._n_features: int | None = None
        self._feature_names: list[str] | None = None
        self._pandas: Any = None

    def load(self, ctx: LoadContext) -> None:
        output = ctx.params.get("output", "predict")
        if output not in ("predict", "proba"):
            raise ConfigurationError(f"sklearn param 'output' must be 'predict' or 'proba', not {output!r}")
        path = ctx.artifact_path
        suffix = path.suffix.lower()
        if suffix == ".skops":
            estimator = self._load_skops(ctx)
        elif suffix in _PICKLE_SUFFIXES:
            if not ctx.trusted:
                raise UnsafeArtifact(_PICKLE_REFUSAL)
            import joblib  # a scikit-learn dependency

            try:
                estimator = joblib.load(path)
            except Exception as exc:
                raise load_failed(self.name, exc) from exc
        else:
            raise ConfigurationError(
                f"sklearn artifacts must be .skops, .pkl, .pickle or .joblib, not {path.name}"
            )
        if not callable(getattr(estimator, "predict", None)):
            raise load_failed(self.name, TypeError(f"{type(estimator).__name__} has no predict()"))
        self._method = "predict_proba" if output == "proba" else "predict"
        if not callable(getattr(estimator, self._method, None)):
            raise ConfigurationError(f"{type(estimator).__name__} has no {self._method}()")
        self._estimator = estimator
        n_features = getattr(estimator, "n_features_in_", None)
        self._n_features = int(n_features) if n_features is not None else None
        names = getattr(estimator, "feature_names_in_", None)
        if names is not None:
            self._feature_names = [str(n) for n in names]
            try:  # estimators fitted on DataFrames want DataFrames back (else a warning per call)
                self._pandas = import_optional("pandas", extra="train")
            except ConfigurationError:
                self._pandas = None

    def _load_skops(self, ctx: LoadContext) -> Any:
        import skops.io as sio  # a core dependency, imported lazily to keep startup light

        try:
            untrusted = list(sio.get_untrusted_types(file=ctx.artifact_path))
        except Exception as exc:
            raise load_failed(self.name, exc) from exc
        refused = skops_refused_types(untrusted)
        if refused and not ctx.trusted:
            raise UnsafeArtifact(
                f"skops artifact uses types outside sklearn/numpy/scipy: {', '.join(refused)}; "
                "mark the version trusted to load it",
                details={"types": refused},
            )
        try:
            return sio.load(ctx.artifact_path, trusted=untrusted)
        except Exception as exc:
            raise load_failed(self.name, exc) from exc

    def decode(self, payload: Any) -> np.ndarray:
        if isinstance(payload, Mapping):
            if set(payload) != {"inputs"}:
                raise InvalidInput('expected a list of numbers or {"inputs": [...]}')
            payload = payload["inputs"]
            if isinstance(payload, Mapping):
                payload = self._by_name(payload)
        if not isinstance(payload, list | tuple | np.ndarray):
            raise InvalidInput(f"expected a list of numbers, not {type(payload).__name__}")
        row = numeric_array(payload, dtype=np.float64, what="features")
        if row.ndim != 1:
            raise InvalidInput("expected a flat list of numbers (one row of features)")
        if row.size == 0:
            raise InvalidInput("expected at least one feature")
        if self._n_features is not None and row.size != self._n_features:
            raise InvalidInput(f"expected {self._n_features} features, got {row.size}")
        return row

    def _by_name(self, values: Mapping[str, Any]) -> list[Any]:
        if self._feature_names is None:
            raise InvalidInput("this model has no feature names: send a list of numbers")
        missing = [n for n in self._feature_names if n not in values]
        extra = sorted(set(values) - set(self._feature_names))
        if missing or extra:
            raise InvalidInput(f"features do not match: missing {missing}, unexpected {extra}")
        return [values[n] for n in self._feature_names]

    def predict(self, batch: list[Any]) -> list[Any]:
        if not batch:
            return []
        x: Any = np.vstack(batch)
        if self._pandas is not None and self._feature_names is not None:
            x = self._pandas.DataFrame(x, columns=self._feature_names)
        result = getattr(self._estimator, self._method)(x)
        if isinstance(result, list):  # multi-output predict_proba: one array per output
            return [[r[i].tolist() for r in result] for i in range(len(batch))]
        result = np.asarray(result)
        if result.ndim == 1:
            return [v.item() if isinstance(v, np.generic) else v for v in result]
        return [row.tolist() for row in result]

    def warmup_input(self) -> np.ndarray | None:
        return None if self._n_features is None else np.zeros(self._n_features, dtype=np.float64)

    def metadata(self) -> dict[str, Any]:
        width = -1 if self._n_features is None else self._n_features
        inputs: list[dict[str, Any]] = [{"name": "input-0", "datatype": "FP64", "shape": [-1, width]}]
        classes = getattr(self._estimator, "classes_", None)
        if self._method == "predict_proba":
            n = len(classes) if isinstance(classes, np.ndarray) and classes.ndim == 1 else -1
            output = {"name": "output-0", "datatype": "FP64", "shape": [-1, n]}
        elif isinstance(classes, np.ndarray):
            output = {"name": "output-0", "datatype": oip_datatype(classes.dtype), "shape": [-1]}
        else:
            output = {"name": "output-0", "datatype": "FP64", "shape": [-1]}
        if self._feature_names is not None:
            inputs[0]["parameters"] = {"feature_names": self._feature_names}
        return {"inputs": inputs, "outputs": [output]}
