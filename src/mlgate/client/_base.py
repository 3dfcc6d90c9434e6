"""What both clients share: configuration, credentials, and reading one answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx

from mlgate.client._api import USER_AGENT, Call
from mlgate.client._errors import Timeout, error_from_response
from mlgate.client._retry import NO_RETRY, Attempts, RetryBudget, RetryPolicy

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_URL", "ClientBase"]

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
#: 5 s to connect, 60 s for the rest (a regressor's default model timeout is 60 s).
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class ClientBase:
    """Configuration and the transport-independent half of every call."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        token: str | None,
        timeout: float | httpx.Timeout | None,
        retry: RetryPolicy | None,
        budget: RetryBudget | None,
        headers: Mapping[str, str] | None,
        clock: Callable[[], float],
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: sent as ``x-api-key`` on every call
        self.api_key = api_key
        #: a user's bearer token (``Authorization: Bearer``), set by ``login`` too
        self.token = token
        self.retry = retry if retry is not None else NO_RETRY
        #: the retry budget every call of this client spends from
        self.budget = budget if budget is not None else RetryBudget()
        self.timeout = timeout if timeout is not None else DEFAULT_TIMEOUT
        self._clock = clock
        self._default_headers = {"user-agent": USER_AGENT, "accept": "application/json", **(headers or {})}

    def _headers(self, call: Call[Any]) -> dict[str, str]:
        headers: dict[str, str] = {}
        if call.content_type is not None:
            headers["content-type"] = call.content_type
        if self.api_key:
            headers["x-api-key"] = self.api_key
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def _request(self, call: Call[Any]) -> dict[str, Any]:
        return {
            "method": call.method,
            "url": call.path,
            "content": call.content,
            "params": call.params,
            "headers": self._headers(call),
        }

    def _attempts(self, call: Call[Any]) -> Attempts:
        return Attempts(self.retry, self.budget, idempotent=call.idempotent, clock=self._clock)

    @staticmethod
    def _settle(response: httpx.Response, attempts: Attempts) -> float | None:
        """None for a success; for an error answer, the wait before retrying it, or the typed
        error raised when it is not retried."""
        if response.status_code < 400:
            return None
        error = error_from_response(response)
        delay = attempts.after_error(error)
        if delay is None:
            raise error
        return delay

    def _wait_over(self, execution_id: str, record: Any, deadline: float, timeout: float) -> float | None:
        """None when the execution has ended; else the time left (raises :class:`Timeout` at 0)."""
        if not isinstance(record, dict) or record.get("status") != "RUNNING":
            return None
        left = deadline - self._clock()
        if left <= 0:
            raise Timeout(
                f"execution {execution_id!r} is still RUNNING after {timeout:g} s",
                code="wait_timeout",
                body=record,
            )
        return left
