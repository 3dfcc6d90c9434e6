"""Fuzzing the live server from its own OpenAPI schema, and hostile JSON numbers.

schemathesis generates requests for every operation of ``/openapi.json`` (all four
reference services mounted) — positive and negative data, a bounded number of examples
per operation and mode, derandomized — and sends them over real HTTP twice: with the
admin key (so admin routes run too) and with a user's bearer token (model routes accept
either here). The check is schemathesis' ``not_a_server_error``: no answer may be a 5xx.
To reach the models rather than 404s, the schema's ``{name}`` parameters are steered
towards the registered model names half of the time.

Then hostile numbers (NaN, Infinity, -Infinity, 1e309, a 5000-digit integer) go to every
route that takes JSON, and finite numbers that overflow inside the temperature model
([1e308, 1e308], 60 x 1e308, +-1.7e308) to every temperature route: each answer is a 4xx
(a batch answers 200 with a 4xx per item), never a 5xx; the raw tensor route may answer
200 only with finite outputs.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.security.conftest import ADMIN, SOAK, record_figure, start_server
from tests.server_process import ADMIN_KEY, ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_EXAMPLES = 100 if SOAK else 15
MODELS = ["temperatura", "cardiaco", "vehiculos", "intrusos"]


@schemathesis.serializer("application/x-amz-json-1.0")
def _amz_json(_: Any, value: Any) -> bytes:
    """The Step Functions API's body (``POST /``, awsJson1_0) is JSON under AWS's media type."""
    return json.dumps(value).encode()


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=timedelta(seconds=15),
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "MLGATE_AUTH__MODEL_ROUTES": "either",
        "MLGATE_MAX_INFLIGHT": "0",
    }
    with start_server(
        tmp_path_factory.mktemp("fuzz"), env=env, services=tuple(MODELS), sleepy=False
    ) as server:
        yield server


@pytest.fixture(scope="module")
def user_token(fuzz_server: ServerProcess) -> str:
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as c:
        assert (
            c.post("/auth/create_user", json={"username": "fuzzer", "password": "fuzz pass 1234"}).status_code
            == 201
        )
        token: str = c.post("/auth/token", data={"username": "fuzzer", "password": "fuzz pass 1234"}).json()[
            "access_token"
        ]
    return token


def _steer_model_names(raw: dict[str, Any]) -> dict[str, Any]:
    """``{name}`` path parameters: a registered model name or any string, half and half."""
    schema = copy.deepcopy(raw)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "{name}" not in path or (method == "post" and path.endswith("/versions")):
                continue  # uploads keep random names: never add versions to the reference models
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") == "name":
                    parameter["schema"] = {"anyOf": [{"enum": MODELS}, {"type": "string"}]}
    return schema


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerProcess) -> Any:
    raw = httpx.get(f"{fuzz_server.url}/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(_steer_model_names(raw))


def _fuzz(schema: Any, server: ServerProcess, headers: dict[str, str]) -> dict[str, Any]:
    """Every operation, positive then negative data; 5xx answers are collected, not raised."""
    errors: list[str] = []
    statuses: dict[str, int] = {}
    sent = operations = unsatisfiable = 0
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            # Negative data needs something with constraints to violate: a body or a query.
            # (Any string is a valid path segment; asking for an invalid one only burns time.)
            negative = len(operation.body) > 0 or len(operation.query) > 0
            for mode in (
                (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if negative else (GenerationMode.POSITIVE,)
            ):

                @FUZZ_SETTINGS
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    nonlocal sent
                    response = case.call(base_url=server.url, session=session, headers=headers, timeout=30)
                    sent += 1
                    statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
                    try:
                        case.validate_response(response, checks=[not_a_server_error], headers=headers)
                    except AssertionError as exc:  # schemathesis' failure groups are AssertionErrors
                        errors.append(f"{case.as_curl_command(headers)}\n  -> {response.status_code}: {exc}")

                try:
                    run()
                except Unsatisfiable:
                    unsatisfiable += 1  # no schema-violating input exists for this operation (no parameters)
    assert not errors, "\n".join(errors[:10])
    return {
        "operations": operations,
        "requests": sent,
        "statuses": dict(sorted(statuses.items())),
        "negative_phases_impossible": unsatisfiable,
    }


def test_fuzz_with_the_admin_key(api_schema: Any, fuzz_server: ServerProcess) -> None:
    figures = _fuzz(api_schema, fuzz_server, {"x-api-key": ADMIN_KEY})
    record_figure("fuzz", auth="admin key", max_examples=MAX_EXAMPLES, server_errors=0, **figures)


def test_fuzz_with_a_user_token(api_schema: Any, fuzz_server: ServerProcess, user_token: str) -> None:
    figures = _fuzz(api_schema, fuzz_server, {"authorization": f"Bearer {user_token}"})
    record_figure("fuzz", auth="user token", max_examples=MAX_EXAMPLES, server_errors=0, **figures)


# -- hostile numbers ----------------------------------------------------------------------------

FIVE_THOUSAND_DIGITS = "9" * 5000
HOSTILE_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e309",
    "-1e309",
    FIVE_THOUSAND_DIGITS,
    "-" + FIVE_THOUSAND_DIGITS,
]


def _json_routes(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path) of every operation with a JSON body, path parameters filled in."""
    fill = {
        "{name}": "temperatura",
        "{version}": "1",
        "{alias}": "fuzzalias",
        "{key_id}": "deadbeef",
        "{plan}": "nope",
    }
    routes = [("PUT", "/v1/models/temperatura/aliases/fuzzalias")]  # takes JSON; its schema shows no body
    for path, operations in raw["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                for placeholder, value in fill.items():
                    path = path.replace(placeholder, value)
                routes.append((method.upper(), path))
    return routes


#: JSON fields the routes read (sign-up, login, plans, keys, aliases).
FIELDS = ("username", "password", "name", "rate", "burst", "quota_limit", "quota_offset", "version", "plan")


def _tensor(datatype: str, data: str) -> str:
    tensor = f'{{"name": "temperaturas", "shape": [1, 60], "datatype": "{datatype}", "data": [{data}]}}'
    return f'{{"inputs": [{tensor}]}}'


def _bodies() -> list[str]:
    bodies = []
    for number in HOSTILE_NUMBERS:
        bodies += [
            number,
            f"[{number}]",
            f'{{"temperaturas": [{", ".join([number] * 60)}]}}',
            f'{{"inputs": [{{"temperaturas": [{number}]}}]}}',
            _tensor("FP64", ", ".join([number] * 60)),
            "{" + ", ".join(f'"{field}": {number}' for field in FIELDS) + "}",
        ]
    return bodies


def _overflowing_bodies() -> list[tuple[str, bool]]:
    """Finite numbers that overflow inside the temperature model: (body, raw tensor).

    The temperature routes validate the input's domain (60 readings, -100..100 °C), so all
    of these are 4xx there. The Open Inference Protocol route hands raw tensors to the
    model without that validation: a finite answer is a legitimate 200 there, but never a
    non-finite one (JSON has no inf/NaN; it would read null) — that must be a 4xx.
    """
    big = ", ".join(["1e308"] * 60)
    alternating = ", ".join(["1.7e308", "-1.7e308"] * 30)
    return [
        ("[1e308, 1e308]", False),
        ('{"temperaturas": [1e308, 1e308]}', False),
        (f'{{"temperaturas": [{big}]}}', False),
        (f'{{"inputs": [{{"temperaturas": [{big}]}}]}}', False),
        ('{"inputs": [[1e308, 1e308]]}', False),
        ('{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1e308, 1e308]}]}', False),
        (_tensor("FP64", big), True),
        (_tensor("FP64", alternating), True),
        (_tensor("FP32", big), True),
        (_tensor("INT64", ", ".join(["18446744073709551616"] * 60)), True),
    ]


def _finite_outputs(response: httpx.Response) -> bool:
    outputs = response.json().get("outputs", [])
    return bool(outputs) and all(
        isinstance(v, int | float) and math.isfinite(v) for o in outputs for v in o["data"]
    )


def test_hostile_json_numbers_are_4xx_on_every_json_route(fuzz_server: ServerProcess) -> None:
    raw = httpx.get(f"{fuzz_server.url}/openapi.json", timeout=30).json()
    routes = _json_routes(raw)
    assert len(routes) >= 15, routes
    statuses: dict[int, int] = {}
    failures = []
    sent = finite_tensor_answers = 0
    with httpx.Client(base_url=fuzz_server.url, headers=ADMIN, timeout=30) as c:
        for method, path in routes:
            model_route = "/models/temperatura/" in path or path == "/prod"
            cases = [(b, False) for b in _bodies()] + (_overflowing_bodies() if model_route else [])
            for body, raw_tensor in cases:
                r = c.request(method, path, content=body, headers={"content-type": "application/json"})
                sent += 1
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200 and path.endswith("/batch"):
                    items = r.json()["results"]
                    if all(400 <= item.get("error", {}).get("status", 0) < 500 for item in items):
                        continue
                if r.status_code == 200 and raw_tensor and path.endswith("/infer") and _finite_outputs(r):
                    finite_tensor_answers += 1
                    continue
                if not 400 <= r.status_code < 500:
                    failures.append(f"{method} {path} {body[:100]} -> {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures[:10])
    record_figure(
        "hostile_numbers",
        routes=len(routes),
        requests=sent,
        statuses=statuses,
        server_errors=0,
        finite_raw_tensor_answers=finite_tensor_answers,
    )
