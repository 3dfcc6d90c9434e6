"""scikit-learn estimators saved with skops (safe) or pickle/joblib (trusted versions only).

A ``.skops`` artifact is loaded only when every type it would instantiate belongs to
scikit-learn, NumPy or SciPy (or the version is trusted). Pickle-based formats execute
code on load, so they need trust::

    runtime = SklearnRuntime()
    runtime.load(LoadContext(path, Manifest(runtime="sklearn", artifact="model.skops")))
    runtime.predict([runtime.decode([5.1, 3.5, 1.4, 0.2])])     # -> [0]

Params: ``output`` = ``"predict"`` (default) or ``"proba"`` (``predict_proba``); ``max_rows``
(default 1024): the most rows one request of a tabular model may carry.

**Tabular models** (fitted on a pandas DataFrame: the estimator has ``feature_names_in_``)
take named columns as one record, a list of records or columns (see
:mod:`mlgate.runtimes.tabular`) and predict on a DataFrame; pandas is imported only for them
(``pip install 'mlgate[tabular]'``, part of ``mlgate[serve]``). Each column's kind comes from,
in increasing precedence:

1. the pipeline: numeric by default; a column a ``ColumnTransformer`` hands to an encoder
   with string ``categories_`` (``OneHotEncoder``, ``OrdinalEncoder``, possibly behind an
   imputer) takes strings, restricted to those categories when the encoder's
   ``handle_unknown`` is ``"error"``;
2. the param ``example``, a sample record stored in the manifest at push time (a string
   value makes a string column; ``null`` says nothing);
3. the param ``columns``: ``{name: dtype}`` with numpy/pandas dtype names (``"float64"``,
   ``"int64"``, ``"bool"``, ``"str"``/``"object"``, ``"datetime64[ns]"``) or
   ``{"dtype": "category", "categories": [...]}``. It must name exactly the pipeline's columns.

Both live in the manifest's ``params`` (its ``input_schema`` stays the JSON Schema of the
request body, which ``/openapi.json`` shows); :mod:`mlgate.runtimes.tabular` builds them all
from the training DataFrame::

    params = table_params(x_train)
    Manifest(runtime="sklearn", artifact="model.skops", params=params,
             input_schema=table_input_schema(params))

The warm-up predicts the example record (else one built from the kinds: a known category,
``0``, ``""``). A single record answers one output; records and columns answer a list. OIP
metadata lists one input per column. A ``ValueError`` the pipeline raises on a request's
values (NaN without an imputer) is that request's 400.

A fitted scikit-learn pipeline keeps only NumPy/SciPy data, so DataFrame pipelines pass the
skops allowlist as any other; pandas objects inside an artifact are never trusted implicitly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlgate.errors import ConfigurationError, InvalidInput, UnsafeArtifact, exception_summary
from mlgate.runtimes.base import (
    LoadContext,
    ModelRuntime,
    import_optional,
    load_failed,
    numeric_array,
    oip_datatype,
)
from mlgate.runtimes.tabular import Column, Rows, Table, column_from_schema

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
    "pickle executes code on load; mark the version trusted (models push --trusted) "
    "or pin its sha256 in MLGATE_TRUSTED_SHA256"
)


def skops_refused_types(untrusted: Sequence[str]) -> list[str]:
    """The untrusted skops types outside the allowlist (empty: safe to load)."""
    return sorted(
        t for t in untrusted if not t.startswith(SKOPS_TRUSTED_PREFIXES) or t.startswith(_DENIED_PREFIXES)
    )


class SklearnRuntime(ModelRuntime):
    """One scikit-learn estimator; each item is one row of features (or, for a tabular model,
    one request's :class:`~mlgate.runtimes.tabular.Rows`)."""

    name = "sklearn"

    def __init__(self) -> None:
        self._estimator: Any = None
        self._method = "predict"
        self._n_features: int | None = None
        self._feature_names: list[str] | None = None
        self._pandas: Any = None
        self._table: Table | None = None

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
        if names is not None:  # fitted on a DataFrame: it wants a DataFrame back
            self._feature_names = [str(n) for n in names]
            self._pandas = import_optional("pandas", extra="tabular")
            self._table = _table(estimator, self._feature_names, ctx.params)

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

    def units(self, payload: Any) -> int:
        return self._table.units(payload) if self._table is not None else 1

    def decode(self, payload: Any) -> Any:
        if self._table is not None:
            return self._table.decode(payload)
        if isinstance(payload, Mapping):
            if set(payload) != {"inputs"}:
                raise InvalidInput('expected a list of numbers or {"inputs": [...]}')
            payload = payload["inputs"]
            if isinstance(payload, Mapping):
                raise InvalidInput("this model was not fitted on named columns: send a list of numbers")
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

    def predict(self, batch: list[Any]) -> list[Any]:
        if not batch:
            return []
        if self._table is not None:
            return self._predict_table(batch)
        return self._split(getattr(self._estimator, self._method)(np.vstack(batch)), len(batch))

    def _predict_table(self, batch: list[Rows]) -> list[Any]:
        assert self._table is not None
        frame = self._table.frame(self._pandas, batch)
        try:
            result = getattr(self._estimator, self._method)(frame)
        except ValueError as exc:  # the values checked out, the model refused them (NaN, no imputer)
            raise InvalidInput(f"the model cannot take this input: {exception_summary(exc)}") from exc
        outputs = self._split(result, frame.shape[0])
        answers: list[Any] = []
        start = 0
        for rows in batch:
            answers.append(outputs[start] if rows.single else outputs[start : start + rows.n])
            start += rows.n
        return answers

    @staticmethod
    def _split(result: Any, n: int) -> list[Any]:
        """One output per row of a prediction."""
        if isinstance(result, list):  # multi-output predict_proba: one array per output
            return [[r[i].tolist() for r in result] for i in range(n)]
        result = np.asarray(result)
        if result.ndim == 1:
            return [v.item() if isinstance(v, np.generic) else v for v in result]
        return [row.tolist() for row in result]

    def warmup_input(self) -> Any:
        if self._table is not None:
            return self._table.sample or self._table.decode(self._table.example())
        return None if self._n_features is None else np.zeros(self._n_features, dtype=np.float64)

    def decode_tensors(self, tensors: dict[str, np.ndarray]) -> list[Any]:
        if self._table is None:
            return super().decode_tensors(tensors)
        columns: dict[str, list[Any]] = {}
        for name, array in tensors.items():
            if array.ndim == 2 and array.shape[1] == 1:
                array = array[:, 0]
            if array.ndim != 1:
                raise InvalidInput(f"input '{name}': one column is a tensor of shape [rows] or [rows, 1]")
            columns[name] = array.tolist()
        rows = self._table.decode(columns)
        return [self._table.decode({k: v[i] for k, v in columns.items()}) for i in range(rows.n)]

    def metadata(self) -> dict[str, Any]:
        width = -1 if self._n_features is None else self._n_features
        inputs: list[dict[str, Any]] = [{"name": "input-0", "datatype": "FP64", "shape": [-1, width]}]
        if self._table is not None:
            inputs = self._table.metadata()
        classes = getattr(self._estimator, "classes_", None)
        if self._method == "predict_proba":
            n = len(classes) if isinstance(classes, np.ndarray) and classes.ndim == 1 else -1
            output = {"name": "output_0", "datatype": "FP64", "shape": [-1, n]}
        elif isinstance(classes, np.ndarray):
            output = {"name": "output_0", "datatype": oip_datatype(classes.dtype), "shape": [-1]}
        else:
            output = {"name": "output_0", "datatype": "FP64", "shape": [-1]}
        return {"inputs": inputs, "outputs": [output]}


def _table(estimator: Any, names: list[str], params: Mapping[str, Any]) -> Table:
    """The columns of a DataFrame-fitted estimator (precedence in the module docstring)."""
    columns = {n: Column(n) for n in names}
    columns.update(_pipeline_columns(estimator, names))
    example = params.get("example")
    if example is not None:
        if not isinstance(example, Mapping):
            raise ConfigurationError("sklearn param 'example' must be one record {column: value}")
        for name, value in example.items():
            if name in columns and isinstance(value, str) and columns[name].kind in ("float", "int", "bool"):
                columns[name] = Column(name, "str")
    declared = params.get("columns")
    if declared is not None:
        if not isinstance(declared, Mapping):
            raise ConfigurationError("sklearn param 'columns' must map each column to its dtype")
        missing = [n for n in names if n not in declared]
        unknown = sorted(str(n) for n in declared if n not in columns)
        if missing or unknown:
            raise ConfigurationError(
                "sklearn param 'columns' does not match the model's columns: "
                f"missing {missing}, unknown {unknown}"
            )
        columns.update({n: column_from_schema(n, declared[n]) for n in names})
    max_rows = params.get("max_rows", 1024)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ConfigurationError(f"sklearn param 'max_rows' must be a positive integer, not {max_rows!r}")
    table = Table([columns[n] for n in names], max_rows=max_rows)
    if isinstance(example, Mapping):
        try:  # a sample that does not fit its own model is refused at load, not at its first request
            table.sample = table.decode(dict(example))
        except InvalidInput as exc:
            raise ConfigurationError(
                f"sklearn param 'example' does not fit the model: {exc.message}"
            ) from exc
    return table


def _pipeline_columns(estimator: Any, names: list[str]) -> dict[str, Column]:
    """String columns of the ColumnTransformers inside ``estimator`` (the rest stays numeric)."""
    found: dict[str, Column] = {}
    for ct in _column_transformers(estimator):
        ct_names = [str(n) for n in getattr(ct, "feature_names_in_", names)]
        indices = getattr(ct, "_transformer_to_input_indices", None) or {}
        for name, transformer, selection in getattr(ct, "transformers_", []):
            if name in indices:
                cols = [ct_names[i] for i in indices[name]]
            elif isinstance(selection, str):
                cols = [selection]
            elif isinstance(selection, list) and all(isinstance(c, str) for c in selection):
                cols = list(selection)
            else:
                continue
            encoder = _encoder(transformer)
            categories = getattr(encoder, "categories_", None)
            if categories is None or len(categories) != len(cols):
                continue
            strict = getattr(encoder, "handle_unknown", "error") == "error"
            for col, cats in zip(cols, categories, strict=True):
                if np.asarray(cats).dtype.kind not in "OUS":
                    continue
                known = [c for c in cats.tolist() if isinstance(c, str)]
                allowed = frozenset(known) if strict and known else None
                found[col] = Column(col, "str", allowed=allowed, known=tuple(known))
    return found


def _column_transformers(estimator: Any) -> list[Any]:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, ColumnTransformer):
        return [estimator]
    if isinstance(estimator, Pipeline):
        return [ct for _, step in estimator.steps for ct in _column_transformers(step)]
    return []


def _encoder(transformer: Any) -> Any:
    """The first step of ``transformer`` (itself or a Pipeline) that learnt categories."""
    from sklearn.pipeline import Pipeline

    steps = [s for _, s in transformer.steps] if isinstance(transformer, Pipeline) else [transformer]
    for step in steps:
        if getattr(step, "categories_", None) is not None:
            return step
    return None
