"""``mlgate.aws_lambda.handler`` driven in-process with realistic API Gateway proxy events.

REST API (v1) events as API Gateway sends them for a ``/{proxy+}`` resource on stage ``prod``
(``path`` without the stage, ``multiValueHeaders``, ``requestContext.identity.apiKey``, a
base64 body) and HTTP API (v2) events (``rawPath`` with a named stage). The application runs
on a temp data dir: SQLite registry, local store, the reference temperatura model.
The same handler in a real Lambda runtime (the Runtime Interface Emulator): tests/e2e/test_lambda_rie_e2e.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlgate import aws_lambda

ADMIN = "mlg_lambdadm_" + "q" * 40
SEED = [20.0 + (i % 24) / 4 for i in range(60)]
GATEWAY_KEY = "apigw-key-0123456789abcdefghij"


class Context:
    function_name = "mlgate"
    memory_limit_in_mb = 1024
    aws_request_id = "c0ffee00-0000-4000-8000-000000000001"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def rest_event(
    method: str,
    path: str,
    body: Any = None,
    *,
    api_key: str | None = GATEWAY_KEY,
    header_key: str | None = None,
) -> dict[str, Any]:
    """A REST API (v1) proxy event for ``/{proxy+}`` on stage ``prod``."""
    raw = json.dumps(body).encode() if body is not None else None
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Host": "abc123.execute-api.eu-west-1.amazonaws.com",
        "User-Agent": "curl/8.5.0",
        "X-Amzn-Trace-Id": "Root=1-67891233-abcdef012345678912345678",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    }
    if header_key is not None:
        headers["x-api-key"] = header_key
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()} | {"Accept": ["application/json", "*/*"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "a1b2c3",
            "resourcePath": "/{proxy+}",
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
                "userAgent": "curl/8.5.0",
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "user": None,
                "userArn": None,
            },
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "apiId": "abc123",
        },
        "body": base64.b64encode(raw).decode() if raw is not None else None,
        "isBase64Encoded": raw is not None,
    }


def http_event(method: str, path: str, body: Any = None, *, key: str | None = None) -> dict[str, Any]:
    """An HTTP API (v2) proxy event on stage ``prod`` (its rawPath starts with the stage)."""
    raw = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json", "host": "xyz789.execute-api.eu-west-1.amazonaws.com"}
    if key is not None:
        headers["x-api-key"] = key
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": f"/prod{path}",
        "rawQueryString": "",
        "headers": headers,
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
        "body": base64.b64encode(raw).decode() if raw is not None else None,
        "isBase64Encoded": raw is not None,
    }


def body_of(response: dict[str, Any]) -> Any:
    raw = response["body"]
    if response.get("isBase64Encoded"):
        raw = base64.b64decode(raw)
    return json.loads(raw)


@pytest.fixture
def lambda_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # the handler fills in its defaults with os.environ.setdefault: each variable is recorded
    # (setenv) then removed, so monkeypatch restores the environment as it was
    for name in (
        *aws_lambda.LAMBDA_DEFAULTS,
        "MLGATE_AUTH__MODEL_ROUTES",
        "MLGATE_LAMBDA_KEYS",
        "LAMBDA_TASK_ROOT",
        "MLGATE_LAMBDA_SCHEMA_DB",
    ):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLGATE_SERVICES", '["temperatura"]')
    monkeypatch.setenv("MLGATE_ADMIN_KEY", ADMIN)
    monkeypatch.setenv("MLGATE_LOG__ACCESS_STDOUT", "false")
    aws_lambda.reset()
    yield tmp_path
    aws_lambda.reset()


def test_rest_v1_predict_on_stage_prod_gives_the_seeds_body_and_warm_calls_reuse_the_app(
    lambda_env: Path,
) -> None:
    before = aws_lambda.builds
    cold = aws_lambda.handler(
        rest_event("POST", "/prod", {"temperaturas": SEED}, header_key=GATEWAY_KEY), Context()
    )
    assert cold["statusCode"] == 200, cold
    answer = body_of(cold)
    assert answer["statusCode"] == 200
    assert set(answer["body"]) == {"prediccion", "unidad"}
    assert answer["body"]["unidad"] == "Celsius"
    assert isinstance(answer["body"]["prediccion"], float)
    app = aws_lambda._runtime.app  # type: ignore[union-attr]
    for _ in range(3):
        warm = aws_lambda.handler(rest_event("POST", "/prod", {"temperaturas": SEED}), Context())
        assert warm["statusCode"] == 200
        assert body_of(warm) == answer  # same model, same answer
    assert aws_lambda.builds == before + 1  # one build per container
    assert aws_lambda._runtime.app is app  # type: ignore[union-attr]
    assert (lambda_env / "mlgate.db").exists()  # the registry in the data dir (SQLite)


def test_rest_v1_without_an_api_gateway_key_is_forbidden_like_api_gateway(lambda_env: Path) -> None:
    response = aws_lambda.handler(
        rest_event("POST", "/prod", {"temperaturas": SEED}, api_key=None), Context()
    )
    assert response["statusCode"] == 403
    assert body_of(response) == {"message": "Forbidden"}


def test_probes_need_no_key_and_a_bad_input_is_the_seeds_400(lambda_env: Path) -> None:
    health = aws_lambda.handler(rest_event("GET", "/healthz", api_key=None), Context())
    assert health["statusCode"] == 200
    assert aws_lambda.handler(http_event("GET", "/readyz"), Context())["statusCode"] == 200
    bad = aws_lambda.handler(rest_event("POST", "/prod", {"temperaturas": [1.0]}), Context())
    assert bad["statusCode"] == 400
    assert "60" in json.dumps(body_of(bad), ensure_ascii=False)


def test_admin_routes_take_mlgates_credentials_as_a_bearer_in_apigateway_mode(lambda_env: Path) -> None:
    # x-api-key carries API Gateway's key (checked by it): not an mlgate credential, not passed on
    event = rest_event("GET", "/v1/keys", header_key=GATEWAY_KEY)
    assert aws_lambda.handler(event, Context())["statusCode"] == 401
    event["headers"]["Authorization"] = f"Bearer {ADMIN}"
    event["multiValueHeaders"]["Authorization"] = [f"Bearer {ADMIN}"]
    listed = aws_lambda.handler(event, Context())
    assert listed["statusCode"] == 200, listed
    assert "admin" in json.dumps(body_of(listed))


def test_http_api_v2_events_are_forbidden_in_apigateway_mode(lambda_env: Path) -> None:
    # HTTP APIs have no usage plans: nothing metered them, so nothing reaches the model
    response = aws_lambda.handler(http_event("POST", "/prod", {"temperaturas": SEED}, key=ADMIN), Context())
    assert response["statusCode"] == 403
    assert body_of(response) == {"message": "Forbidden"}


def test_mlgate_mode_checks_mlgates_own_keys_on_http_api_v2_events(
    lambda_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLGATE_LAMBDA_KEYS", "mlgate")
    ok = aws_lambda.handler(http_event("POST", "/prod", {"temperaturas": SEED}, key=ADMIN), Context())
    assert ok["statusCode"] == 200, ok
    assert body_of(ok)["body"]["unidad"] == "Celsius"
    missing = aws_lambda.handler(http_event("POST", "/prod", {"temperaturas": SEED}), Context())
    assert missing["statusCode"] == 403  # mlgate's own answer is the seed's too
    assert body_of(missing) == {"message": "Forbidden"}
    # the key API Gateway validated (identity.apiKey) is forwarded as x-api-key
    forwarded = aws_lambda.handler(
        rest_event("POST", "/prod", {"temperaturas": SEED}, api_key=ADMIN), Context()
    )
    assert forwarded["statusCode"] == 200
    unknown = aws_lambda.handler(rest_event("POST", "/prod", {"temperaturas": SEED}), Context())
    assert unknown["statusCode"] in (401, 403)  # a key mlgate does not know


def test_the_stage_prefix_of_http_api_paths_is_stripped() -> None:
    event = http_event("GET", "/healthz")
    stripped = aws_lambda._strip_stage(event)
    assert stripped["rawPath"] == stripped["requestContext"]["http"]["path"] == "/healthz"
    assert event["rawPath"] == "/prod/healthz"  # the caller's event is not changed
    default = http_event("GET", "/healthz")
    default["requestContext"]["stage"] = "$default"
    default["rawPath"] = default["requestContext"]["http"]["path"] = "/healthz"
    assert aws_lambda._strip_stage(default) is default


def test_a_new_sqlite_registry_is_the_images_schema_database_not_a_migration(
    lambda_env: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_root = tmp_path_factory.mktemp("task")
    aws_lambda.write_schema_db(task_root / aws_lambda.SCHEMA_DB)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(task_root))
    health = aws_lambda.handler(rest_event("GET", "/healthz", api_key=None), Context())
    assert health["statusCode"] == 200
    assert aws_lambda._runtime is not None and aws_lambda._runtime.seeded  # copied, at head
    assert (lambda_env / "mlgate.db").stat().st_size > 0
    ok = aws_lambda.handler(rest_event("POST", "/prod", {"temperaturas": SEED}), Context())
    assert ok["statusCode"] == 200, ok
    # the next container on the same data dir (a warm /tmp cannot be, but a configured path can)
    # keeps its registry: never overwritten
    aws_lambda.reset()
    aws_lambda.handler(rest_event("GET", "/healthz", api_key=None), Context())
    assert aws_lambda._runtime is not None and not aws_lambda._runtime.seeded


def test_the_seed_is_only_for_a_sqlite_file_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = tmp_path / "seed.db"
    seed.write_bytes(b"schema")
    monkeypatch.setenv("MLGATE_LAMBDA_SCHEMA_DB", str(seed))
    assert not aws_lambda._seed_registry("postgresql+psycopg://u@db:5432/mlgate")
    assert not aws_lambda._seed_registry("sqlite:///:memory:")
    assert not aws_lambda._seed_registry(None)
    target = tmp_path / "data" / "mlgate.db"
    assert aws_lambda._seed_registry(f"sqlite:///{target}")
    assert target.read_bytes() == b"schema"
    target.write_bytes(b"registry")
    assert not aws_lambda._seed_registry(f"sqlite:///{target}")
    assert target.read_bytes() == b"registry"
    monkeypatch.setenv("MLGATE_LAMBDA_SCHEMA_DB", str(tmp_path / "absent.db"))
    assert not aws_lambda._seed_registry(f"sqlite:///{tmp_path / 'other.db'}")


def test_the_application_is_built_in_the_init_phase_only_under_the_lambda_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_LAMBDA_RUNTIME_API", "_HANDLER", "MLGATE_LAMBDA_BUILD"):
        monkeypatch.delenv(name, raising=False)
    assert not aws_lambda._in_lambda_init()  # imported by tests, tools, mlgate itself
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    monkeypatch.setenv("_HANDLER", "app.other_handler")
    assert not aws_lambda._in_lambda_init()  # another function's handler imports this module
    monkeypatch.setenv("_HANDLER", "mlgate.aws_lambda.handler")
    assert aws_lambda._in_lambda_init()
    monkeypatch.setenv("MLGATE_LAMBDA_BUILD", "invoke")
    assert not aws_lambda._in_lambda_init()
