"""End to end over real HTTP against a real ``mlgate serve`` process: the temperature service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e

# The seed client's payload: 60 hourly readings, cooling from 22.1 °C to 16.2 °C.
SEED = [round(22.1 - i * (22.1 - 16.2) / 59, 1) for i in range(60)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("e2e-temp")) as s:
        yield s


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def test_seed_payload_at_original_route(client: httpx.Client) -> None:
    r = client.post("/prod", json={"temperaturas": SEED})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"statusCode", "body"}
    assert body["statusCode"] == 200
    assert set(body["body"]) == {"prediccion", "unidad"}
    assert body["body"]["unidad"] == "Celsius"
    pred = body["body"]["prediccion"]
    assert isinstance(pred, float)
    assert round(pred, 2) == pred
    assert 10 < pred < 25  # a cooling evening continues near the last reading


def test_wrapped_body_accepted(client: httpx.Client) -> None:
    plain = client.post("/prod", json={"temperaturas": SEED}).json()
    wrapped = client.post("/prod", json={"body": {"temperaturas": SEED}}).json()
    as_string = client.post("/prod", json={"body": json.dumps({"temperaturas": SEED})}).json()
    assert plain == wrapped == as_string


def test_59_values_exact_400(client: httpx.Client) -> None:
    r = client.post("/prod", json={"temperaturas": SEED[:59]})
    assert r.status_code == 400
    assert r.json() == {
        "statusCode": 400,
        "body": {"error": "Se requieren exactamente 60 valores de temperatura"},
    }


@pytest.mark.parametrize(
    "raw",
    [
        '{"temperaturas": [' + ",".join(["NaN"] * 60) + "]}",
        '{"temperaturas": [' + ",".join(["Infinity"] * 60) + "]}",
        '{"temperaturas": [' + ",".join(["1e309"] * 60) + "]}",
        '{"temperaturas": [' + ",".join(['"a"'] * 60) + "]}",
        '{"temperaturas": [' + ",".join(["true"] * 60) + "]}",
        '{"temperaturas": [' + ",".join(["1" + "0" * 5000] * 60) + "]}",
        '{"temperaturas": "hola"}',
        "not json",
        "",
    ],
)
def test_hostile_input_is_4xx_with_envelope(client: httpx.Client, raw: str) -> None:
    for route in ("/prod", "/v1/models/temperatura/predict"):
        r = client.post(route, content=raw, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (route, r.status_code, r.text)
        body = r.json()
        if route == "/prod":
            assert body["statusCode"] == r.status_code
            assert body["body"]["error"]
        else:
            assert body["error"]["message"]


def test_overflowing_output_is_4xx(client: httpx.Client) -> None:
    r = client.post("/prod", json={"temperaturas": [1e308] * 60})
    assert 400 <= r.status_code < 500, r.text


def test_native_batch_and_v2(client: httpx.Client) -> None:
    native = client.post("/v1/models/temperatura/predict", json={"temperaturas": SEED}).json()
    assert native["model_name"] == "temperatura"
    assert native["model_version"] == 1
    original = client.post("/prod", json={"temperaturas": SEED}).json()["body"]
    assert native["outputs"] == original

    batch = client.post(
        "/v1/models/temperatura/batch",
        json={"inputs": [{"temperaturas": SEED}, {"temperaturas": [1]}, {"temperaturas": SEED[::-1]}]},
    ).json()
    results = batch["results"]
    assert results[0]["output"] == original
    assert results[1]["error"]["status"] == 400
    assert "output" in results[2]

    v2 = client.post(
        "/v2/models/temperatura/infer",
        json={
            "id": "r1",
            "inputs": [
                {"name": "temperaturas", "shape": [2, 60], "datatype": "FP64", "data": SEED + SEED[::-1]}
            ],
        },
    )
    assert v2.status_code == 200, v2.text
    out = v2.json()
    assert out["id"] == "r1"
    assert out["outputs"][0]["shape"][0] == 2
    assert round(out["outputs"][0]["data"][0], 2) == original["prediccion"]


def test_v2_health_and_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "mlgate"
    meta = client.get("/v2/models/temperatura").json()
    assert meta["name"] == "temperatura"
    assert meta["platform"] == "onnx"
    assert client.get("/v2/models/temperatura/versions/1/ready").json() == {
        "name": "temperatura",
        "ready": True,
    }
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_models_listing(client: httpx.Client) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["temperatura"]["aliases"] == {"production": 1}
    assert models["temperatura"]["loaded_versions"] == [1]
    detail = client.get("/v1/models/temperatura").json()
    assert detail["versions"][0]["metrics"]["mae"] < detail["versions"][0]["metrics"]["naive_mae"]
    assert client.get("/v1/models/nope").status_code == 404


def test_body_limit_413(client: httpx.Client) -> None:
    r = client.post("/prod", content=b"[" + b"1," * (3 * 1024 * 1024) + b"1]")
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


def test_admin_routes_never_open(server: ServerProcess) -> None:
    with server.client(key=False) as client:
        r = client.put("/v1/models/temperatura/aliases/staging", json={"version": 1})
        assert r.status_code == 401
        r = client.put(
            "/v1/models/temperatura/aliases/staging", json={"version": 1}, headers={"x-api-key": "mlg_nope"}
        )
        assert r.status_code == 403
        ok = client.put(
            "/v1/models/temperatura/aliases/staging", json={"version": 1}, headers={"x-api-key": ADMIN_KEY}
        )
        assert ok.status_code == 200


def test_metrics_and_access_log(server: ServerProcess, client: httpx.Client) -> None:
    client.post("/prod", json={"temperaturas": SEED}, headers={"x-request-id": "e2e-metrics-1"})
    text = client.get("/metrics").text
    assert 'mlgate_model_invocations_total{model="temperatura",version="1"}' in text
    assert "mlgate_model_latency_seconds_bucket" in text
    assert "mlgate_model_batch_size_bucket" in text
    assert "mlgate_model_load_seconds" in text
    assert "mlgate_model_cold_starts_total" in text
    assert "mlgate_model_queue_depth" in text
    log_file = Path(server.data_dir) / "logs" / "access.log"
    # The log is written by a background thread: poll briefly.
    for _ in range(50):
        lines = (
            [json.loads(x) for x in log_file.read_text().splitlines() if x.strip()]
            if log_file.exists()
            else []
        )
        hit = [x for x in lines if x["request_id"] == "e2e-metrics-1"]
        if hit:
            break
        import time

        time.sleep(0.1)
    assert hit, "access log line missing"
    line = hit[0]
    assert line["url"] == "/prod"
    assert line["method"] == "POST"
    assert line["status"] == 200
    assert line["model"] == "temperatura"
    assert line["version"] == "1"
    assert line["duration_ms"] >= 0
    assert "date" in line
