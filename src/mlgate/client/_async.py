"""The asyncio client: the same calls as :class:`~mlgate.client.Client` (``_api``), awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import date
from types import TracebackType
from typing import Any, TypeVar

import httpx

from mlgate.client import _api
from mlgate.client._api import Call, poll_delays
from mlgate.client._base import DEFAULT_URL, ClientBase
from mlgate.client._errors import error_from_transport
from mlgate.client._retry import RetryBudget, RetryPolicy

__all__ = ["AsyncClient"]

T = TypeVar("T")
Image = bytes | bytearray | memoryview | str


class AsyncClient(ClientBase):
    """An asyncio mlgate client (one per event loop: its connection pool belongs to the loop).

    ``api_key`` is sent as ``x-api-key``; ``token`` (or :meth:`login`) as a bearer token.
    ``retry`` is the :class:`RetryPolicy` (None: never retry), ``budget`` the
    :class:`RetryBudget` its retries spend; ``timeout`` is httpx's (seconds or an
    ``httpx.Timeout``). ``transport`` and ``sleep`` exist for tests (``httpx.MockTransport``,
    a fake sleep).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = RetryPolicy(),
        budget: RetryBudget | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            token=token,
            timeout=timeout,
            retry=retry,
            budget=budget,
            headers=headers,
            clock=clock,
        )
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, headers=self._default_headers, transport=transport
        )

    # -- plumbing ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the policy says; its parsed answer or a typed error."""
        attempts = self._attempts(call)
        while True:
            try:
                response = await self._http.request(**self._request(call))
            except httpx.TransportError as exc:
                delay = attempts.after_exception(exc)
                if delay is None:
                    raise error_from_transport(exc) from exc
            else:
                delay = self._settle(response, attempts)
                if delay is None:
                    return call.parse(response)
            await self._sleep(delay)

    # -- models -----------------------------------------------------------------------------

    async def predict(self, model: str, payload: Any, version: str | int | None = None) -> dict[str, Any]:
        """``POST /v1/models/{model}[/versions/{version}]/predict``: ``{"model_name",
        "model_version", "outputs"}``."""
        return await self.send(_api.predict(model, payload, version))

    async def predict_batch(
        self, model: str, inputs: Iterable[Any], version: str | int | None = None
    ) -> dict[str, Any]:
        """``POST .../batch``: many inputs, answered in order in ``results``."""
        return await self.send(_api.predict_batch(model, inputs, version))

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Any] | Iterable[Mapping[str, Any]],
        version: str | int | None = None,
        *,
        outputs: Iterable[str | Mapping[str, Any]] | None = None,
        request_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Open Inference Protocol ``POST /v2/models/{model}/infer``; ``inputs`` are OIP tensor
        dicts or ``{"name": nested list}`` (shape and datatype inferred)."""
        return await self.send(_api.infer(model, inputs, version, outputs, request_id, parameters))

    async def list_models(self) -> list[dict[str, Any]]:
        return await self.send(_api.list_models())

    async def get_model(self, name: str) -> dict[str, Any]:
        return await self.send(_api.get_model(name))

    # -- the reference services' original routes ------------------------------------------

    async def temperatura(self, temps: Iterable[float]) -> dict[str, Any]:
        """``POST /prod``: 60 hourly °C -> ``{"prediccion": ..., "unidad": "Celsius"}``."""
        return await self.send(_api.temperatura(temps))

    async def intrusos(self, image: Image) -> dict[str, Any]:
        """``POST /prodfaces``: an image (bytes, or base64 text) -> ``{"detectado",
        "intruso_detectado", "objetos", "total_objetos"}``."""
        return await self.send(_api.intrusos(image))

    async def vehiculos(self, image: Image, version: str | int | None = None) -> dict[str, Any]:
        """The bicycle/motorcycle classifier: ``{"inferences": [p_bicycle, p_motorcycle], "top"}``."""
        return await self.send(_api.vehiculos(image, version))

    async def cardiaco(self, vitals: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Any:
        """``POST /predict`` (needs :meth:`login`): ``{"idAtencion", "inferences", "State"}``."""
        return await self.send(_api.cardiaco(vitals))

    # -- users ------------------------------------------------------------------------------

    async def login(self, username: str, password: str) -> str:
        """``POST /auth/token``: the bearer token, also used by this client from now on."""
        self.token = await self.send(_api.login(username, password))
        return self.token

    async def create_user(
        self, username: str, password: str, *, email: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        return await self.send(_api.create_user(username, password, email, role))

    async def list_users(self) -> list[dict[str, Any]]:
        return await self.send(_api.list_users())

    # -- keys, plans, usage -----------------------------------------------------------------

    async def create_key(
        self,
        name: str | None = None,
        *,
        plan: str | None = None,
        role: str | None = None,
        owner: str | None = None,
        scope: str | None = None,
        expires_at: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/keys``: the new key, its secret in ``"key"`` (shown this once)."""
        return await self.send(_api.create_key(name, plan, role, owner, scope, expires_at))

    async def list_keys(self, owner: str | None = None) -> list[dict[str, Any]]:
        return await self.send(_api.list_keys(owner))

    async def disable_key(self, key_id: str) -> dict[str, Any]:
        return await self.send(_api.disable_key(key_id))

    async def enable_key(self, key_id: str) -> dict[str, Any]:
        return await self.send(_api.enable_key(key_id))

    async def rotate_key(self, key_id: str, *, grace_seconds: int = 0) -> dict[str, Any]:
        return await self.send(_api.rotate_key(key_id, grace_seconds))

    async def create_plan(
        self,
        name: str,
        *,
        rate: float | None = None,
        burst: int | None = None,
        quota_limit: int | None = None,
        quota_period: str | None = None,
        quota_offset: int | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        fields = {
            "rate": rate,
            "burst": burst,
            "quota_limit": quota_limit,
            "quota_period": quota_period,
            "quota_offset": quota_offset,
            "description": description,
        }
        return await self.send(_api.create_plan(name, fields))

    async def list_plans(self) -> list[dict[str, Any]]:
        return await self.send(_api.list_plans())

    async def attach_plan(self, plan: str, key_id: str, *, scope: str | None = None) -> dict[str, Any]:
        return await self.send(_api.attach_plan(plan, key_id, scope))

    async def usage(
        self, key_id: str | None = None, *, since: date | str | None = None, until: date | str | None = None
    ) -> list[dict[str, Any]]:
        """``GET /v1/usage``: rows ``{"key_id", "day", "scope", "requests", "throttled", "errors",
        "units"}`` (a user sees only their own)."""
        return await self.send(_api.usage(key_id, since, until))

    # -- workflows --------------------------------------------------------------------------

    async def deploy_workflow(
        self,
        name: str,
        definition: Mapping[str, Any] | str,
        *,
        mapping: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        return await self.send(_api.deploy_workflow(name, definition, mapping, description))

    async def list_workflows(self) -> list[dict[str, Any]]:
        return await self.send(_api.list_workflows())

    async def start_execution(
        self, workflow: str, input: Any = None, *, wait: bool = False, name: str | None = None
    ) -> dict[str, Any]:
        """Start an execution: at once (``{"executionId", ...}``), or with ``wait=True`` the
        finished execution (the server waits)."""
        return await self.send(_api.start_execution(workflow, input, wait, name))

    async def describe_execution(self, execution_id: str) -> dict[str, Any]:
        return await self.send(_api.describe_execution(execution_id))

    async def wait_execution(self, execution_id: str, *, timeout: float = 300.0) -> dict[str, Any]:
        """Poll until the execution ends (0.1 s, growing to 2 s between polls): the execution,
        whatever its status; :class:`Timeout` (``wait_timeout``) after ``timeout`` seconds."""
        deadline = self._clock() + timeout
        for delay in poll_delays():
            record = await self.describe_execution(execution_id)
            left = self._wait_over(execution_id, record, deadline, timeout)
            if left is None:
                return record
            await self._sleep(min(delay, left))
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_executions(
        self, workflow: str | None = None, *, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self.send(_api.list_executions(workflow, status, limit))

    async def execution_history(self, execution_id: str) -> list[dict[str, Any]]:
        return await self.send(_api.execution_history(execution_id))

    async def stop_execution(
        self, execution_id: str, *, error: str | None = None, cause: str | None = None
    ) -> dict[str, Any]:
        return await self.send(_api.stop_execution(execution_id, error, cause))
