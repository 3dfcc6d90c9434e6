"""SPEC §2.4 pre-processing: long-format vitals → one standardised [20, 9] sequence per patient.

Plain Python and NumPy (serving stays light: no pandas). The request is the columnar record a
pandas ``DataFrame.to_dict()`` ("dict" orient) produces; plain lists (``orient="list"``) are
accepted too::

    {"idAtencion": 1408826,                          # one patient; or a column like the others
     "idSigno":   {"0": 1, "1": 4, ...},             # optional: the sign is read from nomSigno
     "nomSigno":  {"0": "MDC_ECG_HEART_RATE", "1": "MDC_PULS_OXIM_SAT_O2", ...},
     "valor":     {"0": 82.0, "1": 97.0, ...},
     "fecRegistro": {"0": "2024-07-12 10:05:00", ...}}

Steps, per patient (patients keep the order of their first row):

1. **Pivot** to one row per ``fecRegistro`` (ISO 8601; sorted by time) with one column per sign,
   keeping only the nine :data:`SIGNS` in their fixed order; readings of other signs are
   dropped first, so a timestamp with only other signs makes no row. Duplicate readings of a
   sign at one timestamp are averaged (pandas ``pivot_table``'s default).
2. **Forward-fill** each sign over the patient's whole history (a weight charted at admission
   still counts two hours later), then keep the **last 20 rows** (one every 5 minutes in the
   original export; the timestamps are not resampled).
3. Signs whose first reading falls inside the window are **back-filled** from it; a sign never
   charted for the patient is left empty and becomes 0 after step 4 (its standardised mean).
4. **Standardise per sequence**: each sign over the 20 steps, ``(x - mean) / std`` with the
   population std (``ddof=0``, like scikit-learn's ``StandardScaler``); a constant sign (std below
   ``1e-9 x max(1, |mean|)``, e.g. a height charted once) becomes 0.

Refused, with a clear message: fewer than 20 timestamps for a patient (422; there is no
padding: the model never saw padded sequences), no reading of the nine signs at all (422), more
than :data:`MAX_PATIENTS` patients (422), malformed dates, missing or mismatched columns,
non-numeric / NaN / null values, values beyond ±1e6 (400), more than :data:`MAX_READINGS`
readings (400, checked on the length of ``nomSigno`` before any value or date is read).

Work per request is bounded: the most patients (256) with a full window each is 256 x 20 x 9 =
46,080 readings; :data:`MAX_READINGS` (100,000) leaves room for longer histories. 150,000
readings (a 7 MB body) measured ~0.1 CPU-s and ~50 MB here, so the cap is a contract, not
the only guard: the body limit bounds the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mlgate.errors import InvalidInput, Unprocessable

__all__ = [
    "MAX_PATIENTS",
    "MAX_READINGS",
    "SIGNS",
    "STATES",
    "STEP_MINUTES",
    "WINDOW",
    "Sequences",
    "pivot",
    "preprocess",
    "sequence",
    "standardise",
    "window",
]

#: The nine signs the model reads, in its input order.
SIGNS: tuple[str, ...] = (
    "MDC_BLD_PERF_INDEX",
    "MDC_ECG_HEART_RATE",
    "MDC_ECG_V_P_C_RATE",
    "MDC_LEN_BODY_ACTUAL",
    "MDC_MASS_BODY_ACTUAL",
    "MDC_PULS_OXIM_PULS_RATE",
    "MDC_PULS_OXIM_SAT_O2",
    "MDC_TEMP",
    "MDC_TTHOR_RESP_RATE",
)
#: The model's four outputs, in order.
STATES: tuple[str, ...] = ("Arresto_Cardiaco", "Bajo_Gasto_Cardiaco", "Sano", "Shock_Cardiogenico")
WINDOW = 20
STEP_MINUTES = 5
MAX_PATIENTS = 256
MAX_READINGS = 100_000
MAX_ABS_VALUE = 1e6
COLUMNS = ("idAtencion", "idSigno", "nomSigno", "valor", "fecRegistro")

_SIGN_INDEX = {name: i for i, name in enumerate(SIGNS)}
_MAX_ID_CHARS = 64

PatientId = int | str
Table = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True, slots=True)
class Sequences:
    """The model input of one request: patient ids and their ``[P, 20, 9]`` float32 sequences."""

    ids: tuple[PatientId, ...]
    x: np.ndarray[Any, np.dtype[np.float32]]


def preprocess(record: Any, *, max_patients: int = MAX_PATIENTS) -> Sequences:
    """Validate, pivot and window one request (see the module docstring); 4xx on bad input."""
    tables = pivot(record, max_patients=max_patients)
    short = [(pid, len(times)) for pid, (times, _) in tables.items() if len(times) < WINDOW]
    if short:
        listed = ", ".join(f"{pid} has {n}" for pid, n in short[:5])
        raise Unprocessable(
            f"too few readings: each patient needs at least {WINDOW} timestamps with readings of "
            f"the nine signs (the last {WINDOW * STEP_MINUTES} minutes at one every {STEP_MINUTES}); "
            f"{listed}"
        )
    ids = tuple(tables)
    x = np.stack([sequence(table) for _, table in tables.values()]).astype(np.float32)
    return Sequences(ids, x)


def pivot(record: Any, *, max_patients: int = MAX_PATIENTS) -> dict[PatientId, tuple[list[datetime], Table]]:
    """Per patient (in order of first appearance): sorted timestamps and a ``[T, 9]`` table, NaN = none."""
    pids, names, values, stamps = _columns(record)
    known = [i for i, name in enumerate(names) if name in _SIGN_INDEX]
    if not known:
        seen = sorted(set(names))[:5]
        raise Unprocessable(
            f"none of the readings is one of the nine signs the model uses ({', '.join(SIGNS)}); "
            f"got {', '.join(seen) if seen else 'no readings'}"
        )
    groups: dict[PatientId, list[int]] = {pid: [] for pid in pids}
    if len(groups) > max_patients:
        raise Unprocessable(f"too many patients in one request: {len(groups)} (at most {max_patients})")
    for i in known:
        groups[pids[i]].append(i)
    out: dict[PatientId, tuple[list[datetime], Table]] = {}
    for pid, rows in groups.items():
        times = sorted({stamps[i] for i in rows})
        position = {t: k for k, t in enumerate(times)}
        r = np.fromiter((position[stamps[i]] for i in rows), dtype=np.intp, count=len(rows))
        c = np.fromiter((_SIGN_INDEX[names[i]] for i in rows), dtype=np.intp, count=len(rows))
        v = np.fromiter((values[i] for i in rows), dtype=np.float64, count=len(rows))
        sums = np.zeros((len(times), len(SIGNS)))
        counts = np.zeros((len(times), len(SIGNS)))
        np.add.at(sums, (r, c), v)
        np.add.at(counts, (r, c), 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            table = np.where(counts > 0, sums / counts, np.nan)
        out[pid] = (times, table)
    return out


def sequence(table: Table) -> Table:
    """One patient's model input: :func:`window` then :func:`standardise`."""
    return standardise(window(table))


def window(table: Table) -> Table:
    """Forward-fill over the whole history, keep the last :data:`WINDOW` rows, back-fill inside them."""
    if table.ndim != 2 or table.shape[0] < WINDOW:
        raise ValueError(f"need a [T >= {WINDOW}, signs] table, got shape {table.shape}")
    last = _ffill(table)[-WINDOW:]
    return _ffill(last[::-1])[::-1]


def standardise(seq: Table) -> Table:
    """Per sign over the steps: ``(x - mean) / std`` (ddof 0); constant or never-charted signs → 0."""
    out = np.zeros_like(seq, dtype=np.float64)
    charted = ~np.isnan(seq).all(axis=0)
    x = seq[:, charted]
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    varies = std > 1e-9 * np.maximum(1.0, np.abs(mean))
    scaled = np.zeros_like(x)
    scaled[:, varies] = (x[:, varies] - mean[varies]) / std[varies]
    out[:, charted] = scaled
    return out


def _ffill(table: Table) -> Table:
    index = np.where(np.isnan(table), 0, np.arange(table.shape[0])[:, None])
    np.maximum.accumulate(index, axis=0, out=index)
    filled: Table = table[index, np.arange(table.shape[1])]
    return filled


# -- validation of the columnar record ---------------------------------------------------------


def _columns(record: Any) -> tuple[list[PatientId], list[str], list[float], list[datetime]]:
    if not isinstance(record, Mapping):
        raise InvalidInput(
            "expected the columnar record {'idAtencion', 'idSigno', 'nomSigno', 'valor', 'fecRegistro'} "
            f"(pandas DataFrame.to_dict()), not {type(record).__name__}"
        )
    missing = [key for key in ("idAtencion", "nomSigno", "valor", "fecRegistro") if key not in record]
    if missing:
        raise InvalidInput(f"missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    keys, names = _as_column(record["nomSigno"], "nomSigno")
    n = len(names)
    if n == 0:
        raise Unprocessable("the record has no readings")
    if n > MAX_READINGS:
        raise InvalidInput(f"too many readings in one request: {n} (at most {MAX_READINGS})")

    def aligned(name: str) -> list[Any]:
        column_keys, column = _as_column(record[name], name)
        if len(column) != n:
            raise InvalidInput(
                f"columns have different lengths: '{name}' has {len(column)} rows, 'nomSigno' {n}"
            )
        if column_keys == keys:
            return column
        by_key = dict(zip(column_keys or map(str, range(n)), column, strict=True))
        try:
            return [by_key[k] for k in keys or map(str, range(n))]
        except KeyError:
            raise InvalidInput(f"columns have different row labels: '{name}' and 'nomSigno' differ") from None

    raw_ids = record["idAtencion"]
    if isinstance(raw_ids, Mapping | list):
        column = aligned("idAtencion")
        pids = column if all(type(v) is int for v in column) else [_patient_id(v) for v in column]
    else:
        pids = [_patient_id(raw_ids)] * n
    if "idSigno" in record:
        aligned("idSigno")  # checked for shape only: the sign is identified by its name
    for name in names:
        if not isinstance(name, str):
            raise InvalidInput(f"nomSigno values must be strings, got {type(name).__name__}")
    values = _values(aligned("valor"))
    stamps = _timestamps(aligned("fecRegistro"))
    return pids, names, values, stamps


def _as_column(value: Any, name: str) -> tuple[list[str] | None, list[Any]]:
    """Row labels as strings (None for a list: positions) and values of one column."""
    if isinstance(value, Mapping):
        return [str(k) for k in value], list(value.values())
    if isinstance(value, list):
        return None, value
    raise InvalidInput(
        f"column '{name}' must be an object {{row: value}} or a list, not {type(value).__name__}"
    )


def _patient_id(value: Any) -> PatientId:
    if isinstance(value, bool):
        raise InvalidInput("idAtencion must be an integer or a string, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS:
        return value
    raise InvalidInput(f"idAtencion must be an integer or a string of 1-{_MAX_ID_CHARS} characters")


def _values(column: list[Any]) -> list[float]:
    # Fast path: plain ints and floats (type() excludes bool); anything else gets a precise message.
    if all(type(v) is float or type(v) is int for v in column):
        array = np.array(column, dtype=np.float64)
        if np.isfinite(array).all() and (np.abs(array) <= MAX_ABS_VALUE).all():
            values: list[float] = array.tolist()
            return values
    return [_value(v) for v in column]


def _value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = "null" if value is None else type(value).__name__
        raise InvalidInput(f"valor must contain only numbers (omit missing readings), got {shown}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidInput("valor contains NaN or infinity")
    if abs(result) > MAX_ABS_VALUE:
        raise InvalidInput(f"valor {value} is out of range (|valor| <= {MAX_ABS_VALUE:g})")
    return result


def _timestamps(raw: list[Any]) -> list[datetime]:
    parsed: dict[str, datetime] = {}
    out: list[datetime] = []
    aware = naive = False
    for value in raw:
        if not isinstance(value, str):
            raise InvalidInput(
                "fecRegistro must be date-time strings like '2024-07-12 10:05:00', "
                f"got {type(value).__name__}"
            )
        when = parsed.get(value)
        if when is None:
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                shown = value if len(value) <= 40 else value[:40] + "…"
                raise InvalidInput(
                    f"malformed fecRegistro {shown!r}: expected 'YYYY-MM-DD HH:MM:SS' (ISO 8601)"
                ) from None
            if when.tzinfo is not None:
                aware = True
                when = when.astimezone(UTC).replace(tzinfo=None)
            else:
                naive = True
            parsed[value] = when
        out.append(when)
    if aware and naive:
        raise InvalidInput("fecRegistro mixes dates with and without a time zone")
    return out
