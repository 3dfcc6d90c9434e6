"""Drift statistics, captured-record features and the drift monitor (in process, SQLite + files)."""

from __future__ import annotations

import base64
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sqlalchemy import select

from mlgate.db.tables import drift_latest
from mlgate.errors import Conflict, InvalidInput, Unprocessable
from mlgate.monitoring.baseline import build_baseline
from mlgate.monitoring.drift import Thresholds, band, compare, constraint_violations, psi
from mlgate.monitoring.features import FeatureFrame, extract, input_rows, output_rows, payloads
from mlgate.monitoring.monitor import DriftMonitor, parse_instant, read_captured
from mlgate.repository import Repository
from mlgate.settings import Settings
from mlgate.store import FileArtifactStore
from mlgate.telemetry.metrics import Metrics
from mlgate.types import Manifest

T = Thresholds(psi_warn=0.1, psi_alert=0.25, p_value=0.01, min_rows=50)


def record(
    payload: Any, answer: Any = None, *, when: datetime | None = None, b64: bool = False
) -> dict[str, Any]:
    when = when or datetime.now(UTC)
    if isinstance(payload, bytes):
        inp = {
            "observedContentType": "image/png",
            "mode": "INPUT",
            "data": base64.b64encode(payload).decode(),
            "encoding": "BASE64",
        }
    elif b64:
        inp = {
            "observedContentType": "application/json",
            "mode": "INPUT",
            "data": base64.b64encode(orjson.dumps(payload)).decode(),
            "encoding": "BASE64",
        }
    else:
        inp = {
            "observedContentType": "application/json",
            "mode": "INPUT",
            "data": orjson.dumps(payload).decode(),
            "encoding": "JSON",
        }
    data: dict[str, Any] = {"endpointInput": inp}
    if answer is not None:
        data["endpointOutput"] = {
            "observedContentType": "application/json",
            "mode": "OUTPUT",
            "data": orjson.dumps(answer).decode(),
            "encoding": "JSON",
        }
    return {
        "captureData": data,
        "eventMetadata": {"eventId": "x", "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        "eventVersion": "0",
    }


def _baseline(rng: np.random.Generator, n_features: int = 3, n: int = 5000) -> dict[str, Any]:
    names = [f"f{i}" for i in range(n_features)]
    columns: dict[str, np.ndarray] = {name: rng.normal(0, 1, n) for name in names}
    columns["output:value"] = rng.normal(5, 1, n)
    return build_baseline(
        columns,
        feature_names=names,
        output_names=["output:value"],
        input_spec={"type": "vector"},
        output_spec={"kind": "regressor", "value": "y"},
    )


def _frame(columns: dict[str, np.ndarray], n: int) -> FeatureFrame:
    return FeatureFrame(columns, n, n, n)


# -- statistics ---------------------------------------------------------------------------------


def test_psi_and_bands() -> None:
    same = np.full(10, 0.1)
    assert psi(same, same) == 0.0
    empty_bin = np.array([0.0, 0.5, 0.5])
    assert np.isfinite(psi(empty_bin, np.array([1 / 3] * 3)))
    assert band(0.05, T) == "ok" and band(0.1, T) == "moderate" and band(0.25, T) == "drift"


def test_same_distribution_is_ok_and_a_shift_is_drift() -> None:
    rng = np.random.default_rng(0)
    base = _baseline(rng)
    same = {f"f{i}": rng.normal(0, 1, 2000) for i in range(3)} | {"output:value": rng.normal(5, 1, 2000)}
    report = compare(base, _frame(same, 2000), T)
    assert report["verdict"] == "ok"
    assert all(f["psi"] < 0.1 for f in report["features"])
    assert all(f["ks_p_value"] > 1e-4 for f in report["features"])
    shifted = dict(same, f1=rng.normal(1.5, 1, 2000), **{"output:value": rng.normal(8, 1, 2000)})
    report = compare(base, _frame(shifted, 2000), T, model="m", version=1)
    by = {f["name"]: f for f in report["features"]}
    assert by["f1"]["band"] == "drift" and by["f1"]["ks"] > 0.4 and by["f1"]["ks_p_value"] < 1e-10
    assert by["f0"]["band"] == "ok"
    assert report["input_verdict"] == "drift" and report["output_verdict"] == "drift"
    assert set(report["drifted"]) == {"f1", "output:value"}
    violations = constraint_violations(report)["violations"]
    assert {v["feature_name"] for v in violations} == {"f1", "output:value"}
    assert all(v["constraint_check_type"] == "baseline_drift_check" for v in violations)


def test_too_few_values_are_insufficient() -> None:
    rng = np.random.default_rng(1)
    base = _baseline(rng)
    report = compare(base, _frame({"f0": rng.normal(0, 1, 10)}, 10), T)
    assert report["verdict"] == "insufficient_data"
    assert {f["band"] for f in report["features"]} == {"insufficient"}


def test_categorical_chi2_and_class_mix() -> None:
    rng = np.random.default_rng(2)
    ref = np.array(rng.choice(["a", "b", "c"], 3000, p=[0.6, 0.3, 0.1]), dtype=object)
    base = build_baseline({"output:class": ref}, feature_names=[], output_names=["output:class"])
    same = np.array(rng.choice(["a", "b", "c"], 1000, p=[0.6, 0.3, 0.1]), dtype=object)
    ok = compare(base, _frame({"output:class": same}, 1000), T)["features"][0]
    assert ok["band"] == "ok" and ok["chi2_p_value"] > 0.001
    moved = np.array(rng.choice(["a", "b", "zzz"], 1000, p=[0.1, 0.1, 0.8]), dtype=object)
    bad = compare(base, _frame({"output:class": moved}, 1000), T)["features"][0]
    assert bad["band"] == "drift" and bad["chi2_p_value"] < 1e-10
    assert bad["shares"]["(other)"] == pytest.approx(0.8, abs=0.05)


def test_sixty_features_by_ten_thousand_rows() -> None:
    """Correctness at the bench's size (bench/drift_speed.py times it)."""
    rng = np.random.default_rng(3)
    base = _baseline(rng, n_features=60, n=20_000)
    columns = {f"f{i}": rng.normal(0.0 if i % 2 else 1.0, 1, 10_000) for i in range(60)}
    started = time.perf_counter()
    report = compare(base, _frame(columns, 10_000), T)
    elapsed = time.perf_counter() - started
    drifted = {f["name"] for f in report["features"] if f["band"] == "drift"}
    assert drifted == {f"f{i}" for i in range(0, 60, 2)}
    assert elapsed < 30  # generous: the bench measures the real figure


# -- features -----------------------------------------------------------------------------------


def test_payloads_decode_json_and_base64() -> None:
    assert payloads(record({"a": 1}, {"y": 2})) == ({"a": 1}, {"y": 2})
    assert payloads(record({"a": 1}, b64=True))[0] == {"a": 1}
    assert payloads(record(b"\x89PNG..."))[0] == b"\x89PNG..."
    assert payloads({"nope": 1}) == (None, None)


def test_input_shapes() -> None:
    names = ["lag_3", "lag_2", "lag_1"]
    window = {"type": "window", "key": "temperaturas"}
    assert input_rows({"temperaturas": [1, 2, 3]}, window, names) == [{"lag_3": 1, "lag_2": 2, "lag_1": 3}]
    assert input_rows({"body": {"temperaturas": [1, 2, 3]}}, window, names)[0]["lag_1"] == 3
    assert input_rows({"body": '{"temperaturas": [1, 2, 3]}'}, window, names)[0]["lag_1"] == 3
    assert input_rows({"temperaturas": [1, 2]}, window, names) == []
    assert input_rows([[1, 2, 3], [4, 5, 6]], {"type": "vector"}, ["f0", "f1", "f2"])[1] == {
        "f0": 4,
        "f1": 5,
        "f2": 6,
    }
    records = {"type": "records"}
    assert input_rows({"a": 1, "b": "x"}, records, []) == [{"a": 1, "b": "x"}]
    assert input_rows([{"a": 1}, {"a": 2}], records, []) == [{"a": 1}, {"a": 2}]
    assert input_rows({"a": [1, 2], "b": ["x", "y"]}, records, []) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    long = {"type": "long", "id": "idAtencion", "time": "fecRegistro", "name": "nomSigno", "value": "valor"}
    vitals = {
        "idAtencion": 7,
        "nomSigno": {"0": "HR", "1": "SPO2", "2": "HR", "3": "HR"},
        "valor": {"0": 80.0, "1": 97.0, "2": 90.0, "3": 100.0},
        "fecRegistro": {"0": "t1", "1": "t1", "2": "t2", "3": "t2"},
    }
    assert input_rows(vitals, long, []) == [{"HR": 80.0, "SPO2": 97.0}, {"HR": 95.0}]


def test_output_shapes() -> None:
    assert output_rows(
        {"statusCode": 200, "body": {"prediccion": 15.2}}, {"kind": "regressor", "value": "prediccion"}
    ) == [{"output:value": 15.2}]
    assert output_rows([1.0, 2.0], {"kind": "regressor"}) == [{"output:value": 1.0}, {"output:value": 2.0}]
    cardiac = {"kind": "classifier", "label": "State", "scores": "inferences"}
    rows = output_rows([{"State": "Sano", "inferences": {"Sano": 0.9, "Shock": 0.1}}] * 2, cardiac)
    assert rows[0] == {
        "output:score.Sano": 0.9,
        "output:score.Shock": 0.1,
        "output:class": "Sano",
        "output:confidence": 0.9,
    }
    assert len(rows) == 2
    vehicle = {"kind": "classifier", "label": "top.0.clase", "confidence": "top.0.probabilidad"}
    [row] = output_rows({"inferences": [0.1, 0.8], "top": [{"clase": "moped", "probabilidad": 0.7}]}, vehicle)
    assert row == {"output:class": "moped", "output:confidence": 0.7}
    detector = {"kind": "detector", "detections": "objetos", "confidence": "confianza", "label": "clase"}
    [det] = output_rows(
        {"body": {"objetos": [{"clase": "dog", "confianza": 0.4}, {"clase": "cat", "confianza": 0.9}]}},
        detector,
    )
    assert det == {"output:count": 2.0, "output:max_confidence": 0.9, "output:top_class": "cat"}
    [none] = output_rows({"objetos": []}, detector)
    assert none["output:top_class"] == "(none)"


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


def test_image_features_from_raw_and_base64_json() -> None:
    pytest.importorskip("PIL")
    red = np.zeros((40, 80, 3), np.uint8)
    red[..., 0] = 200
    png = _png(red)
    base = {
        "input": {"type": "image", "key": "image"},
        "feature_names": ["width", "aspect", "mean_r", "mean_g"],
        "features": {},
    }
    frame = extract(
        [
            record(png),
            record({"body": {"image": base64.b64encode(png).decode()}}),
            record({"image": "not base64!"}),
        ],
        base,
    )
    assert frame.n_rows == 2 and frame.skipped["input"] == 1
    assert list(frame.columns["width"]) == [80.0, 80.0]
    assert frame.columns["aspect"][0] == 2.0
    assert frame.columns["mean_r"][0] == pytest.approx(200.0) and frame.columns["mean_g"][0] == 0.0


def test_parse_instant() -> None:
    now = datetime(2026, 1, 2, 12, tzinfo=UTC)
    assert parse_instant("24h", now=now, default=now) == now - timedelta(hours=24)
    assert parse_instant(None, now=now, default=now) == now
    assert parse_instant("2026-01-01T00:00:00Z", now=now, default=now) == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="bad time"):
        parse_instant("yesterday", now=now, default=now)
    for value in ("99999999999d", "\u00b2h", "0001-01-01T00:00:00+05:00", "9" * 400 + "d"):
        with pytest.raises(InvalidInput):  # a 400, never an OverflowError / ValueError (a 500)
            parse_instant(value, now=now, default=now)


# -- the monitor --------------------------------------------------------------------------------


@pytest.fixture
def monitor(tmp_path: Path) -> DriftMonitor:
    settings = Settings(data_dir=tmp_path)
    settings.monitor.min_rows = 50
    repository = Repository.open(f"sqlite:///{tmp_path / 'm.db'}")
    store = FileArtifactStore(tmp_path / "store")
    repository.ensure_model("vec")
    repository.add_version("vec", Manifest(runtime="onnx", artifact="m.onnx"))
    return DriftMonitor(
        settings=settings, store=store, engine=repository.engine, repository=repository, metrics=Metrics()
    )


def _capture(
    store: FileArtifactStore, model: str, version: int, records: list[dict[str, Any]], when: datetime
) -> None:
    key = f"capture/{model}/{version}/{when:%Y/%m/%d/%H}/part-{len(store.list())}.jsonl"
    store.put_bytes(key, b"\n".join(orjson.dumps(r) for r in records) + b"\n")


def test_monitor_evaluates_stores_reports_rows_and_gauges(monitor: DriftMonitor) -> None:
    rng = np.random.default_rng(5)
    now = datetime.now(UTC)
    with pytest.raises(Conflict, match="no baseline"):
        monitor.evaluate("vec", 1, now - timedelta(hours=1), now)
    monitor.save_baseline("vec", 1, _baseline(rng))
    assert monitor.store.exists("monitoring/vec/1/statistics.json")
    assert monitor.store.exists("monitoring/vec/1/constraints.json")
    with pytest.raises(Unprocessable, match="too few captured rows"):
        monitor.evaluate("vec", 1, now - timedelta(hours=1), now)

    rows = [[float(rng.normal(0, 1)), float(rng.normal(3, 1)), float(rng.normal(0, 1))] for _ in range(400)]
    _capture(
        monitor.store, "vec", 1, [record(r, {"y": float(rng.normal(5, 1))}, when=now) for r in rows], now
    )
    old = now - timedelta(days=2)
    _capture(monitor.store, "vec", 1, [record([9.0, 9.0, 9.0], {"y": 0}, when=old)] * 100, old)
    assert (
        len(read_captured(monitor.store, "vec", 1, now - timedelta(hours=1), now + timedelta(seconds=1)))
        == 400
    )

    report = monitor.evaluate("vec", None, now - timedelta(hours=1), now + timedelta(seconds=1))
    by = {f["name"]: f for f in report["features"]}
    assert report["n_rows"] == 400 and report["n_outputs"] == 400
    assert by["f1"]["band"] == "drift" and by["f0"]["band"] == "ok" and by["output:value"]["band"] == "ok"
    assert monitor.latest_report("vec", 1) == report
    keys = monitor.store.list("monitoring/vec/1/reports/")
    assert any(k.endswith("/constraint_violations.json") for k in keys)
    [stats_key] = [k for k in keys if k.endswith("/statistics.json")]
    window_stats = orjson.loads(monitor.store.get_bytes(stats_key))
    assert window_stats["dataset"]["item_count"] == 400
    assert {f["name"] for f in window_stats["features"]} == {"f0", "f1", "f2", "output:value"}

    with monitor.engine.connect() as conn:
        stored = {(r.feature, r.metric): r.value for r in conn.execute(select(drift_latest)).all()}
    assert stored[("f1", "psi")] == by["f1"]["psi"]
    assert ("f1", "ks") in stored and ("__output__", "psi") in stored
    text = monitor.metrics.render().decode()
    assert 'mlgate_drift_psi{feature="f1",model="vec",version="1"}' in text
    assert 'mlgate_drift_ks{feature="f0",model="vec",version="1"}' in text

    # The schedule finds the version with captured data in its window.
    assert monitor.captured_versions(now - timedelta(hours=1), now + timedelta(hours=1)) == [("vec", 1)]
    assert len(monitor.run_scheduled(now + timedelta(seconds=1))) == 1


def test_baseline_from_capture_and_from_rows(monitor: DriftMonitor) -> None:
    rng = np.random.default_rng(6)
    now = datetime.now(UTC)
    recs = [
        record({"temperaturas": [float(v) for v in rng.normal(10, 2, 4)]}, {"prediccion": 1.0}, when=now)
        for _ in range(100)
    ]
    _capture(monitor.store, "vec", 1, recs, now)
    doc = monitor.build_baseline_from_capture("vec", 1, now - timedelta(hours=1), now + timedelta(seconds=1))
    assert doc["input"] == {"type": "window", "key": "temperaturas"}
    assert doc["feature_names"] == ["f0", "f1", "f2", "f3"]
    assert doc["output"] == {"kind": "regressor", "value": "prediccion"}
    assert doc["output_names"] == ["output:value"]
    monitor.save_baseline("vec", 1, doc)
    report = monitor.evaluate("vec", 1, now - timedelta(hours=1), now + timedelta(seconds=1))
    assert report["verdict"] == "ok"

    table = [{"f0": float(v), "f1": 1.0, "f2": 2.0, "f3": 3.0} for v in rng.normal(0, 1, 100)]
    from_rows = monitor.baseline_from_rows("vec", 1, table)
    assert from_rows["input"] == {"type": "window", "key": "temperaturas"}  # the version's spec kept
    with pytest.raises(Exception, match="lack feature"):
        monitor.baseline_from_rows("vec", 1, [{"x": 1.0}])


def test_cardiac_reference_baseline_sees_a_change_of_patient_mix() -> None:
    """The committed cardiaco baseline against fresh synthetic patients sent as the original
    long-format records: the same mix is ok; only healthy patients drift on the vital signs,
    not on height and weight (the population is the same)."""
    import json

    from mlgate.monitoring.baseline import check_baseline
    from mlgate_services.cardiaco import generator
    from mlgate_services.cardiaco.recipe import ARTIFACT_DIR

    baseline = check_baseline(json.loads((ARTIFACT_DIR / "baseline.json").read_text(encoding="utf-8")))

    def report(states: tuple[str, ...]) -> dict[str, Any]:
        patients = generator.generate(120, seed=99, states=states, first_id=5_000_000)
        records = [record(generator.to_record(patients[i : i + 4])) for i in range(0, len(patients), 4)]
        return compare(baseline, extract(records, baseline), T)

    same = report(generator.STATES)
    assert same["input_verdict"] == "ok"
    healthy = {f["name"]: f for f in report(("Sano",))["features"]}
    assert healthy["MDC_ECG_HEART_RATE"]["band"] == "drift"
    assert healthy["MDC_LEN_BODY_ACTUAL"]["band"] != "drift"


def test_csv_capture_is_read_as_number_rows() -> None:
    rec = {
        "captureData": {
            "endpointInput": {"observedContentType": "text/csv", "data": "1,2,3\n4,5,6", "encoding": "CSV"}
        }
    }
    assert payloads(rec)[0] == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert input_rows(payloads(rec)[0], {"type": "vector"}, ["a", "b", "c"])[1] == {
        "a": 4.0,
        "b": 5.0,
        "c": 6.0,
    }


def test_schedule_evaluates_under_the_lease_and_stops(monitor: DriftMonitor) -> None:
    import asyncio

    rng = np.random.default_rng(8)
    now = datetime.now(UTC)
    monitor.save_baseline("vec", 1, _baseline(rng))
    rows = [[float(v) for v in rng.normal(0, 1, 3)] for _ in range(100)]
    _capture(monitor.store, "vec", 1, [record(r, {"y": 5.0}, when=now) for r in rows], now)
    monitor.settings.monitor.interval_s = 0.05

    async def main() -> None:
        await monitor.start()
        try:
            for _ in range(200):
                if monitor.store.list("monitoring/vec/1/reports/"):
                    break
                await asyncio.sleep(0.05)
        finally:
            await monitor.stop()

    asyncio.run(main())
    assert monitor.latest_report("vec", 1) is not None
    assert monitor.lease.holder_now() is None  # released on stop


def test_native_answers_are_unwrapped_for_output_features() -> None:
    spec = {"kind": "regressor", "value": "prediccion"}
    answer = {
        "model_name": "temperatura",
        "model_version": 1,
        "outputs": {"prediccion": 20.15, "unidad": "C"},
    }
    assert output_rows(answer, spec) == [{"output:value": 20.15}]
    batch = {
        "model_name": "temperatura",
        "model_version": 1,
        "results": [
            {"output": {"prediccion": 1.0}},
            {"error": {"code": "invalid_input"}},
            {"output": {"prediccion": 2.0}},
        ],
    }
    assert output_rows(batch, spec) == [{"output:value": 1.0}, {"output:value": 2.0}]
