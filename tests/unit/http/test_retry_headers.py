"""The precise wait next to ``Retry-After`` (issue 19): every refusal that carries a
``retry_after`` says it in whole seconds (``Retry-After``, at least 1, as before) and in
milliseconds (``Retry-After-Ms``), without changing the bodies or the other headers."""

from __future__ import annotations

from typing import Any

import pytest

from mlgate.errors import LimiterUnavailable, NotFound, Overloaded, QuotaExceeded, Throttled
from mlgate.http.errors import error_parts
from mlgate.http.gateway import _rejection, retry_headers


@pytest.mark.parametrize(
    ("seconds", "whole", "ms"),
    [
        (0.1, "1", "100"),  # a 10/s bucket: 100 ms, not a whole second
        (0.0001, "1", "1"),  # never 0: a client would spin
        (0.25, "1", "250"),
        (0.9999, "1", "1000"),
        (1.0, "1", "1000"),
        (1.2, "2", "1200"),
        (86_399.5, "86400", "86399500"),  # a quota resetting tomorrow
    ],
)
def test_retry_after_stays_whole_seconds_and_ms_is_precise(seconds: float, whole: str, ms: str) -> None:
    assert retry_headers(seconds, {}) == {"Retry-After": whole, "Retry-After-Ms": ms}


def test_a_throttled_refusal_keeps_its_body_and_headers_and_adds_the_hint() -> None:
    limits = {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0"}
    exc = Throttled("Too Many Requests", retry_after=0.1, headers=dict(limits))
    rejected = _rejection(exc, dict(exc.headers), None)
    assert (rejected.status, rejected.body) == (429, {"message": "Too Many Requests"})
    assert rejected.headers == {**limits, "Retry-After": "1", "Retry-After-Ms": "100"}
    original = _rejection(exc, dict(exc.headers), lambda s, m: (s, {"statusCode": s, "body": {"error": m}}))
    assert original.body == {"error": "Too Many Requests"}  # a service's route keeps its shape
    assert original.headers["Retry-After-Ms"] == "100"


def test_a_quota_refusal_says_when_the_period_resets() -> None:
    quota = {"X-Quota-Limit": "2", "X-Quota-Remaining": "0", "X-Quota-Reset": "1750003600"}
    exc = QuotaExceeded("Limit Exceeded", retry_after=3599.25, headers=dict(quota))
    rejected = _rejection(exc, dict(exc.headers), None)
    assert (rejected.status, rejected.body) == (429, {"message": "Limit Exceeded"})
    assert rejected.headers == {**quota, "Retry-After": "3600", "Retry-After-Ms": "3599250"}


@pytest.mark.parametrize(
    ("exc", "status", "headers"),
    [
        (Overloaded("queue is full", retry_after=0.05), 503, {"Retry-After": "1", "Retry-After-Ms": "50"}),
        (LimiterUnavailable("down", retry_after=2.5), 503, {"Retry-After": "3", "Retry-After-Ms": "2500"}),
        (NotFound("no model 'x'"), 404, {}),  # nothing to wait for: no hint
    ],
)
def test_native_errors_carry_the_hint_only_when_they_have_one(
    exc: Any, status: int, headers: dict[str, str]
) -> None:
    got_status, body, got_headers = error_parts(exc, method="POST", path="/v1/models/x/predict")
    assert (got_status, got_headers) == (status, headers)
    assert body == {"error": exc.to_dict()}
