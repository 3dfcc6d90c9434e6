"""End to end over real HTTP against a real ``mlgate serve`` process: the cardiac state service."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from mlgate_services.cardiaco import generator
from mlgate_services.cardiaco.processing import STATES
from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e

NATIVE = "/v1/models/cardiaco/predict"
PATIENTS = generator.generate(12, seed=2024, first_id=1_408_826)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # The native route takes the harness's API key (server.client()); the original routes
    # declare their own auth ("user" for /predict and /, public for /home).
    with run_server(tmp_path_factory.mktemp("e2e-cardiaco")) as s:
        yield s


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _check_state(obj: dict[str, Any], patient_id: int) -> None:
    """The exact SPEC §2.4 object: idAtencion, inferences (4 states, 2 decimals), State."""
    assert list(obj) == ["idAtencion", "inferences", "State"]
    assert obj["idAtencion"] == patient_id
    assert list(obj["inferences"]) == list(STATES)
    for p in obj["inferences"].values():
        assert isinstance(p, int | float) and 0 <= p <= 1 and round(p, 2) == p
    assert obj["State"] in STATES
    assert obj["inferences"][obj["State"]] == max(obj["inferences"].values())


def test_native_predict_one_patient_spec_shape(client: httpx.Client) -> None:
    patient = PATIENTS[0]
    record = generator.to_record([patient])
    assert isinstance(record["idAtencion"], int) and record["idAtencion"] == 1_408_826
    assert record["fecRegistro"]["0"].count(":") == 2 and set(record["idSigno"]) == set(record["valor"])
    r = client.post(NATIVE, json=record)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "cardiaco" and body["model_version"] == 1
    _check_state(body["outputs"], patient.id)


def test_native_predict_two_patients_answers_a_list(client: httpx.Client) -> None:
    two = PATIENTS[1:3]
    r = client.post(NATIVE, json=generator.to_record(two))
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert isinstance(outputs, list) and len(outputs) == 2
    for obj, patient in zip(outputs, two, strict=True):
        _check_state(obj, patient.id)
    # The same patient alone gets the same answer.
    alone = client.post(NATIVE, json=generator.to_record(two[1:])).json()["outputs"]
    assert alone == outputs[1]


def test_concurrent_requests_keep_their_patients(client: httpx.Client, server: ServerProcess) -> None:
    groups = [PATIENTS[i : i + n] for i, n in ((0, 1), (1, 2), (3, 3), (6, 1), (7, 2), (9, 3))] * 2

    def call(group: list[generator.Patient]) -> tuple[list[int], Any]:
        with server.client() as c:
            r = c.post(NATIVE, json=generator.to_record(group))
            assert r.status_code == 200, r.text
            return [p.id for p in group], r.json()["outputs"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, groups))
    for ids, outputs in results:
        answers = outputs if isinstance(outputs, list) else [outputs]
        assert [a["idAtencion"] for a in answers] == ids


def test_model_recognises_synthetic_states(client: httpx.Client) -> None:
    outputs = client.post(NATIVE, json=generator.to_record(PATIENTS)).json()["outputs"]
    correct = sum(o["State"] == p.state for o, p in zip(outputs, PATIENTS, strict=True))
    assert correct >= 9  # ~93 % held-out accuracy; 12 patients


def test_home(client: httpx.Client) -> None:
    r = client.get("/home")
    assert r.status_code == 200, r.text
    assert r.json() == {"health_check": "OK", "model_version": "cardiaco v1"}


def test_too_few_readings_is_4xx(client: httpx.Client) -> None:
    p = PATIENTS[0]
    short = generator.Patient(p.id, p.state, p.start, p.values[:12], p.extra[:12])
    r = client.post(NATIVE, json=generator.to_record([short]))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "unprocessable"
    assert "too few readings" in error["message"] and "1408826 has 12" in error["message"]


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"fecRegistro": "12/07/2024"}, 400, "malformed fecRegistro"),
        ({"nomSigno": "MDC_UNKNOWN"}, 422, "none of the readings"),
        ({"valor": "82"}, 400, "only numbers"),
    ],
)
def test_bad_records_are_4xx(client: httpx.Client, change: dict[str, str], status: int, message: str) -> None:
    record = generator.to_record(PATIENTS[:1])
    for column, value in change.items():
        record[column] = dict.fromkeys(record[column], value)
    r = client.post(NATIVE, json=record)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_original_user_flow(client: httpx.Client) -> None:
    # Without a token the original routes answer FastAPI's 401.
    anonymous = client.get("/")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"detail": "Authentication Failed"}
    record = generator.to_record(PATIENTS[:1])
    assert client.post("/predict", json=record).status_code == 401

    created = client.post(
        "/auth/create_user",
        json={"username": "cardio-e2e", "password": "Latido-Sinusal-2024!"},
        headers={"x-api-key": ADMIN_KEY},
    )
    assert created.status_code == 201, created.text
    token = client.post("/auth/token", data={"username": "cardio-e2e", "password": "Latido-Sinusal-2024!"})
    assert token.status_code == 200, token.text
    assert token.json()["token_type"] == "bearer"
    bearer = {"authorization": f"Bearer {token.json()['access_token']}"}

    me = client.get("/", headers=bearer)
    assert me.status_code == 200, me.text
    assert me.json()["User"]["username"] == "cardio-e2e"

    r = client.post("/predict", json=record, headers=bearer)
    assert r.status_code == 200, r.text
    _check_state(r.json(), PATIENTS[0].id)  # the bare object, as the original answered
    native = client.post(NATIVE, json=record).json()["outputs"]
    assert r.json() == native

    two = client.post("/predict", json=generator.to_record(PATIENTS[:2]), headers=bearer)
    assert [o["idAtencion"] for o in two.json()] == [p.id for p in PATIENTS[:2]]
    short = generator.Patient(
        PATIENTS[0].id, "Sano", PATIENTS[0].start, PATIENTS[0].values[:5], PATIENTS[0].extra[:5]
    )
    bad = client.post("/predict", json=generator.to_record([short]), headers=bearer)
    assert bad.status_code == 422
    assert set(bad.json()) == {"detail"} and "too few readings" in bad.json()["detail"]
