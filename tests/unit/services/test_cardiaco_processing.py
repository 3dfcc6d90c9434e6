"""SPEC §2.4 pre-processing of ``cardiaco`` against an independent pandas implementation, and its 4xx."""

from __future__ import annotations

import copy
import random
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlgate.errors import InvalidInput, MlgateError, Unprocessable
from mlgate_services.cardiaco import generator
from mlgate_services.cardiaco.processing import (
    MAX_PATIENTS,
    MAX_READINGS,
    SIGNS,
    STATES,
    WINDOW,
    pivot,
    preprocess,
    standardise,
    window,
)

# -- the independent pandas implementation -------------------------------------------------------


def _pandas_tables(columns: dict[str, list[Any]]) -> pd.DataFrame:
    df = pd.DataFrame(columns)
    df = df[df["nomSigno"].isin(SIGNS)].copy()
    df["fecRegistro"] = pd.to_datetime(df["fecRegistro"])
    wide = df.pivot_table(
        index=["idAtencion", "fecRegistro"], columns="nomSigno", values="valor", aggfunc="mean"
    )
    return wide.reindex(columns=list(SIGNS)).sort_index()


def _pandas_sequences(columns: dict[str, list[Any]]) -> dict[Any, np.ndarray]:
    out = {}
    for pid, group in _pandas_tables(columns).groupby(level=0):
        seq = group.ffill().tail(WINDOW).bfill()
        mean, std = seq.mean(), seq.std(ddof=0)
        z = (seq - mean) / std
        constant = std <= 1e-9 * np.maximum(1.0, mean.abs())
        z.loc[:, constant] = 0.0
        out[pid] = z.fillna(0.0).to_numpy()
    return out


@pytest.fixture(scope="module")
def patients() -> list[generator.Patient]:
    return generator.generate(24, seed=3)


# -- generator --------------------------------------------------------------------------------------


def test_generator_is_deterministic_balanced_and_long_format(patients: list[generator.Patient]) -> None:
    again = generator.generate(24, seed=3)
    assert generator.to_record(again) == generator.to_record(patients)
    assert generator.to_record(generator.generate(24, seed=4)) != generator.to_record(patients)
    assert sorted(p.state for p in patients) == sorted(STATES * 6)
    record = generator.to_record(patients)
    assert set(record) == {"idAtencion", "idSigno", "nomSigno", "valor", "fecRegistro"}
    lengths = {len(column) for column in record.values()}
    assert len(lengths) == 1
    assert list(record["valor"])[:3] == ["0", "1", "2"]
    assert set(record["nomSigno"].values()) == {*SIGNS, generator.EXTRA_SIGN[0]}
    assert set(record["idSigno"].values()) == set(range(1, 11))
    assert record["fecRegistro"]["0"][10:11] == " " and len(record["fecRegistro"]["0"]) == 19
    for p in patients:
        assert generator.MIN_STEPS <= len(p.values) <= generator.MAX_STEPS
        assert np.isnan(p.values).any()  # missing readings exist
        assert not np.isnan(p.values[0, [3, 4]]).any()  # height and weight charted at the start


def test_generator_ranges_are_plausible() -> None:
    values = np.concatenate([p.values for p in generator.generate(80, seed=9)])
    limits = {
        "MDC_BLD_PERF_INDEX": (0, 20),
        "MDC_ECG_HEART_RATE": (0, 300),
        "MDC_ECG_V_P_C_RATE": (0, 60),
        "MDC_LEN_BODY_ACTUAL": (150, 195),
        "MDC_MASS_BODY_ACTUAL": (40, 130),
        "MDC_PULS_OXIM_PULS_RATE": (0, 300),
        "MDC_PULS_OXIM_SAT_O2": (40, 100),
        "MDC_TEMP": (34.5, 38.5),
        "MDC_TTHOR_RESP_RATE": (0, 60),
    }
    for j, sign in enumerate(SIGNS):
        column = values[:, j][~np.isnan(values[:, j])]
        low, high = limits[sign]
        assert low <= column.min() and column.max() <= high, sign


def test_states_show_their_trends() -> None:
    """Healthy patients are stable; shock raises HR and lowers SpO2 and perfusion over the window."""
    hr, spo2, pi = SIGNS.index("MDC_ECG_HEART_RATE"), SIGNS.index("MDC_PULS_OXIM_SAT_O2"), 0

    def mean_change(state: str, col: int) -> float:
        group = generator.generate(60, seed=5, states=(state,))
        changes = []
        for p in group:
            w = window(p.values)
            changes.append(np.nanmean(w[-5:, col]) - np.nanmean(w[:5, col]))
        return float(np.mean(changes))

    assert abs(mean_change("Sano", hr)) < 3
    assert mean_change("Shock_Cardiogenico", hr) > 5
    assert mean_change("Shock_Cardiogenico", spo2) < -1
    assert mean_change("Shock_Cardiogenico", pi) < 0
    assert mean_change("Arresto_Cardiaco", spo2) < mean_change("Shock_Cardiogenico", spo2)


# -- against pandas --------------------------------------------------------------------------------


def test_pivot_matches_pandas(patients: list[generator.Patient]) -> None:
    columns = generator.to_columns(patients)
    reference = _pandas_tables(columns)
    tables = pivot(generator.to_record(patients), max_patients=MAX_PATIENTS)
    assert list(tables) == [p.id for p in patients]  # order of first appearance
    for pid, (times, table) in tables.items():
        expected = reference.loc[pid]
        assert [pd.Timestamp(t) for t in times] == list(expected.index)
        np.testing.assert_array_equal(np.isnan(table), expected.isna().to_numpy())
        np.testing.assert_allclose(table, expected.to_numpy(), equal_nan=True)


def test_sequences_match_pandas_for_several_patients(patients: list[generator.Patient]) -> None:
    columns = generator.to_columns(patients)
    expected = _pandas_sequences(columns)
    result = preprocess(generator.to_record(patients))
    assert result.x.dtype == np.float32
    assert result.x.shape == (len(patients), WINDOW, len(SIGNS))
    assert result.ids == tuple(p.id for p in patients)
    for pid, seq in zip(result.ids, result.x, strict=True):
        np.testing.assert_allclose(seq, expected[pid], atol=1e-5)
    # Standardised per sequence: every charted, varying sign has mean 0 and std 1 over the 20 steps.
    varying = result.x.std(axis=1) > 0.5
    np.testing.assert_allclose(result.x.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(result.x.std(axis=1)[varying], 1, atol=1e-4)


def test_list_and_dict_orient_and_row_order_give_the_same_input(patients: list[generator.Patient]) -> None:
    record = generator.to_record(patients[:3])
    as_lists = generator.to_columns(patients[:3])
    keys = list(record["valor"])
    random.Random(0).shuffle(keys)
    shuffled = {column: {k: values[k] for k in keys} for column, values in record.items()}
    a, b, c = preprocess(record), preprocess(as_lists), preprocess(shuffled)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.ids == b.ids
    by_id = dict(zip(c.ids, c.x, strict=True))  # shuffled rows: patients in a new first-seen order
    assert set(by_id) == set(a.ids)
    for pid, seq in zip(a.ids, a.x, strict=True):
        np.testing.assert_array_equal(seq, by_id[pid])


def test_patient_id_scalar_or_column(patients: list[generator.Patient]) -> None:
    record = generator.to_record(patients[:1])
    assert isinstance(record["idAtencion"], int)
    column = {**record, "idAtencion": dict.fromkeys(record["valor"], patients[0].id)}
    a, b = preprocess(record), preprocess(column)
    assert a.ids == b.ids == (patients[0].id,)
    np.testing.assert_array_equal(a.x, b.x)
    text_id = {**record, "idAtencion": "HC-77"}
    assert preprocess(text_id).ids == ("HC-77",)
    assert preprocess({**record, "idAtencion": 12.0}).ids == (12,)


def test_id_signo_is_optional_and_extra_signs_are_dropped(patients: list[generator.Patient]) -> None:
    record = generator.to_record(patients[:1])
    without_ids = {k: v for k, v in record.items() if k != "idSigno"}
    np.testing.assert_array_equal(preprocess(record).x, preprocess(without_ids).x)
    keep = [k for k, name in record["nomSigno"].items() if name in SIGNS]
    only_nine = {
        column: {k: values[k] for k in keep} for column, values in record.items() if column != "idAtencion"
    }
    np.testing.assert_array_equal(preprocess(record).x, preprocess({**only_nine, "idAtencion": 1}).x)


# -- the window rules --------------------------------------------------------------------------------


def _readings(
    steps: int, signs: dict[str, list[float | None]] | None = None, *, pid: int = 7
) -> dict[str, Any]:
    """A record of ``steps`` timestamps; every sign charted unless ``signs`` overrides it (None: missing)."""
    rows: list[tuple[str, float, str]] = []
    for t in range(steps):
        stamp = f"2024-07-12 {10 + (5 * t) // 60:02d}:{(5 * t) % 60:02d}:00"
        for j, sign in enumerate(SIGNS):
            series = (signs or {}).get(sign)
            value = series[t] if series is not None else float(j * 10 + t)
            if value is not None:
                rows.append((sign, value, stamp))
    return {
        "idAtencion": pid,
        "idSigno": {str(i): 1 for i in range(len(rows))},
        "nomSigno": {str(i): r[0] for i, r in enumerate(rows)},
        "valor": {str(i): r[1] for i, r in enumerate(rows)},
        "fecRegistro": {str(i): r[2] for i, r in enumerate(rows)},
    }


def test_forward_fill_uses_history_before_the_window() -> None:
    steps = 30  # the window is steps 10-29
    weight: list[float | None] = [None] * steps
    weight[2] = 80.0  # charted once, long before the window: carried into it
    temp: list[float | None] = [None] * steps
    temp[5], temp[20] = 36.0, 37.0
    never: list[float | None] = [None] * steps
    record = _readings(
        steps, {"MDC_MASS_BODY_ACTUAL": weight, "MDC_TEMP": temp, "MDC_LEN_BODY_ACTUAL": never}
    )
    [(_, table)] = pivot(record).values()
    w = window(table)
    mass, t, length = (SIGNS.index(s) for s in ("MDC_MASS_BODY_ACTUAL", "MDC_TEMP", "MDC_LEN_BODY_ACTUAL"))
    assert (w[:, mass] == 80.0).all()
    assert list(w[:, t]) == [36.0] * 10 + [37.0] * 10
    assert np.isnan(w[:, length]).all()
    seq = preprocess(record).x[0]
    assert (seq[:, mass] == 0).all() and (seq[:, length] == 0).all()  # constant / never charted → 0
    np.testing.assert_allclose(seq[:, t], [-1.0] * 10 + [1.0] * 10, atol=1e-6)


def test_leading_gap_inside_the_window_is_back_filled() -> None:
    steps = 20
    temp: list[float | None] = [None] * steps
    temp[5], temp[10] = 36.0, 37.0
    [(_, table)] = pivot(_readings(steps, {"MDC_TEMP": temp})).values()
    column = window(table)[:, SIGNS.index("MDC_TEMP")]
    assert list(column) == [36.0] * 10 + [37.0] * 10


def test_duplicates_are_averaged_and_only_the_last_20_steps_count() -> None:
    record = _readings(25)
    n = len(record["valor"])
    record["nomSigno"][str(n)] = "MDC_ECG_HEART_RATE"
    record["valor"][str(n)] = 1000.0
    record["fecRegistro"][str(n)] = record["fecRegistro"]["0"]  # a duplicate at the first step
    record["idSigno"][str(n)] = 1
    [(times, table)] = pivot(record).values()
    assert len(times) == 25
    assert table[0, SIGNS.index("MDC_ECG_HEART_RATE")] == pytest.approx((10.0 + 1000.0) / 2)
    assert len(window(table)) == WINDOW
    assert window(table)[0, 1] == table[5, 1]


def test_standardise_constant_and_tiny_float_noise() -> None:
    seq = np.full((WINDOW, 2), 36.6)
    seq[:, 1] = np.linspace(0, 1, WINDOW)
    out = standardise(seq)
    assert (out[:, 0] == 0).all()
    assert out[:, 1].std() == pytest.approx(1)


def _merge(*records: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: {} for k in ("idAtencion", "idSigno", "nomSigno", "valor", "fecRegistro")}
    for record in records:
        n0 = len(merged["valor"])
        for i in range(len(record["valor"])):
            merged["idAtencion"][str(n0 + i)] = record["idAtencion"]
            for column in ("idSigno", "nomSigno", "valor", "fecRegistro"):
                merged[column][str(n0 + i)] = record[column][str(i)]
    return merged


def test_several_patients_keep_their_order() -> None:
    result = preprocess(_merge(_readings(20, pid=11), _readings(22, pid=5)))
    assert result.ids == (11, 5)
    assert result.x.shape == (2, WINDOW, len(SIGNS))


# -- refusals ----------------------------------------------------------------------------------------


def _with(record: dict[str, Any], column: str, key: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(record)
    out[column][key] = value
    return out


def _refusals() -> list[tuple[str, Any, type[MlgateError], str]]:
    good = _readings(20)
    short = _readings(19)
    no_nine = copy.deepcopy(good)
    no_nine["nomSigno"] = {k: "MDC_PRESS_BLD_NONINV_MEAN" for k in good["nomSigno"]}
    shorter_column = copy.deepcopy(good)
    shorter_column["valor"].pop("3")
    relabelled = copy.deepcopy(good)
    relabelled["valor"]["x"] = relabelled["valor"].pop("3")
    two = _merge(_readings(20, pid=1), _readings(12, pid=2))
    many = copy.deepcopy(good)
    many["idAtencion"] = {k: int(k) for k in good["valor"]}
    return [
        ("not an object", [1, 2, 3], InvalidInput, "columnar record"),
        ("missing column", {k: v for k, v in good.items() if k != "valor"}, InvalidInput, "missing column"),
        (
            "empty",
            {**good, "nomSigno": {}, "valor": {}, "fecRegistro": {}, "idSigno": {}},
            Unprocessable,
            "no readings",
        ),
        ("19 steps", short, Unprocessable, "too few readings.*7 has 19"),
        ("one of two patients short", two, Unprocessable, "too few readings.*; 2 has 12$"),
        ("unknown signs only", no_nine, Unprocessable, "none of the readings is one of the nine signs"),
        (
            "malformed date",
            _with(good, "fecRegistro", "0", "12/07/2024 10:05"),
            InvalidInput,
            "malformed fecRegistro",
        ),
        (
            "impossible date",
            _with(good, "fecRegistro", "0", "2024-13-45 10:05:00"),
            InvalidInput,
            "malformed",
        ),
        ("date as number", _with(good, "fecRegistro", "0", 1720778700000), InvalidInput, "date-time strings"),
        (
            "mixed zones",
            _with(good, "fecRegistro", "0", "2024-07-12T10:00:00+00:00"),
            InvalidInput,
            "time zone",
        ),
        ("column lengths", shorter_column, InvalidInput, "different lengths"),
        ("row labels", relabelled, InvalidInput, "different row labels"),
        ("string value", _with(good, "valor", "0", "82"), InvalidInput, "only numbers.*str"),
        ("null value", _with(good, "valor", "0", None), InvalidInput, "only numbers.*null"),
        ("boolean value", _with(good, "valor", "0", True), InvalidInput, "only numbers"),
        ("NaN", _with(good, "valor", "0", float("nan")), InvalidInput, "NaN"),
        ("infinity", _with(good, "valor", "0", float("inf")), InvalidInput, "NaN or infinity"),
        ("huge", _with(good, "valor", "0", 1e300), InvalidInput, "out of range"),
        (
            "sign not a string",
            _with(good, "nomSigno", "0", 5),
            InvalidInput,
            "nomSigno values must be strings",
        ),
        ("column not a column", {**good, "valor": "82"}, InvalidInput, "column 'valor' must be"),
        ("boolean id", {**good, "idAtencion": True}, InvalidInput, "idAtencion"),
        ("empty id", {**good, "idAtencion": ""}, InvalidInput, "idAtencion"),
        ("fractional id", {**good, "idAtencion": 1.5}, InvalidInput, "idAtencion"),
        ("too many patients", many, Unprocessable, "too many patients"),
    ]


@pytest.mark.parametrize(
    ("case", "payload", "error", "message"), _refusals(), ids=[r[0] for r in _refusals()]
)
def test_refusals_are_clear_4xx(case: str, payload: Any, error: type[MlgateError], message: str) -> None:
    if case == "too many patients":
        with pytest.raises(error, match=message) as info:
            pivot(payload, max_patients=5)
    else:
        with pytest.raises(error, match=message) as info:
            preprocess(payload)
    assert type(info.value) is error
    assert 400 <= info.value.status < 500
    assert info.value.status == (422 if error is Unprocessable else 400)


def test_max_patients_default_is_enforced() -> None:
    record = _readings(30)
    record["idAtencion"] = {k: int(k) % (MAX_PATIENTS + 1) for k in record["valor"]}
    assert len(record["valor"]) >= MAX_PATIENTS + 1
    with pytest.raises(Unprocessable, match=f"at most {MAX_PATIENTS}"):
        preprocess(record)


def test_max_readings_is_a_clear_400_before_any_value_is_read() -> None:
    n = MAX_READINGS + 1
    record = {
        "idAtencion": 1,
        "nomSigno": ["MDC_TEMP"] * n,
        "valor": ["not even a number"] * n,  # never read: the count is checked first
        "fecRegistro": ["not a date"] * n,
    }
    with pytest.raises(
        InvalidInput, match=f"too many readings in one request: {n} \\(at most {MAX_READINGS}\\)"
    ) as info:
        preprocess(record)
    assert info.value.status == 400


def test_the_largest_legitimate_request_fits_the_readings_cap() -> None:
    # MAX_PATIENTS patients with a full window of the nine signs each, as list columns.
    record = _readings(WINDOW)
    rows = len(record["nomSigno"])
    assert rows * MAX_PATIENTS <= MAX_READINGS
    columns = {name: list(record[name].values()) for name in ("nomSigno", "valor", "fecRegistro")}
    big = {
        "idAtencion": [pid for pid in range(MAX_PATIENTS) for _ in range(rows)],
        **{name: values * MAX_PATIENTS for name, values in columns.items()},
    }
    out = preprocess(big)
    assert out.x.shape == (MAX_PATIENTS, WINDOW, len(SIGNS))


def test_timezone_aware_dates_are_converted_to_utc() -> None:
    record = _readings(20)
    shifted = copy.deepcopy(record)
    for k, v in record["fecRegistro"].items():  # the same instants, written at UTC+01:00
        local = datetime.fromisoformat(v) + timedelta(hours=1)
        shifted["fecRegistro"][k] = local.isoformat() + "+01:00"
    a, b = pivot(record), pivot(shifted)
    assert a[7][0] == b[7][0]
    np.testing.assert_array_equal(preprocess(record).x, preprocess(shifted).x)
