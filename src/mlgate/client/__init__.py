"""The Python client of mlgate: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

::

    from mlgate.client import Client, QuotaExceeded

    with Client("http://127.0.0.1:8000", api_key="mlg_...") as mlgate:
        print(mlgate.predict("temperatura", {"temperaturas": temps})["outputs"])

Throttled calls (429) and shed ones (503) are retried after the server's precise hint
(``Retry-After-Ms``, else ``Retry-After``), connection failures with exponential backoff and
full jitter, all within a per-client retry budget; an exhausted quota raises
:class:`QuotaExceeded` at once. Every error answer, whatever its shape, raises a typed
:class:`MlgateError`. This package imports only httpx and the standard library (docs/client.md).
"""

from __future__ import annotations

from mlgate.client._api import tensor
from mlgate.client._async import AsyncClient
from mlgate.client._errors import (
    ClientError,
    ConfigurationError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    HeadersTooLarge,
    IntegrityError,
    InvalidArtifact,
    InvalidInput,
    LimiterUnavailable,
    MethodNotAllowed,
    MlgateError,
    ModelLoadError,
    ModelNotFound,
    NotFound,
    NotReady,
    ObjectNotFound,
    Overloaded,
    PayloadTooLarge,
    PredictionFailed,
    PredictionTimeout,
    QuotaExceeded,
    RequestTimeout,
    ServerError,
    ServiceUnavailable,
    StoreError,
    Throttled,
    Timeout,
    Unauthorized,
    Unprocessable,
    UnsafeArtifact,
    VersionNotFound,
    error_from_response,
    retry_hint,
)
from mlgate.client._retry import RetryBudget, RetryPolicy
from mlgate.client._sync import Client

__all__ = [
    "AsyncClient",
    "Client",
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
    "RetryBudget",
    "RetryPolicy",
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
    "retry_hint",
    "tensor",
]
