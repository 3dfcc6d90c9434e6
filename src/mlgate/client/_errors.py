"""The client's exceptions, and the one function that reads any mlgate error answer into one.

mlgate answers errors in four shapes (SPEC sections 2 and 3): the native API's ``{"error": {"code",
"message"[, "details"]}}``, the gateway's API Gateway shapes ``{"message": "Forbidden"}`` /
``{"message": "Too Many Requests"}`` / ``{"message": "Limit Exceeded"}``, the reference services'
original routes ``{"error": "..."}`` and ``{"statusCode": 400, "body": {"error": "..."}}``, and
the user-account routes' ``{"detail": "..."}``. :func:`error_from_response` reads them all into
the same typed exception, chosen by the native ``code`` when there is one, else by the status
(a 429 saying "Limit Exceeded" is a :class:`QuotaExceeded`).

::

    MlgateError                       status, code, message, request_id, body, headers
    ├── ClientError (4xx)
    │   ├── InvalidInput (400)         invalid_input, bad_request, invalid_request
    │   │   ├── RequestTimeout (408)   request_timeout
    │   │   ├── PayloadTooLarge (413)  payload_too_large
    │   │   ├── HeadersTooLarge (431)  headers_too_large
    │   │   └── Unprocessable (422)    unprocessable
    │   ├── Unauthorized (401)         unauthorized
    │   ├── Forbidden (403)            forbidden
    │   ├── NotFound (404)             not_found
    │   │   ├── ModelNotFound          model_not_found
    │   │   ├── VersionNotFound        version_not_found
    │   │   └── ObjectNotFound         object_not_found
    │   ├── MethodNotAllowed (405)     method_not_allowed
    │   ├── Conflict (409)             conflict
    │   ├── UnsafeArtifact (422)       unsafe_artifact
    │   ├── InvalidArtifact (422)      invalid_artifact
    │   ├── Throttled (429)            throttled: retry_after
    │   └── QuotaExceeded (429)        quota_exceeded: retry_after, reset_at
    ├── ServerError (5xx)              internal
    │   ├── ConfigurationError (500)   configuration_error
    │   ├── PredictionFailed (500)     prediction_failed
    │   ├── StoreError (502)           store_error
    │   │   └── IntegrityError         integrity_error
    │   ├── ServiceUnavailable (503)   unavailable
    │   │   ├── Overloaded             overloaded: retry_after
    │   │   ├── LimiterUnavailable     limiter_unavailable: retry_after
    │   │   ├── NotReady               not_ready
    │   │   └── ModelLoadError         model_load_error
    │   └── PredictionTimeout (504)    timeout (also a Timeout)
    ├── Timeout                        client_timeout: no answer in time (status None)
    └── ConnectionFailed               connection_error: the server could not be reached
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

__all__ = [
    "PRECISE_HINT_HEADER",
    "ClientError",
    "ConfigurationError",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "HeadersTooLarge",
    "IntegrityError",
    "InvalidArtifact",
    "InvalidInput",
    "LimiterUnavailable",
    "MethodNotAllowed",
    "MlgateError",
    "ModelLoadError",
    "ModelNotFound",
    "NotFound",
    "NotReady",
    "ObjectNotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PredictionFailed",
    "PredictionTimeout",
    "QuotaExceeded",
    "RequestTimeout",
    "ServerError",
    "ServiceUnavailable",
    "StoreError",
    "Throttled",
    "Timeout",
    "Unauthorized",
    "Unprocessable",
    "UnsafeArtifact",
    "VersionNotFound",
    "error_from_response",
    "error_from_transport",
    "retry_hint",
]

#: The server's precise wait, in milliseconds, next to ``Retry-After`` (whole seconds).
PRECISE_HINT_HEADER = "retry-after-ms"
_MAX_TEXT = 2000


class MlgateError(Exception):
    """Any error the client raises: what the server answered (or why there was no answer).

    ``status`` is the HTTP status (None when no answer came), ``code`` mlgate's machine-readable
    code, ``message`` the human text, ``request_id`` the answer's ``X-Request-Id`` (quote it when
    reporting a problem), ``body`` the decoded answer and ``headers`` its headers.
    """

    status_default: ClassVar[int | None] = 500
    code_default: ClassVar[str] = "internal"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status if status is not None else self.status_default
        self.code = code or self.code_default
        self.request_id = request_id
        self.body = body
        self.headers: dict[str, str] = dict(headers or {})
        self.details = details

    def __str__(self) -> str:
        where = f" [request {self.request_id}]" if self.request_id else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}{where}"


class ClientError(MlgateError):
    """The request was refused (4xx): retrying it unchanged will not help (except 429s)."""

    status_default = 400
    code_default = "client_error"


class InvalidInput(ClientError):
    status_default = 400
    code_default = "invalid_input"


class RequestTimeout(InvalidInput):
    """The request's headers or body reached the server too slowly (408)."""

    status_default = 408
    code_default = "request_timeout"


class PayloadTooLarge(InvalidInput):
    status_default = 413
    code_default = "payload_too_large"


class HeadersTooLarge(InvalidInput):
    status_default = 431
    code_default = "headers_too_large"


class Unprocessable(InvalidInput):
    status_default = 422
    code_default = "unprocessable"


class Unauthorized(ClientError):
    """No (valid) bearer token where one is needed (401)."""

    status_default = 401
    code_default = "unauthorized"


class Forbidden(ClientError):
    """The API key is missing, unknown, disabled or expired, or lacks the role (403)."""

    status_default = 403
    code_default = "forbidden"


class NotFound(ClientError):
    status_default = 404
    code_default = "not_found"


class ModelNotFound(NotFound):
    code_default = "model_not_found"


class VersionNotFound(NotFound):
    code_default = "version_not_found"


class ObjectNotFound(NotFound):
    code_default = "object_not_found"


class MethodNotAllowed(ClientError):
    status_default = 405
    code_default = "method_not_allowed"


class Conflict(ClientError):
    status_default = 409
    code_default = "conflict"


class UnsafeArtifact(ClientError):
    status_default = 422
    code_default = "unsafe_artifact"


class InvalidArtifact(ClientError):
    status_default = 422
    code_default = "invalid_artifact"


class _Waits(MlgateError):
    """An answer that says when to come back: ``retry_after`` seconds (the server's precise
    ``Retry-After-Ms`` when it sent one, else ``Retry-After``), None when it said nothing."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Throttled(_Waits, ClientError):
    """The key's token bucket is empty (429): retried by the client after ``retry_after``."""

    status_default = 429
    code_default = "throttled"


class QuotaExceeded(_Waits, ClientError):
    """The plan's quota for this period is used up (429, "Limit Exceeded"): never retried.

    ``reset_at`` is when the period resets (Unix time, from ``X-Quota-Reset``) and
    ``retry_after`` the seconds until then.
    """

    status_default = 429
    code_default = "quota_exceeded"

    def __init__(self, message: str, *, reset_at: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        if reset_at is None and self.retry_after is not None:
            reset_at = time.time() + self.retry_after
        self.reset_at = reset_at


class ServerError(MlgateError):
    """The server failed (5xx)."""

    status_default = 500
    code_default = "internal"


class ConfigurationError(ServerError):
    code_default = "configuration_error"


class PredictionFailed(ServerError):
    code_default = "prediction_failed"


class StoreError(ServerError):
    status_default = 502
    code_default = "store_error"


class IntegrityError(StoreError):
    code_default = "integrity_error"


class ServiceUnavailable(_Waits, ServerError):
    """503: the server could not take the request now."""

    status_default = 503
    code_default = "unavailable"


class Overloaded(ServiceUnavailable):
    """The server or the model's queue is full (503, nothing was run): retried after the hint."""

    code_default = "overloaded"


class LimiterUnavailable(ServiceUnavailable):
    """The shared limiter state is unreachable and the server fails closed (503): retried."""

    code_default = "limiter_unavailable"


class NotReady(ServiceUnavailable):
    """The server or the workflow service is still starting (503): retried."""

    code_default = "not_ready"


class ModelLoadError(ServiceUnavailable):
    """The model's version could not be loaded (503): not retried (it will not load by itself)."""

    code_default = "model_load_error"


class Timeout(MlgateError):
    """No answer in time: the client's timeout (``client_timeout``, status None), a
    :meth:`~mlgate.client.Client.wait_execution` that ran out (``wait_timeout``) or, as
    :class:`PredictionTimeout`, the model's own timeout on the server (504)."""

    status_default: ClassVar[int | None] = None
    code_default = "client_timeout"


class PredictionTimeout(ServerError, Timeout):
    """The prediction took longer than the model's timeout (504): the model did run."""

    status_default = 504
    code_default = "timeout"


class ConnectionFailed(MlgateError):
    """The server could not be reached, or the connection broke before an answer (no status)."""

    status_default: ClassVar[int | None] = None
    code_default = "connection_error"


#: mlgate's every error ``code`` (src/mlgate/errors.py, the HTTP edge's own) -> its exception.
_BY_CODE: dict[str, type[MlgateError]] = {
    "invalid_input": InvalidInput,
    "bad_request": InvalidInput,
    "invalid_request": InvalidInput,  # a route's request schema (422)
    "request_timeout": RequestTimeout,
    "payload_too_large": PayloadTooLarge,
    "headers_too_large": HeadersTooLarge,
    "unprocessable": Unprocessable,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "model_not_found": ModelNotFound,
    "version_not_found": VersionNotFound,
    "object_not_found": ObjectNotFound,
    "method_not_allowed": MethodNotAllowed,
    "conflict": Conflict,
    "throttled": Throttled,
    "quota_exceeded": QuotaExceeded,
    "unsafe_artifact": UnsafeArtifact,
    "invalid_artifact": InvalidArtifact,
    "internal": ServerError,
    "configuration_error": ConfigurationError,
    "prediction_failed": PredictionFailed,
    "store_error": StoreError,
    "integrity_error": IntegrityError,
    "model_load_error": ModelLoadError,
    "not_ready": NotReady,
    "overloaded": Overloaded,
    "limiter_unavailable": LimiterUnavailable,
    "timeout": PredictionTimeout,
}

#: The status -> exception for answers without a native code (the gateway's and services' shapes).
_BY_STATUS: dict[int, type[MlgateError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    408: RequestTimeout,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: Throttled,
    431: HeadersTooLarge,
    500: ServerError,
    503: ServiceUnavailable,
    504: PredictionTimeout,
}

#: The gateway's text for an exhausted quota (API Gateway's), in ``message`` or ``error``.
_QUOTA_TEXT = "Limit Exceeded"


def retry_hint(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait the server asks for, in seconds: ``Retry-After-Ms`` (precise) first, then
    ``Retry-After`` (delta-seconds or an HTTP date); None when neither is there or readable."""
    precise = headers.get(PRECISE_HINT_HEADER)
    if precise is not None:
        try:
            ms = float(precise)
        except ValueError:
            ms = -1.0
        if ms >= 0.0 and ms == ms and ms != float("inf"):
            return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds == float("inf"):
        return None
    return max(0.0, seconds)


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text[:_MAX_TEXT] if response.content else None


def _read_body(body: Any) -> tuple[str | None, str | None, Any]:
    """``(code, message, details)`` from any of mlgate's error shapes."""
    if not isinstance(body, dict):
        return None, body.strip()[:_MAX_TEXT] if isinstance(body, str) and body.strip() else None, None
    error = body.get("error")
    if isinstance(error, dict):  # native: {"error": {"code", "message", "details"?}}
        code, message = error.get("code"), error.get("message")
        return (
            code if isinstance(code, str) else None,
            message if isinstance(message, str) else None,
            error.get("details"),
        )
    if isinstance(error, str):  # a service's original route: {"error": "..."}
        return None, error, None
    inner = body.get("body")
    if isinstance(inner, dict) and isinstance(inner.get("error"), str):  # {"statusCode", "body": {"error"}}
        return None, inner["error"], None
    message = body.get("message")
    if isinstance(message, str):  # the gateway: {"message": "..."}
        return None, message, None
    detail = body.get("detail")
    if isinstance(detail, str):  # the user-account routes: {"detail": "..."}
        return None, detail, None
    if detail is not None:
        return None, json.dumps(detail)[:_MAX_TEXT], detail
    return None, None, None


def error_from_response(response: httpx.Response) -> MlgateError:
    """The typed exception for an error answer (status >= 400), whatever its shape."""
    status = response.status_code
    body = _decode(response)
    code, message, details = _read_body(body)
    cls = _BY_CODE.get(code) if code is not None else None
    if cls is None:
        if status == 429 and message is not None and message.strip() == _QUOTA_TEXT:
            cls = QuotaExceeded
        else:
            cls = _BY_STATUS.get(status) or (ClientError if status < 500 else ServerError)
        code = code or (cls.code_default if cls.status_default == status else f"http_{status}")
    headers = response.headers
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "request_id": headers.get("x-request-id"),
        "body": body,
        "headers": dict(headers.items()),
        "details": details,
    }
    text = message or response.reason_phrase or f"HTTP {status}"
    if issubclass(cls, _Waits):
        kwargs["retry_after"] = retry_hint(headers)
    if cls is QuotaExceeded:
        reset = headers.get("x-quota-reset")
        try:
            kwargs["reset_at"] = float(reset) if reset is not None else None
        except ValueError:
            kwargs["reset_at"] = None
    return cls(text, **kwargs)


def error_from_transport(exc: httpx.TransportError) -> MlgateError:
    """No answer: a :class:`Timeout` for httpx's timeouts, else :class:`ConnectionFailed`."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(text)
    return ConnectionFailed(text)
