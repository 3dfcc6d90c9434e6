"""Every error answer mlgate gives, in each of its shapes, reads into the same typed exception."""

from __future__ import annotations

import email.utils
from typing import Any

import httpx
import pytest

from mlgate import errors as server_errors
from mlgate.client import (
    ClientError,
    Forbidden,
    InvalidInput,
    MlgateError,
    ModelNotFound,
    NotFound,
    Overloaded,
    PredictionTimeout,
    QuotaExceeded,
    ServerError,
    ServiceUnavailable,
    Throttled,
    Timeout,
    Unauthorized,
    Unprocessable,
    error_from_response,
    retry_hint,
)
from mlgate.client import _errors as client_errors

REQUEST = httpx.Request("POST", "http://mlgate.test/v1/models/m/predict")


def answer(
    status: int, body: Any = None, headers: dict[str, str] | None = None, text: str | None = None
) -> Any:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=REQUEST)
    return httpx.Response(status, json=body, headers=headers, request=REQUEST)


def _server_classes() -> list[type[server_errors.MlgateError]]:
    return [
        getattr(server_errors, name)
        for name in server_errors.__all__
        if isinstance(getattr(server_errors, name), type)
        and issubclass(getattr(server_errors, name), server_errors.MlgateError)
    ]


@pytest.mark.parametrize("server_cls", _server_classes(), ids=lambda c: c.__name__)
def test_every_server_code_has_its_own_exception(server_cls: type[server_errors.MlgateError]) -> None:
    """The client maps every ``code`` of src/mlgate/errors.py, by name and status."""
    body = {"error": {"code": server_cls.code, "message": "it went wrong", "details": {"field": "x"}}}
    error = error_from_response(answer(server_cls.status, body, {"x-request-id": "req-1"}))
    assert error.code == server_cls.code
    assert error.status == server_cls.status
    assert (error.message, error.request_id, error.details) == ("it went wrong", "req-1", {"field": "x"})
    assert error.body == body
    client_cls = client_errors._BY_CODE[server_cls.code]
    assert type(error) is client_cls
    if server_cls.__name__ in client_errors.__all__:  # same name, same meaning
        assert client_cls.__name__ == server_cls.__name__ or server_cls.__name__ == "MlgateError"
    assert isinstance(error, ClientError if server_cls.status < 500 else ServerError)


@pytest.mark.parametrize(
    ("status", "body", "cls", "message"),
    [
        # the gateway: API Gateway's shapes
        (403, {"message": "Forbidden"}, Forbidden, "Forbidden"),
        (429, {"message": "Too Many Requests"}, Throttled, "Too Many Requests"),
        (429, {"message": "Limit Exceeded"}, QuotaExceeded, "Limit Exceeded"),
        # the reference services' original routes
        (429, {"error": "Too Many Requests"}, Throttled, "Too Many Requests"),
        (429, {"error": "Limit Exceeded"}, QuotaExceeded, "Limit Exceeded"),
        (
            400,
            {"statusCode": 400, "body": {"error": "Se requieren exactamente 60 valores de temperatura"}},
            InvalidInput,
            "Se requieren exactamente 60 valores de temperatura",
        ),
        (404, {"statusCode": 404, "body": {"error": "no model 'intrusos'"}}, NotFound, "no model 'intrusos'"),
        # the user-account routes and FastAPI's
        (401, {"detail": "Authentication Failed"}, Unauthorized, "Authentication Failed"),
        (429, {"detail": "Too many failed logins"}, Throttled, "Too many failed logins"),
        (
            422,
            {"detail": [{"loc": ["body"], "msg": "bad"}]},
            Unprocessable,
            '[{"loc": ["body"], "msg": "bad"}]',
        ),
        # OIP / native
        (
            404,
            {"error": {"code": "model_not_found", "message": "no model 'x'"}},
            ModelNotFound,
            "no model 'x'",
        ),
        (504, {"error": {"code": "timeout", "message": "slow"}}, PredictionTimeout, "slow"),
    ],
)
def test_every_shape_reads_into_a_typed_error(
    status: int, body: Any, cls: type[MlgateError], message: str
) -> None:
    error = error_from_response(answer(status, body))
    assert type(error) is cls
    assert (error.status, error.message) == (status, message)
    assert error.body == body


def test_answers_that_are_not_json_still_raise_typed_errors() -> None:
    proxy = error_from_response(answer(502, text="<html>Bad Gateway</html>"))
    assert type(proxy) is ServerError and proxy.code == "http_502" and "Bad Gateway" in proxy.message
    shed = error_from_response(answer(503, text="", headers={"retry-after": "1"}))
    assert type(shed) is ServiceUnavailable and shed.retry_after == 1.0 and shed.message
    teapot = error_from_response(answer(418, {"whatever": 1}))
    assert type(teapot) is ClientError and teapot.code == "http_418"


def test_the_shed_503_body_is_overloaded_with_its_hint() -> None:
    body = {"error": {"code": "overloaded", "message": "server is at capacity; retry shortly"}}
    error = error_from_response(answer(503, body, {"retry-after": "1"}))
    assert isinstance(error, Overloaded) and error.retry_after == 1.0


def test_a_throttle_prefers_the_precise_hint() -> None:
    headers = {"retry-after": "1", "retry-after-ms": "100", "x-ratelimit-remaining": "0"}
    error = error_from_response(answer(429, {"message": "Too Many Requests"}, headers))
    assert isinstance(error, Throttled)
    assert error.retry_after == pytest.approx(0.1)
    assert error.headers["x-ratelimit-remaining"] == "0"


def test_a_quota_says_when_it_resets() -> None:
    headers = {"retry-after": "3600", "retry-after-ms": "3599250", "x-quota-reset": "1750003600"}
    error = error_from_response(answer(429, {"message": "Limit Exceeded"}, headers))
    assert isinstance(error, QuotaExceeded)
    assert error.reset_at == 1750003600.0
    assert error.retry_after == pytest.approx(3599.25)
    bare = error_from_response(answer(429, {"message": "Limit Exceeded"}, {"retry-after": "10"}))
    assert isinstance(bare, QuotaExceeded) and bare.reset_at is not None and bare.retry_after == 10.0


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({"retry-after-ms": "100", "retry-after": "1"}, 0.1),
        ({"retry-after-ms": "2.5"}, 0.0025),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "nonsense", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "-5", "retry-after": "3"}, 3.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-4"}, 0.0),
        ({}, None),
    ],
)
def test_retry_hint_precedence(headers: dict[str, str], hint: float | None) -> None:
    assert retry_hint(httpx.Headers(headers)) == (pytest.approx(hint) if hint is not None else None)


def test_retry_hint_reads_an_http_date() -> None:
    when = email.utils.formatdate(1_750_000_030.0, usegmt=True)
    assert retry_hint(httpx.Headers({"retry-after": when}), now=1_750_000_000.0) == pytest.approx(30.0)


def test_a_prediction_timeout_is_a_timeout_and_a_server_error() -> None:
    error = error_from_response(answer(504, {"error": {"code": "timeout", "message": "slow"}}))
    assert isinstance(error, Timeout) and isinstance(error, ServerError)
    assert str(error) == "504 timeout: slow"
