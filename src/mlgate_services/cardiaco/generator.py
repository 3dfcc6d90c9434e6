"""Synthetic ICU vital signs for four cardiac states, in the original long format.

There is no public data for the original ``cardiaco`` model, so its reference weights are
trained on this generator. **The data is synthetic**: ranges and trends are physiologically
plausible textbook patterns, not fitted to any patient record, and a model trained on them
is not fit for clinical use.

Every patient is one ICU stay monitored every **5 minutes** for 24-48 steps (2-4 h); the model
looks at the last 20. Each step has up to nine MDC readings (the signs the model uses) plus a
non-invasive mean blood pressure that the pre-processing drops (real exports carry other
signs too)::

    patients = generate(200, seed=7)                 # balanced over STATES, deterministic
    record = to_record(patients[:2])                 # the columnar "dict" record clients send
    columns = to_columns(patients)                   # the same rows as plain lists

How each state is drawn (the reasoning, per sign, is in :data:`PROFILES` and :func:`_patient`):

- ``Sano`` — stable haemodynamics: HR 60-95, SpO2 95-99 %, perfusion index 1.5-8 %, RR 12-20,
  rare PVCs; small random, *uncorrelated* drifts (position changes, sleep/wake).
- ``Bajo_Gasto_Cardiaco`` (low cardiac output) — the body compensates a falling stroke
  volume: mild, rising tachycardia, peripheral vasoconstriction (falling perfusion index, a
  cooling core), slowly drifting SpO2, a little more tachypnoea and ectopy.
- ``Shock_Cardiogenico`` — the same cascade, stronger and accelerating: tachycardia,
  perfusion index collapsing below 1 %, SpO2 dropping (pulmonary congestion), tachypnoea,
  frequent PVCs and a growing pulse deficit (beats on the ECG that do not reach the finger).
- ``Arresto_Cardiaco`` — a shock-like deterioration, then an arrest 0-70 min before the last
  reading: either ventricular fibrillation (erratic, high ECG "rate", a PVC storm) or
  asystole/bradycardic arrest (ECG rate collapsing); in both the pulse oximeter loses the
  pulse (pulse rate → 0, perfusion index → ~0, SpO2 crashing, many missing readings) and
  breathing becomes agonal.

The classes **overlap on purpose**: severities are drawn from overlapping ranges (a mild low
output looks like a healthy patient with a drift, a mild shock like a severe low output), an
arrest that starts at the very last reading — or whose last readings are missing and get
forward-filled — looks like shock, and every state has sensor artefacts (a probe slipping:
SpO2 and perfusion index dropping for a reading or two). Held-out accuracy is therefore well
below 100 %; see MODEL_CARD.md for the measured confusion matrix.

Missing readings: any reading is missing with probability 4 %; temperature and blood pressure
are charted every 15 minutes; height and weight are charted once, at the first step; after an
arrest the oximeter's readings (SpO2, pulse rate, perfusion index) are missing half the time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from mlgate_services.cardiaco.processing import SIGNS, STATES, STEP_MINUTES

__all__ = [
    "EXTRA_SIGN",
    "PROFILES",
    "SIGN_IDS",
    "Patient",
    "generate",
    "to_columns",
    "to_record",
]

#: Local sign ids of the export (hospital-specific numbers, not IEEE 11073 MDC codes).
SIGN_IDS: dict[str, int] = {
    "MDC_ECG_HEART_RATE": 1,
    "MDC_ECG_V_P_C_RATE": 2,
    "MDC_PULS_OXIM_PULS_RATE": 3,
    "MDC_PULS_OXIM_SAT_O2": 4,
    "MDC_BLD_PERF_INDEX": 5,
    "MDC_TTHOR_RESP_RATE": 6,
    "MDC_TEMP": 7,
    "MDC_LEN_BODY_ACTUAL": 8,
    "MDC_MASS_BODY_ACTUAL": 9,
}
#: A sign the export carries but the model does not use (dropped by the pre-processing).
EXTRA_SIGN = ("MDC_PRESS_BLD_NONINV_MEAN", 10)

MIN_STEPS, MAX_STEPS = 24, 48
MISSING_P = 0.04
ARTIFACT_P = 0.15
START = datetime(2024, 7, 12, 0, 0, 0)

PI, HR, PVC, LEN, MASS, PR, SPO2, TEMP, RR = range(9)
assert tuple(SIGNS[i] for i in (PI, HR, PVC, LEN, MASS, PR, SPO2, TEMP, RR)) == SIGNS


@dataclass(frozen=True, slots=True)
class Profile:
    """How one state is drawn: baseline ranges at the start of the stay and deterioration gains.

    ``severity`` is the range of the per-patient severity ``s``; the deterioration ``d(t)`` rises
    from 0 to ``s`` over the last 15-30 steps. At ``d = 1``: HR ``+hr`` bpm, SpO2 ``-spo2`` points,
    perfusion index x ``(1 - pi)``, RR ``+rr``/min, PVC rate ``+pvc``/min, temperature ``-temp`` °C,
    pulse deficit (ECG rate minus oximeter pulse rate) ``deficit`` bpm.
    """

    hr: tuple[float, float]
    spo2: tuple[float, float]
    pi: tuple[float, float]
    rr: tuple[float, float]
    pvc: tuple[float, float]
    temp: tuple[float, float]
    severity: tuple[float, float]
    gains: dict[str, float]


#: Baselines and gains per state. Ranges overlap between neighbouring states on purpose.
PROFILES: dict[str, Profile] = {
    # Stable: no deterioration (gains 0), only the random drifts every patient has.
    "Sano": Profile(
        hr=(60, 95),
        spo2=(95, 99),
        pi=(1.5, 8.0),
        rr=(12, 20),
        pvc=(0.0, 1.0),
        temp=(36.3, 37.5),
        severity=(0.0, 0.0),
        gains={},
    ),
    # Compensated low output: sympathetic tachycardia and vasoconstriction, mild.
    "Bajo_Gasto_Cardiaco": Profile(
        hr=(80, 110),
        spo2=(92, 97),
        pi=(0.6, 3.0),
        rr=(15, 24),
        pvc=(0.3, 4.0),
        temp=(35.8, 37.2),
        severity=(0.2, 0.65),
        gains={"hr": 16, "spo2": 3, "pi": 0.5, "rr": 5, "pvc": 2, "temp": 0.3, "deficit": 4},
    ),
    # Decompensated pump failure: the same cascade, stronger, plus congestion and ectopy.
    "Shock_Cardiogenico": Profile(
        hr=(95, 135),
        spo2=(86, 95),
        pi=(0.2, 1.5),
        rr=(20, 32),
        pvc=(1.0, 10.0),
        temp=(35.5, 37.0),
        severity=(0.45, 1.0),
        gains={"hr": 26, "spo2": 8, "pi": 0.7, "rr": 10, "pvc": 8, "temp": 0.6, "deficit": 14},
    ),
    # Pre-arrest deterioration like shock; the arrest itself is drawn in _arrest().
    "Arresto_Cardiaco": Profile(
        hr=(90, 135),
        spo2=(86, 96),
        pi=(0.2, 2.0),
        rr=(18, 32),
        pvc=(1.0, 10.0),
        temp=(35.5, 37.2),
        severity=(0.3, 1.0),
        gains={"hr": 26, "spo2": 8, "pi": 0.7, "rr": 10, "pvc": 8, "temp": 0.6, "deficit": 14},
    ),
}
assert tuple(sorted(PROFILES)) == STATES


@dataclass(frozen=True, slots=True)
class Patient:
    """One synthetic ICU stay: readings every 5 minutes, NaN where nothing was charted."""

    id: int
    state: str
    start: datetime
    #: [steps, 9] in :data:`SIGNS` order; NaN = missing reading
    values: np.ndarray[Any, np.dtype[np.float64]]
    #: [steps] non-invasive mean arterial pressure (mmHg), a sign the model does not use
    extra: np.ndarray[Any, np.dtype[np.float64]]

    @property
    def times(self) -> list[datetime]:
        return [self.start + timedelta(minutes=STEP_MINUTES * i) for i in range(len(self.values))]


def generate(
    n: int, *, seed: int, states: Sequence[str] = STATES, first_id: int = 1_400_000
) -> list[Patient]:
    """``n`` patients, states cycling through ``states`` in a seeded shuffled order; deterministic."""
    unknown = set(states) - set(STATES)
    if unknown:
        raise ValueError(f"unknown states {sorted(unknown)}; known: {STATES}")
    rng = np.random.default_rng(seed)
    labels = [states[i % len(states)] for i in range(n)]
    order = rng.permutation(n)
    patients = []
    for k, i in enumerate(order):
        start = START + timedelta(minutes=STEP_MINUTES * int(rng.integers(0, 7 * 24 * 12)))
        patients.append(_patient(rng, first_id + k, labels[int(i)], start))
    return patients


def _u(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _ar1(rng: np.random.Generator, steps: int, sd: float, phi: float = 0.8) -> np.ndarray[Any, Any]:
    """Slow physiological variation: a stationary AR(1) process with marginal sd ``sd``."""
    out = np.empty(steps)
    out[0] = rng.normal(0.0, sd)
    innovations = rng.normal(0.0, sd * np.sqrt(1 - phi**2), steps)
    for t in range(1, steps):
        out[t] = phi * out[t - 1] + innovations[t]
    return out


def _patient(rng: np.random.Generator, pid: int, state: str, start: datetime) -> Patient:
    p = PROFILES[state]
    steps = int(rng.integers(MIN_STEPS, MAX_STEPS + 1))
    t = np.arange(steps, dtype=np.float64)
    # Deterioration d(t): 0 until onset, then rising (accelerating when power > 1) to s.
    s = _u(rng, p.severity)
    length = float(rng.integers(15, 31))
    ramp = np.clip((t - (steps - 1 - length)) / length, 0.0, 1.0) ** rng.uniform(1.0, 2.0)
    d = s * ramp
    g = p.gains

    # Random drifts every patient has (position, sedation, sleep): random sign, uncorrelated.
    def drift(scale: float) -> np.ndarray[Any, Any]:
        return np.asarray(rng.uniform(-scale, scale) * (t - t[-1]))

    hr_true = _u(rng, p.hr) + g.get("hr", 0) * d + drift(0.25) + _ar1(rng, steps, 2.0)
    hr = hr_true + rng.normal(0, 1.5, steps)
    pr = hr_true - g.get("deficit", 0) * d + rng.normal(0, 2.0, steps)
    spo2 = _u(rng, p.spo2) - g.get("spo2", 0) * d + drift(0.04) + _ar1(rng, steps, 0.5)
    spo2 = spo2 + rng.normal(0, 0.6, steps)
    pi = (
        _u(rng, p.pi) * (1 - g.get("pi", 0) * d) * np.exp(_ar1(rng, steps, 0.08) + rng.normal(0, 0.06, steps))
    )
    rr = _u(rng, p.rr) + g.get("rr", 0) * d + drift(0.08) + _ar1(rng, steps, 1.0) + rng.normal(0, 1.0, steps)
    pvc_rate = np.clip(_u(rng, p.pvc) + g.get("pvc", 0) * d, 0.0, None)
    pvc = rng.poisson(pvc_rate).astype(np.float64)
    temp = _u(rng, p.temp) - g.get("temp", 0) * d + drift(0.004) + _ar1(rng, steps, 0.05)
    temp = temp + rng.normal(0, 0.05, steps)
    height = float(rng.integers(150, 196))
    bmi = rng.uniform(19, 34)
    mass = round(bmi * (height / 100) ** 2, 1)
    map_ = rng.uniform(70, 95) - 30 * d + _ar1(rng, steps, 3.0)

    values = np.full((steps, 9), np.nan)
    values[:, HR], values[:, PR], values[:, SPO2], values[:, PI] = hr, pr, spo2, pi
    values[:, RR], values[:, PVC], values[:, TEMP] = rr, pvc, temp
    oximeter_missing = np.zeros(steps, dtype=bool)
    if state == "Arresto_Cardiaco":
        oximeter_missing = _arrest(rng, values, map_)
    if rng.random() < ARTIFACT_P:  # a probe slipping: low SpO2/PI, noisy pulse, for 1-2 readings
        at = int(rng.integers(0, steps))
        span = slice(at, min(steps, at + int(rng.integers(1, 3))))
        values[span, SPO2] -= rng.uniform(5, 15)
        values[span, PI] *= rng.uniform(0.2, 0.6)
        values[span, PR] += rng.normal(0, 15)

    _round_and_clip(values)
    # Missing readings: random gaps; 15-minute charting of temperature and blood pressure;
    # height and weight charted once; the oximeter loses the signal after an arrest.
    values[rng.random((steps, 9)) < MISSING_P] = np.nan
    phase = int(rng.integers(0, 3))
    values[(np.arange(steps) % 3) != phase, TEMP] = np.nan
    values[1:, LEN] = np.nan
    values[1:, MASS] = np.nan
    values[0, LEN], values[0, MASS] = height, mass
    lost = oximeter_missing & (rng.random(steps) < 0.5)
    for col in (SPO2, PR, PI):
        values[lost, col] = np.nan
    extra = np.round(np.clip(map_, 0, 200))
    extra[(np.arange(steps) % 3) != phase] = np.nan
    return Patient(pid, state, start, values, extra)


def _arrest(rng: np.random.Generator, values: np.ndarray[Any, Any], map_: np.ndarray[Any, Any]) -> Any:
    """Overwrite the readings from the arrest onward; return the steps the oximeter may lose.

    The arrest starts 0-14 steps (0-70 min) before the last reading, in one of three rhythms:
    ventricular fibrillation (45 %: the ECG "rate" becomes erratic and high, a PVC storm),
    asystole / bradycardic arrest (30 %: the ECG rate collapses towards 0) or pulseless
    electrical activity (25 %: the ECG keeps an organised rhythm, so only the oximeter shows
    the arrest). In all three there is no effective pulse: the oximeter's pulse rate and
    perfusion index fall to ~0, SpO2 falls 2-5 points per reading, breathing turns agonal
    (0-8/min) and mean pressure collapses.
    """
    steps = len(values)
    onset = steps - 1 - int(rng.integers(0, 15))
    after = np.arange(steps) >= onset
    n = int(after.sum())
    k = np.arange(1, n + 1, dtype=np.float64)
    rhythm = rng.random()
    if rhythm < 0.45:  # ventricular fibrillation
        values[after, HR] = rng.uniform(120, 300, n)
        values[after, PVC] = rng.poisson(rng.uniform(10, 30), n)
    elif rhythm < 0.75:  # asystole / bradycardic arrest
        values[after, HR] = values[onset - 1, HR] * np.exp(-rng.uniform(0.7, 2.0) * k) + rng.uniform(0, 25, n)
        values[after, PVC] = rng.poisson(1.0, n)
    else:  # pulseless electrical activity: the ECG rate drifts down slowly, no pulse
        values[after, HR] = values[onset - 1, HR] - rng.uniform(0, 4) * k + rng.normal(0, 3, n)
    values[after, PR] = np.clip(values[onset - 1, PR] * np.exp(-1.5 * k) + rng.normal(0, 5, n), 0, None)
    values[after, PI] = rng.uniform(0.0, 0.15, n)
    values[after, SPO2] = values[onset - 1, SPO2] - rng.uniform(2, 5) * k + rng.normal(0, 1.5, n)
    values[after, RR] = rng.uniform(0, 8, n)
    map_[after] = rng.uniform(15, 35, n)
    return after


def _round_and_clip(values: np.ndarray[Any, Any]) -> None:
    """Monitor resolution and physical limits (integers for rates and SpO2, 0.01 for PI)."""
    for col in (HR, PR, RR, PVC):
        values[:, col] = np.clip(np.round(values[:, col]), 0, 350)
    values[:, SPO2] = np.clip(np.round(values[:, SPO2]), 40, 100)
    values[:, PI] = np.clip(np.round(values[:, PI], 2), 0.0, 20.0)
    values[:, TEMP] = np.round(values[:, TEMP], 1)


def _rows(patients: Sequence[Patient]) -> list[tuple[int, int, str, float, str]]:
    names = (*SIGNS, EXTRA_SIGN[0])
    ids = (*(SIGN_IDS[s] for s in SIGNS), EXTRA_SIGN[1])
    rows: list[tuple[int, int, str, float, str]] = []
    for p in patients:
        table = np.column_stack([p.values, p.extra])
        stamps = [when.strftime("%Y-%m-%d %H:%M:%S") for when in p.times]
        steps, signs = np.nonzero(~np.isnan(table))
        for t, j, value in zip(steps.tolist(), signs.tolist(), table[steps, signs].tolist(), strict=True):
            rows.append((p.id, ids[j], names[j], value, stamps[t]))
    return rows


def to_columns(patients: Sequence[Patient]) -> dict[str, list[Any]]:
    """The long-format rows as columns of plain lists (pandas ``orient="list"``)."""
    rows = _rows(patients)
    keys = ("idAtencion", "idSigno", "nomSigno", "valor", "fecRegistro")
    return {key: [r[i] for r in rows] for i, key in enumerate(keys)}


def to_record(patients: Sequence[Patient]) -> dict[str, Any]:
    """The columnar record of SPEC §2.4 (pandas ``orient="dict"``): ``{column: {"0": v, ...}}``.

    With a single patient ``idAtencion`` is a scalar, as the original client sent it.
    """
    columns = to_columns(patients)
    record: dict[str, Any] = {
        key: {str(i): v for i, v in enumerate(values)} for key, values in columns.items()
    }
    if len(patients) == 1:
        record["idAtencion"] = patients[0].id
    return record
