"""The blocking client: each method builds its call (``_api``) and sends it with retries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date
from types import TracebackType
from typing import Any, TypeVar

import httpx

from mlgate.client import _api
from mlgate.client._api import Call, poll_delays
from mlgate.client._base import DEFAULT_URL, ClientBase
from mlgate.client._errors import error_from_transport
from mlgate.client._retry import RetryBudget, RetryPolicy

__all__ = ["Client"]

T = TypeVar("T")
Image = bytes | bytearray | memoryview | str


class Client(ClientBase):
    """A blocking mlgate client (thread-safe: one per process is enough).

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
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
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
        self._http = httpx.Client(
            base_url=self.base_url, timeout=self.timeout, headers=self._default_headers, transport=transport
        )

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the policy says; its parsed answer or a typed error."""
        attempts = self._attempts(call)
        while True:
            try:
                response = self._http.request(**self._request(call))
            except httpx.TransportError as exc:
                delay = attempts.after_exception(exc)
                if delay is None:
                    raise error_from_transport(exc) from exc
            else:
                delay = self._settle(response, attempts)
                if delay is None:
                    return call.parse(response)
            self._sleep(delay)

    # -- models -----------------------------------------------------------------------------

    def predict(self, model: str, payload: Any, version: str | int | None = None) -> dict[str, Any]:
        """``POST /v1/models/{model}[/versions/{version}]/predict``: ``{"model_name",
        "model_version", "outputs"}``."""
        return self.send(_api.predict(model, payload, version))

    def predict_batch(
        self, model: str, inputs: Iterable[Any], version: str | int | None = None
    ) -> dict[str, Any]:
        """``POST .../batch``: many inputs, answered in order in ``results``."""
        return self.send(_api.predict_batch(model, inputs, version))

    def infer(
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
        return self.send(_api.infer(model, inputs, version, outputs, request_id, parameters))

    def list_models(self) -> list[dict[str, Any]]:
        return self.send(_api.list_models())

    def get_model(self, name: str) -> dict[str, Any]:
        return self.send(_api.get_model(name))

    # -- the reference services' original routes ------------------------------------------

    def temperatura(self, temps: Iterable[float]) -> dict[str, Any]:
        """``POST /prod``: 60 hourly °C -> ``{"prediccion": ..., "unidad": "Celsius"}``."""
        return self.send(_api.temperatura(temps))

    def intrusos(self, image: Image) -> dict[str, Any]:
        """``POST /prodfaces``: an image (bytes, or base64 text) -> ``{"detectado",
        "intruso_detectado", "objetos", "total_objetos"}``."""
        return self.send(_api.intrusos(image))

    def vehiculos(self, image: Image, version: str | int | None = None) -> dict[str, Any]:
        """The bicycle/motorcycle classifier: ``{"inferences": [p_bicycle, p_motorcycle], "top"}``."""
        return self.send(_api.vehiculos(image, version))

    def cardiaco(self, vitals: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Any:
        """``POST /predict`` (needs :meth:`login`): ``{"idAtencion", "inferences", "State"}``."""
        return self.send(_api.cardiaco(vitals))

    # -- users ------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> str:
        """``POST /auth/token``: the bearer token, also used by this client from now on."""
        self.token = self.send(_api.login(username, password))
        return self.token

    def create_user(
        self, username: str, password: str, *, email: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        return self.send(_api.create_user(username, password, email, role))

    def list_users(self) -> list[dict[str, Any]]:
        return self.send(_api.list_users())

    # -- keys, plans, usage -----------------------------------------------------------------

    def create_key(
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
        return self.send(_api.create_key(name, plan, role, owner, scope, expires_at))

    def list_keys(self, owner: str | None = None) -> list[dict[str, Any]]:
        return self.send(_api.list_keys(owner))

    def disable_key(self, key_id: str) -> dict[str, Any]:
        return self.send(_api.disable_key(key_id))

    def enable_key(self, key_id: str) -> dict[str, Any]:
        return self.send(_api.enable_key(key_id))

    def rotate_key(self, key_id: str, *, grace_seconds: int = 0) -> dict[str, Any]:
        return self.send(_api.rotate_key(key_id, grace_seconds))

    def create_plan(
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
        return self.send(_api.create_plan(name, fields))

    def list_plans(self) -> list[dict[str, Any]]:
        return self.send(_api.list_plans())

    def attach_plan(self, plan: str, key_id: str, *, scope: str | None = None) -> dict[str, Any]:
        return self.send(_api.attach_plan(plan, key_id, scope))

    def usage(
        self, key_id: str | None = None, *, since: date | str | None = None, until: date | str | None = None
    ) -> list[dict[str, Any]]:
        """``GET /v1/usage``: rows ``{"key_id", "day", "scope", "requests", "throttled", "errors",
        "units"}`` (a user sees only their own)."""
        return self.send(_api.usage(key_id, since, until))

    # -- workflows --------------------------------------------------------------------------

    def deploy_workflow(
        self,
        name: str,
        definition: Mapping[str, Any] | str,
        *,
        mapping: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        return self.send(_api.deploy_workflow(name, definition, mapping, description))

    def list_workflows(self) -> list[dict[str, Any]]:
        return self.send(_api.list_workflows())

    def start_execution(
        self, workflow: str, input: Any = None, *, wait: bool = False, name: str | None = None
    ) -> dict[str, Any]:
        """Start an execution: at once (``{"executionId", ...}``), or with ``wait=True`` the
        finished execution (the server waits)."""
        return self.send(_api.start_execution(workflow, input, wait, name))

    def describe_execution(self, execution_id: str) -> dict[str, Any]:
        return self.send(_api.describe_execution(execution_id))

    def wait_execution(self, execution_id: str, *, timeout: float = 300.0) -> dict[str, Any]:
        """Poll until the execution ends (0.1 s, growing to 2 s between polls): the execution,
        whatever its status; :class:`Timeout` (``wait_timeout``) after ``timeout`` seconds."""
        deadline = self._clock() + timeout
        for delay in poll_delays():
            record = self.describe_execution(execution_id)
            left = self._wait_over(execution_id, record, deadline, timeout)
            if left is None:
                return record
            self._sleep(min(delay, left))
        raise AssertionError("unreachable")  # pragma: no cover

    def list_executions(
        self, workflow: str | None = None, *, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return self.send(_api.list_executions(workflow, status, limit))

    def execution_history(self, execution_id: str) -> list[dict[str, Any]]:
        return self.send(_api.execution_history(execution_id))

    def stop_execution(
        self, execution_id: str, *, error: str | None = None, cause: str | None = None
    ) -> dict[str, Any]:
        return self.send(_api.stop_execution(execution_id, error, cause))
