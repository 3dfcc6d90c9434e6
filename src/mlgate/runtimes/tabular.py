"""Tables from JSON: named, typed columns decoded from records or columns into DataFrame rows.

A model fitted on a DataFrame (a scikit-learn pipeline with ``feature_names_in_``) takes one
request as any of::

    {"inputs": {"Origin": "USA", "Horsepower": 130}}                  # one record -> one output
    {"inputs": [{"Origin": "USA", ...}, {"Origin": "Japan", ...}]}    # records -> a list of outputs
    {"inputs": {"Origin": ["USA", "Japan"], "Horsepower": [130, null]}}  # columns -> a list
    {"Origin": "USA", "Horsepower": 130}                              # a bare record (batch items)

Every column the model was fitted on must be present (a missing or unknown column is an
:class:`InvalidInput` naming it); ``null`` is a missing value (NaN), for the pipeline's
imputer. Each column has a :class:`Column` kind (``float``, ``int``, ``bool``, ``str``,
``category``, ``datetime``) and its values are checked against it, so a string never reaches
a numeric column and a number never reaches a string one.

At push time, from the training DataFrame: :func:`table_params` gives the manifest's
``params`` entries ``columns`` (each column's dtype) and ``example`` (a sample record), and
:func:`table_input_schema` the manifest's ``input_schema`` (the JSON Schema documenting the
request body in ``/openapi.json``; it constrains nothing the runtime checks with clearer errors).

Decoding needs no pandas; :meth:`Table.frame` builds the DataFrame for a batch (pandas is
imported by the runtime only for the models that need it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlgate.errors import ConfigurationError, InvalidInput

__all__ = ["KINDS", "Column", "Rows", "Table", "column_from_schema", "table_input_schema", "table_params"]

#: Column kinds and the dtype names (numpy, pandas) that mean them in the ``columns`` param.
KINDS: dict[str, str] = {
    "float": "float",
    "float16": "float",
    "float32": "float",
    "float64": "float",
    "Float32": "float",
    "Float64": "float",
    "number": "float",
    "int": "int",
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "int",
    "uint8": "int",
    "uint16": "int",
    "uint32": "int",
    "uint64": "int",
    "Int8": "int",
    "Int16": "int",
    "Int32": "int",
    "Int64": "int",
    "integer": "int",
    "bool": "bool",
    "boolean": "bool",
    "str": "str",
    "string": "str",
    "object": "str",
    "category": "category",
    "datetime": "datetime",
    "datetime64[ns]": "datetime",
    "datetime64[us]": "datetime",
    "datetime64[ms]": "datetime",
    "datetime64[s]": "datetime",
}
_OIP = {
    "float": "FP64",
    "int": "INT64",
    "bool": "BOOL",
    "str": "BYTES",
    "category": "BYTES",
    "datetime": "BYTES",
}
_SHOWN = 20  # known values listed in an error


@dataclass(frozen=True, slots=True)
class Column:
    """One input column: its name, kind and (for strings and categories) its known values.

    ``allowed`` values are enforced (the model would fail on others: an encoder with
    ``handle_unknown="error"``, a declared category); ``categories`` of a ``category`` column
    become its pandas ``CategoricalDtype``.
    """

    name: str
    kind: str = "float"
    categories: tuple[Any, ...] | None = None
    allowed: frozenset[Any] | None = None
    #: values the model was fitted on (an encoder's categories): the warm-up takes the first
    known: tuple[Any, ...] = ()

    @property
    def datatype(self) -> str:
        return _OIP[self.kind]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        return out

    def values(self, raw: Sequence[Any], *, rows: Sequence[int] | None = None) -> np.ndarray:
        """Check and convert one column's JSON values (``None`` = missing) to a 1-D array."""
        kind = self.kind
        out: list[Any] = []
        has_missing = False
        for i, v in enumerate(raw):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                has_missing = True
                out.append(None)
                continue
            if kind in ("float", "int"):
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise self._wrong(v, "a number", i, rows)
                if not math.isfinite(v):
                    raise self._wrong(v, "a finite number", i, rows)
            elif kind == "bool":
                if not isinstance(v, bool):
                    raise self._wrong(v, "true or false", i, rows)
            elif kind == "str":
                if not isinstance(v, str):
                    raise self._wrong(v, "a string", i, rows)
            elif kind == "category":
                if isinstance(v, bool) or not isinstance(v, str | int | float):
                    raise self._wrong(v, "a category (a string or a number)", i, rows)
            elif kind == "datetime":
                if not isinstance(v, str):
                    raise self._wrong(v, "an ISO 8601 date-time string", i, rows)
                try:
                    v = np.datetime64(v.removesuffix("Z"), "ns")
                except ValueError:
                    raise self._wrong(v, "an ISO 8601 date-time string", i, rows) from None
            if self.allowed is not None and v not in self.allowed:
                known = sorted(map(str, self.allowed))
                shown = ", ".join(known[:_SHOWN]) + (", ..." if len(known) > _SHOWN else "")
                raise InvalidInput(
                    f"column '{self.name}'{_row(i, rows)}: {v!r} is not one of the known values ({shown})"
                )
            out.append(v)
        if kind == "float" or (kind == "int" and (has_missing or any(isinstance(v, float) for v in out))):
            return np.array([np.nan if v is None else v for v in out], dtype=np.float64)
        if kind == "int":
            try:
                return np.array(out, dtype=np.int64)
            except OverflowError:
                raise InvalidInput(f"column '{self.name}': a value does not fit a 64-bit integer") from None
        if kind == "bool" and not has_missing:
            return np.array(out, dtype=np.bool_)
        if kind == "datetime":
            return np.array([np.datetime64("NaT") if v is None else v for v in out], dtype="datetime64[ns]")
        array = np.empty(len(out), dtype=object)  # strings and categories keep NaN as missing
        array[:] = [np.nan if v is None else v for v in out]
        return array

    def _wrong(self, value: Any, expected: str, i: int, rows: Sequence[int] | None) -> InvalidInput:
        got = "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else repr(value)
        return InvalidInput(f"column '{self.name}'{_row(i, rows)} takes {expected}, not {got}")


def _row(i: int, rows: Sequence[int] | None) -> str:
    return "" if rows is None else f" (row {rows[i]})"


@dataclass(frozen=True, slots=True)
class Rows:
    """One request's rows: one array per column, ``n`` rows; ``single`` answers one output."""

    columns: dict[str, np.ndarray]
    n: int
    single: bool = False


@dataclass(slots=True)
class Table:
    """The columns a model takes, in the order it was fitted on."""

    columns: list[Column]
    max_rows: int = 1024
    #: the manifest's example, decoded (the warm-up input)
    sample: Rows | None = None
    _by_name: dict[str, Column] = field(init=False)

    def __post_init__(self) -> None:
        self._by_name = {c.name: c for c in self.columns}

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def decode(self, payload: Any) -> Rows:
        """One request (any of the module docstring's forms) into :class:`Rows`."""
        if (
            isinstance(payload, Mapping)
            and len(payload) == 1
            and "inputs" in payload
            and ("inputs" not in self._by_name or isinstance(payload["inputs"], Mapping | list))
        ):
            payload = payload["inputs"]
        if isinstance(payload, Mapping):
            if any(isinstance(v, list) for v in payload.values()):
                return self._from_columns(payload)
            return self._from_records([payload], single=True)
        if isinstance(payload, list | tuple):
            if payload and all(isinstance(r, Mapping) for r in payload):
                return self._from_records(payload, single=False)
            if not any(isinstance(v, Mapping | list | tuple) for v in payload):
                if len(payload) != len(self.columns):
                    raise InvalidInput(
                        f"a list of values is one row in column order: expected {len(self.columns)} "
                        f"values ({', '.join(self.names)}), got {len(payload)}"
                    )
                return self._from_records([dict(zip(self.names, payload, strict=True))], single=True)
        raise InvalidInput(
            'expected a record {"inputs": {"column": value, ...}}, a list of records, or columns '
            f'{{"inputs": {{"column": [values], ...}}}}; the columns are {", ".join(self.names)}'
        )

    def units(self, payload: Any) -> int:
        """How many rows ``payload`` asks for, counted without decoding it (what the gateway
        charges before any work); :meth:`decode` refuses what does not match, so a request can
        never be served more rows than it paid for. At least 1, at most ``max_rows`` + 1."""
        if (
            isinstance(payload, Mapping)
            and len(payload) == 1
            and "inputs" in payload
            and ("inputs" not in self._by_name or isinstance(payload["inputs"], Mapping | list))
        ):
            payload = payload["inputs"]
        n = 1
        if isinstance(payload, Mapping):
            lists = [len(v) for v in payload.values() if isinstance(v, list)]
            n = max(lists, default=1)
        elif isinstance(payload, list | tuple) and payload and all(isinstance(r, Mapping) for r in payload):
            n = len(payload)
        return max(1, min(n, self.max_rows + 1))

    def _check_names(self, given: Mapping[str, Any]) -> None:
        unknown = sorted(str(k) for k in given if k not in self._by_name)
        missing = [n for n in self.names if n not in given]
        if unknown or missing:
            parts = [
                f"{what} column{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}"
                for what, names in (("unknown", unknown), ("missing", missing))
                if names
            ]
            raise InvalidInput(
                f"{'; '.join(parts)} (the model takes {', '.join(self.names)}; null is a missing value)",
                details={"unknown": unknown, "missing": missing},
            )

    def _check_rows(self, n: int) -> None:
        if n == 0:
            raise InvalidInput("expected at least one row")
        if n > self.max_rows:
            raise InvalidInput(f"at most {self.max_rows} rows per request")

    def _from_records(self, records: Sequence[Any], *, single: bool) -> Rows:
        self._check_rows(len(records))
        for record in records:
            self._check_names(record)
        rows = None if single else range(len(records))
        columns = {c.name: c.values([r[c.name] for r in records], rows=rows) for c in self.columns}
        return Rows(columns, len(records), single)

    def _from_columns(self, given: Mapping[str, Any]) -> Rows:
        self._check_names(given)
        lengths = set()
        for name, values in given.items():
            if not isinstance(values, list):
                raise InvalidInput(f"column '{name}': in the columns form every column is a list of values")
            lengths.add(len(values))
        if len(lengths) != 1:
            raise InvalidInput("in the columns form every column has the same number of values")
        n = lengths.pop()
        self._check_rows(n)
        rows = range(n)
        return Rows({c.name: c.values(given[c.name], rows=rows) for c in self.columns}, n, False)

    def frame(self, pandas: Any, batch: Sequence[Rows]) -> Any:
        """The DataFrame of a batch's rows, every column in its kind's dtype."""
        data: dict[str, Any] = {}
        for c in self.columns:
            parts = [rows.columns[c.name] for rows in batch]
            values = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if c.kind == "category":
                data[c.name] = pandas.Categorical(values, categories=c.categories)
            elif values.dtype == object:
                data[c.name] = pandas.Series(values, dtype=object)
            else:
                data[c.name] = values
        return pandas.DataFrame(data, columns=self.names)

    def example(self) -> dict[str, Any]:
        """A record every column of which the model knows (the warm-up input)."""
        record: dict[str, Any] = {}
        for c in self.columns:
            if c.categories:
                record[c.name] = c.categories[0]
            elif c.known:
                record[c.name] = c.known[0]
            else:
                record[c.name] = {
                    "float": 0.0,
                    "int": 0,
                    "bool": False,
                    "str": "",
                    "category": None,
                    "datetime": "1970-01-01T00:00:00",
                }[c.kind]
        return record

    def metadata(self) -> list[dict[str, Any]]:
        """Open Inference Protocol inputs: one 1-D tensor per column."""
        return [
            {"name": c.name, "datatype": c.datatype, "shape": [-1], "parameters": c.describe()}
            for c in self.columns
        ]


def column_from_schema(name: str, spec: Any) -> Column:
    """One ``columns`` param entry: a dtype name or ``{"dtype": ..., "categories": [...]}``."""
    where = f"column '{name}' in param 'columns'"
    if isinstance(spec, str):
        spec = {"dtype": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("dtype"), str):
        raise ConfigurationError(f"{where} must be a dtype name or {{'dtype': ...}}")
    kind = KINDS.get(spec["dtype"])
    if kind is None:
        raise ConfigurationError(
            f"{where}: unknown dtype {spec['dtype']!r} (one of {', '.join(sorted(KINDS))})"
        )
    categories = spec.get("categories")
    if categories is not None:
        if not isinstance(categories, list) or not categories:
            raise ConfigurationError(f"{where}: categories must be a non-empty list")
        if kind != "category":
            raise ConfigurationError(f"{where}: categories need dtype 'category'")
        return Column(name, kind, tuple(categories), frozenset(categories))
    return Column(name, kind)


def table_params(frame: Any) -> dict[str, Any]:
    """The manifest ``params`` of a model fitted on ``frame`` (a pandas DataFrame):
    ``{"columns": {name: dtype or {"dtype": "category", "categories": [...]}}, "example": record}``,
    the example being the first row (missing values as ``None``)."""
    columns: dict[str, Any] = {}
    for name, dtype in frame.dtypes.items():
        text = str(dtype)
        if text == "category":
            columns[str(name)] = {"dtype": "category", "categories": [_plain(v) for v in dtype.categories]}
        elif KINDS.get(text) is not None:
            columns[str(name)] = text
        elif dtype.kind in "OSU" or text.startswith("str"):
            columns[str(name)] = "str"
        elif dtype.kind == "M":
            columns[str(name)] = "datetime"
        else:
            raise ConfigurationError(f"column '{name}' has dtype {text}, which mlgate cannot take from JSON")
    example = {str(k): _plain(v) for k, v in frame.iloc[0].items()} if len(frame) else {}
    return {"columns": columns, "example": example}


_JSON_TYPES: dict[str, dict[str, Any]] = {
    "float": {"type": ["number", "null"]},
    "int": {"type": ["number", "null"]},
    "bool": {"type": ["boolean", "null"]},
    "str": {"type": ["string", "null"]},
    "category": {"type": ["string", "number", "null"]},
    "datetime": {"type": ["string", "null"], "format": "date-time"},
}


def table_input_schema(params: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema documenting a tabular model's request body (the manifest's ``input_schema``),
    from :func:`table_params`' output: the three forms under ``$defs``, an example."""
    declared = params.get("columns") or {}
    columns = [column_from_schema(str(n), spec) for n, spec in declared.items()]
    values: dict[str, Any] = {}
    for c in columns:
        values[c.name] = dict(_JSON_TYPES[c.kind])
        if c.categories is not None:
            values[c.name] = {"enum": [*c.categories, None]}
    names = [c.name for c in columns]
    record = {"type": "object", "properties": values, "required": names, "additionalProperties": False}
    by_column = {
        "type": "object",
        "properties": {n: {"type": "array", "items": v} for n, v in values.items()},
        "required": names,
        "additionalProperties": False,
    }
    # Documents the forms; checks nothing the runtime checks itself (the data plane validates each
    # payload, a bare /batch record included, against input_schema before the runtime's own,
    # clearer 400s: unknown or missing column, wrong value).
    schema: dict[str, Any] = {
        "description": "inputs: one record (one output), a list of records or columns (a list of "
        "outputs), as $defs/record, $defs/records, $defs/columns; null is a missing value",
        "properties": {"inputs": {"description": "a record, a list of records or columns"}},
        "$defs": {
            "record": record,
            "records": {"type": "array", "items": {"$ref": "#/$defs/record"}, "minItems": 1},
            "columns": by_column,
        },
    }
    if params.get("example"):
        schema["examples"] = [{"inputs": params["example"]}]
    return schema


def _plain(value: Any) -> Any:
    """A JSON value of a pandas/numpy scalar (missing values as ``None``, dates as ISO strings)."""
    if isinstance(value, np.datetime64) or hasattr(value, "isoformat"):
        text = str(np.datetime64(value, "ns"))
        return None if text == "NaT" else text
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value
