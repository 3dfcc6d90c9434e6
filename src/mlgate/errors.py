"""The one exception tree of mlgate.

Every error the core raises derives from :class:`MlgateError` and carries the HTTP
status it maps to, a short machine-readable ``code`` and a human message. The
HTTP edge has exactly one handler that turns any of them into a JSON body
``{"error": {"code": ..., "message": ...}}`` (route adapters of the reference
services may render their own historical envelope instead).

::

    MlgateError (500 internal)
    ├── InvalidInput (400 invalid_input)          bad payload, decoded before batching
    │   ├── BadRequest (400 bad_request)            not a valid HTTP request (the connection is closed)
    │   ├── RequestTimeout (408 request_timeout)    headers or body too slow to arrive (closed)
    │   ├── PayloadTooLarge (413 payload_too_large)
    │   ├── HeadersTooLarge (431 headers_too_large)  header section over its size or count limit (closed)
    │   └── Unprocessable (422 unprocessable)      well-formed but refused (e.g. a 2 KB password)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)
    │   ├── ModelNotFound (404 model_not_found)
    │   ├── VersionNotFound (404 version_not_found)
    │   └── ObjectNotFound (404 object_not_found)    no such key in the object store
    ├── Conflict (409 conflict)
    ├── Throttled (429 throttled)                 token bucket empty; carries ``retry_after``
    ├── QuotaExceeded (429 quota_exceeded)        plan quota used up; carries ``retry_after``
    ├── UnsafeArtifact (422 unsafe_artifact)       pickle without trust, hash mismatch on upload
    ├── InvalidArtifact (422 invalid_artifact)     a pushed version that does not load or warm up
    ├── ConfigurationError (500 configuration_error)
    ├── PredictionFailed (500 prediction_failed)   the model raised on an input that decoded fine
    ├── StoreError (502 store_error)               object store unreachable or object missing
    │   └── IntegrityError (502 integrity_error)   sha256 mismatch after download
    ├── ModelLoadError (503 model_load_error)
    ├── Overloaded (503 overloaded)                queue full; carries ``retry_after`` seconds
    ├── LimiterUnavailable (503 limiter_unavailable)  limiter state unreachable (fail closed); ``retry_after``
    ├── NotReady (503 not_ready)
    └── PredictionTimeout (504 timeout)

What a client sees is :func:`public_text` of a message: no absolute server paths (a registered
root such as the store or the cache becomes its label, any other path its last part), no object
addresses, no traceback. ``str(exc)`` keeps the full text for the server log;
:func:`exception_summary` is the public one-line form of a library's exception.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "ConfigurationError",
    "Conflict",
    "Forbidden",
    "HeadersTooLarge",
    "IntegrityError",
    "InvalidArtifact",
    "InvalidInput",
    "LimiterUnavailable",
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
    "StoreError",
    "Throttled",
    "Unauthorized",
    "Unprocessable",
    "UnsafeArtifact",
    "VersionNotFound",
    "exception_summary",
    "public_text",
    "register_private_path",
]

# -- public text ---------------------------------------------------------------------------------

#: absolute root -> the label clients see instead (``store``, ``cache``, ``data``)
_ROOTS: dict[str, str] = {}
_roots_pattern: re.Pattern[str] | None = None
#: an absolute path (optionally a file:// URI): starts after a non-path character
_PATH = re.compile(r"(?:\bfile://|(?<![\w.:/~-]))(/[^\s'\"`()<>\[\]{},;:|*?]+)")
_ADDRESS = re.compile(r"\s+at 0x[0-9a-fA-F]+|\b0x[0-9a-fA-F]{8,}\b")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \"", re.MULTILINE)
_DATABASE_MODULES = ("sqlalchemy", "sqlite3", "psycopg", "psycopg2", "alembic")
try:
    _TOP_DIRS = frozenset(os.listdir("/"))
except OSError:  # pragma: no cover
    _TOP_DIRS = frozenset()


def register_private_path(path: str | os.PathLike[str], label: str) -> None:
    """Show ``path`` (and anything under it, also as a ``file://`` URI) to clients as ``label``."""
    global _roots_pattern
    root = str(Path(path).resolve()).rstrip("/")
    if not root or _ROOTS.get(root) == label:
        return
    _ROOTS[root] = label
    _roots_pattern = re.compile(
        "(?:file://)?("
        + "|".join(re.escape(r) for r in sorted(_ROOTS, key=len, reverse=True))
        + ")(?=/|$|[^\\w.-])"
    )


def _elide(match: re.Match[str]) -> str:
    parts = [p for p in match.group(1).split("/") if p]
    # A path of this machine (/tmp/…, /home/…) or any path to a file (a library's /io/src/x.cpp);
    # a route ("/v1/models/x") or a one-segment name is left alone.
    if len(parts) < 2 or (parts[0] not in _TOP_DIRS and "." not in parts[-1].strip(".")):
        return match.group(0)
    return "…/" + parts[-1]


def public_text(text: str) -> str:
    """``text`` as a client may see it: registered roots as their labels (``cache/m/1-ab/model.onnx``),
    other absolute paths of this machine as ``…/<last part>``, no ``at 0x…`` object addresses, and
    nothing from a traceback on."""
    if "/" not in text and "0x" not in text and "File" not in text and "Traceback" not in text:
        return text  # the common case, checked cheaply
    found = _TRACEBACK.search(text)
    if found is not None:
        text = text[: found.start()].rstrip() + " (details in the server log)"
    if _roots_pattern is not None:
        text = _roots_pattern.sub(lambda m: _ROOTS[m.group(1)], text)
    text = _PATH.sub(_elide, text)
    return _ADDRESS.sub("", text)


def exception_summary(exc: BaseException, *, limit: int = 300) -> str:
    """A library's exception for a client: its class name and the first line of its public text
    (a database driver's only as "database error"), at most ``limit`` characters."""
    module = type(exc).__module__.partition(".")[0]
    if module in _DATABASE_MODULES:
        return "database error (details in the server log)"
    lines = [line.strip() for line in public_text(str(exc)).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if len(first) > limit:
        first = first[: limit - 1] + "…"
    name = type(exc).__name__
    return f"{name}: {first}" if first else name


class MlgateError(Exception):
    """Base of every mlgate error; ``status`` is the HTTP status it maps to."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)  # str(exc): the full text, for the server log
        self.message = public_text(message)  # what clients see
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = _public_value(self.details)
        return body


def _public_value(value: Any) -> Any:
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, dict):
        return {k: _public_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_public_value(v) for v in value]
    return value


class InvalidInput(MlgateError):
    """The request's payload is malformed or out of range (decoded before batching)."""

    status = 400
    code = "invalid_input"


class BadRequest(InvalidInput):
    """Not a valid HTTP/1.1 request (the edge answers and closes the connection)."""

    code = "bad_request"


class RequestTimeout(InvalidInput):
    """The request's headers or body did not arrive in time (answered, then the connection closed)."""

    status = 408
    code = "request_timeout"


class HeadersTooLarge(InvalidInput):
    """The request line and headers exceed their size or count limit (answered, then closed)."""

    status = 431
    code = "headers_too_large"


class PayloadTooLarge(InvalidInput):
    """The request body is larger than ``max_body_bytes``."""

    status = 413
    code = "payload_too_large"


class Unprocessable(InvalidInput):
    """Well-formed but refused input (e.g. a password longer than the hasher accepts)."""

    status = 422
    code = "unprocessable"


class _RetryAfter(MlgateError):
    """Carries ``retry_after`` seconds and extra response ``headers`` (rate-limit state)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 1.0,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after
        self.headers = headers or {}


class Throttled(_RetryAfter):
    """The caller's token bucket is empty; retry after ``retry_after`` seconds."""

    status = 429
    code = "throttled"


class QuotaExceeded(_RetryAfter):
    """The caller's plan quota for this period is used up; ``retry_after`` is when it resets."""

    status = 429
    code = "quota_exceeded"


class Unauthorized(MlgateError):
    """No credentials were sent where they are required."""

    status = 401
    code = "unauthorized"


class Forbidden(MlgateError):
    """The credentials are unknown, disabled, expired or lack the role."""

    status = 403
    code = "forbidden"


class NotFound(MlgateError):
    """The named thing does not exist."""

    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    """No model has this name."""

    code = "model_not_found"


class VersionNotFound(NotFound):
    """The model has no such version or alias."""

    code = "version_not_found"


class ObjectNotFound(NotFound):
    """The object store has no such key."""

    code = "object_not_found"


class Conflict(MlgateError):
    """The thing already exists or the change conflicts with current state."""

    status = 409
    code = "conflict"


class UnsafeArtifact(MlgateError):
    """The artifact would execute code on load (pickle) and is not trusted."""

    status = 422
    code = "unsafe_artifact"


class InvalidArtifact(MlgateError):
    """A pushed version failed its trial load or warm-up prediction: it is not registered."""

    status = 422
    code = "invalid_artifact"


class ConfigurationError(MlgateError):
    """The server is misconfigured or an optional dependency is missing."""

    status = 500
    code = "configuration_error"


class PredictionFailed(MlgateError):
    """The model raised on an input that decoded fine."""

    status = 500
    code = "prediction_failed"


class StoreError(MlgateError):
    """The object store is unreachable or refused the operation."""

    status = 502
    code = "store_error"


class IntegrityError(StoreError):
    """A downloaded file does not match its recorded sha256."""

    code = "integrity_error"


class ModelLoadError(MlgateError):
    """A version could not be loaded."""

    status = 503
    code = "model_load_error"


class NotReady(MlgateError):
    """The server or model is still starting."""

    status = 503
    code = "not_ready"


class Overloaded(_RetryAfter):
    """The model's queue is full; the client should retry after ``retry_after`` seconds."""

    status = 503
    code = "overloaded"


class PredictionTimeout(MlgateError):
    """The prediction took longer than the model's timeout."""

    status = 504
    code = "timeout"


class LimiterUnavailable(_RetryAfter):
    """The shared limiter state (Redis, the database) is unreachable and the policy fails closed;
    ``retry_after`` is when the storage tries it again."""

    status = 503
    code = "limiter_unavailable"
