"""What each client method sends and how it reads the answer — written once, for both clients.

Each builder returns a :class:`Call`: the request (method, path, query, JSON body or bytes),
whether it is idempotent, and the parser of a successful answer. :class:`~mlgate.client.Client`
and :class:`~mlgate.client.AsyncClient` only send calls (with retries) and parse them.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from importlib import metadata
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from mlgate.client._errors import InvalidInput, MlgateError

__all__ = ["TERMINAL", "Call", "poll_delays"]

T = TypeVar("T")

#: An execution's statuses once it has ended (anything but RUNNING).
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})

try:
    _VERSION = metadata.version("mlgate")
except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
    _VERSION = "0"
USER_AGENT = f"mlgate-client/{_VERSION} httpx/{httpx.__version__}"


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and the parser of its successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    content: bytes | None = None
    content_type: str | None = None
    params: Mapping[str, str] | None = None
    #: safe to send twice (GET, PUT, DELETE): also retried when an answer was lost
    idempotent: bool = False


def _json_bytes(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"the payload is not JSON: {exc}", status=None) from None


def _post(path: str, body: Any, parse: Callable[[httpx.Response], T], **kw: Any) -> Call[T]:
    return Call("POST", path, parse, _json_bytes(body), "application/json", **kw)


def _get(path: str, parse: Callable[[httpx.Response], T], params: Mapping[str, Any] | None = None) -> Call[T]:
    query = {k: str(v) for k, v in (params or {}).items() if v is not None}
    return Call("GET", path, parse, params=query or None, idempotent=True)


def _seg(value: str | int) -> str:
    """A path segment, escaped (a model name with a slash cannot reach another route)."""
    return quote(str(value), safe="")


def _model_path(model: str, version: str | int | None, action: str) -> str:
    base = f"/v1/models/{_seg(model)}"
    return f"{base}/versions/{_seg(version)}/{action}" if version is not None else f"{base}/{action}"


# -- parsers ---------------------------------------------------------------------------------


def json_of(response: httpx.Response) -> Any:
    """The answer's JSON (a malformed answer is a :class:`MlgateError`, not a ValueError)."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        raise MlgateError(
            f"the server answered {response.status_code} with a body that is not JSON",
            status=response.status_code,
            code="invalid_response",
            request_id=response.headers.get("x-request-id"),
            body=response.text[:2000],
            headers=dict(response.headers.items()),
        ) from None


def _field(name: str) -> Callable[[httpx.Response], Any]:
    def parse(response: httpx.Response) -> Any:
        body = json_of(response)
        return body[name] if isinstance(body, dict) and name in body else body

    return parse


def _envelope(response: httpx.Response) -> Any:
    """A reference service's original envelope ``{"statusCode": 200, "body": {...}}``: the body."""
    body = json_of(response)
    if isinstance(body, dict) and "statusCode" in body and "body" in body:
        return body["body"]
    return body


def _outputs(response: httpx.Response) -> Any:
    body = json_of(response)
    return body["outputs"] if isinstance(body, dict) and "outputs" in body else body


# -- helpers ---------------------------------------------------------------------------------


def image_base64(image: bytes | bytearray | memoryview | str) -> str:
    """An image as base64 text: bytes are encoded, a string is taken as base64 already."""
    if isinstance(image, str):
        return image
    return base64.b64encode(bytes(image)).decode("ascii")


def _shape_of(data: Any) -> list[int]:
    shape: list[int] = []
    while isinstance(data, list | tuple):
        shape.append(len(data))
        if not data:
            break
        data = data[0]
    return shape


def _flatten(data: Any, depth: int) -> list[Any]:
    if depth == 0:
        return [data]
    if not isinstance(data, list | tuple):
        raise InvalidInput("a tensor's nested lists must be rectangular", status=None)
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item, depth - 1))
    return out


def _datatype(values: Sequence[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    if all(isinstance(v, str | bytes) for v in values):
        return "BYTES"
    raise InvalidInput("a tensor holds numbers, booleans or strings", status=None)


def tensor(
    name: str, data: Any, datatype: str | None = None, shape: Sequence[int] | None = None
) -> dict[str, Any]:
    """An Open Inference Protocol input from a (nested) list: shape and datatype inferred
    (INT64, FP64, BOOL or BYTES) unless given; ``data`` is sent flattened, row-major."""
    dims = list(shape) if shape is not None else _shape_of(data)
    flat = _flatten(data, len(_shape_of(data)))
    if math.prod(dims) != len(flat):
        raise InvalidInput(f"tensor {name!r}: shape {dims} does not hold {len(flat)} values", status=None)
    return {"name": name, "shape": dims, "datatype": datatype or _datatype(flat), "data": flat}


def _inputs(inputs: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(inputs, Mapping):  # {"x": [[...]]}: one tensor per name
        return [tensor(str(name), data) for name, data in inputs.items()]
    out = []
    for item in inputs:
        if not isinstance(item, Mapping):
            raise InvalidInput("inputs are OIP tensors (dicts) or a dict of name -> nested list", status=None)
        item = dict(item)
        if "shape" not in item or "datatype" not in item:  # {"name", "data"}: the rest inferred
            item = {**item, **tensor(str(item.get("name", "input")), item.get("data"))}
        out.append(item)
    return out


def poll_delays(first: float = 0.1, factor: float = 1.5, cap: float = 2.0) -> Iterable[float]:
    """The waits between polls of a running execution: 0.1 s growing to 2 s."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * factor)


# -- the calls -------------------------------------------------------------------------------


def predict(model: str, payload: Any, version: str | int | None) -> Call[dict[str, Any]]:
    return _post(_model_path(model, version, "predict"), payload, json_of)


def predict_batch(model: str, inputs: Iterable[Any], version: str | int | None) -> Call[dict[str, Any]]:
    return _post(_model_path(model, version, "batch"), {"inputs": list(inputs)}, json_of)


def infer(
    model: str,
    inputs: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    version: str | int | None,
    outputs: Iterable[str | Mapping[str, Any]] | None,
    request_id: str | None,
    parameters: Mapping[str, Any] | None,
) -> Call[dict[str, Any]]:
    body: dict[str, Any] = {"inputs": _inputs(inputs)}
    if outputs is not None:
        body["outputs"] = [{"name": o} if isinstance(o, str) else dict(o) for o in outputs]
    if request_id is not None:
        body["id"] = request_id
    if parameters is not None:
        body["parameters"] = dict(parameters)
    path = f"/v2/models/{_seg(model)}"
    if version is not None:
        path += f"/versions/{_seg(version)}"
    return _post(path + "/infer", body, json_of)


def list_models() -> Call[list[dict[str, Any]]]:
    return _get("/v1/models", _field("models"))


def get_model(name: str) -> Call[dict[str, Any]]:
    return _get(f"/v1/models/{_seg(name)}", json_of)


# the reference services' original routes (SPEC §2)


def temperatura(temps: Iterable[float]) -> Call[dict[str, Any]]:
    return _post("/prod", {"temperaturas": [float(t) for t in temps]}, _envelope)


def intrusos(image: bytes | bytearray | memoryview | str) -> Call[dict[str, Any]]:
    return _post("/prodfaces", {"body": {"image": image_base64(image)}}, _envelope)


def vehiculos(image: bytes | bytearray | memoryview | str, version: str | int | None) -> Call[dict[str, Any]]:
    return _post(_model_path("vehiculos", version, "predict"), {"image": image_base64(image)}, _outputs)


def cardiaco(vitals: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Call[Any]:
    payload = dict(vitals) if isinstance(vitals, Mapping) else [dict(v) for v in vitals]
    return _post("/predict", payload, json_of)


# users and tokens


def login(username: str, password: str) -> Call[str]:
    return _post("/auth/token", {"username": username, "password": password}, _field("access_token"))


def create_user(username: str, password: str, email: str | None, role: str | None) -> Call[dict[str, Any]]:
    body = {"username": username, "password": password, "email": email, "role": role}
    return _post("/auth/create_user", {k: v for k, v in body.items() if v is not None}, json_of)


# keys, plans and usage


def create_key(
    name: str | None,
    plan: str | None,
    role: str | None,
    owner: str | None,
    scope: str | None,
    expires_at: str | None,
) -> Call[dict[str, Any]]:
    body = {
        "name": name,
        "plan": plan,
        "role": role,
        "owner": owner,
        "scope": scope,
        "expires_at": expires_at,
    }
    return _post("/v1/keys", {k: v for k, v in body.items() if v is not None}, json_of)


def list_keys(owner: str | None) -> Call[list[dict[str, Any]]]:
    return _get("/v1/keys", _field("keys"), {"owner": owner})


def disable_key(key_id: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/v1/keys/{_seg(key_id)}/disable", json_of, idempotent=True)


def enable_key(key_id: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/v1/keys/{_seg(key_id)}/enable", json_of, idempotent=True)


def rotate_key(key_id: str, grace_seconds: int) -> Call[dict[str, Any]]:
    return Call(
        "POST", f"/v1/keys/{_seg(key_id)}/rotate", json_of, params={"grace_seconds": str(grace_seconds)}
    )


def create_plan(name: str, fields: Mapping[str, Any]) -> Call[dict[str, Any]]:
    return _post("/v1/plans", {"name": name, **{k: v for k, v in fields.items() if v is not None}}, json_of)


def list_plans() -> Call[list[dict[str, Any]]]:
    return _get("/v1/plans", _field("plans"))


def attach_plan(plan: str, key_id: str, scope: str | None) -> Call[dict[str, Any]]:
    params = {"scope": scope} if scope is not None else None
    return Call("PUT", f"/v1/plans/{_seg(plan)}/keys/{_seg(key_id)}", json_of, params=params, idempotent=True)


def _day(value: date | str | None) -> str | None:
    return value.isoformat() if isinstance(value, date) else value


def usage(
    key_id: str | None, since: date | str | None, until: date | str | None
) -> Call[list[dict[str, Any]]]:
    params = {"key_id": key_id, "since": _day(since), "until": _day(until)}
    return _get("/v1/usage", _field("usage"), params)


def list_users() -> Call[list[dict[str, Any]]]:
    return _get("/v1/users", _field("users"))


# workflows and executions (SPEC §4)


def deploy_workflow(
    name: str, definition: Mapping[str, Any] | str, mapping: Mapping[str, Any] | None, description: str | None
) -> Call[dict[str, Any]]:
    body: dict[str, Any] = {"definition": definition if isinstance(definition, str) else dict(definition)}
    if mapping is not None:
        body["mapping"] = dict(mapping)
    if description is not None:
        body["description"] = description
    return Call(
        "PUT", f"/v1/workflows/{_seg(name)}", json_of, _json_bytes(body), "application/json", idempotent=True
    )


def list_workflows() -> Call[list[dict[str, Any]]]:
    return _get("/v1/workflows", _field("workflows"))


def start_execution(workflow: str, data: Any, wait: bool, name: str | None) -> Call[dict[str, Any]]:
    params = {"mode": "sync" if wait else "async"}
    if name is not None:
        params["execution_name"] = name
    return _post(
        f"/v1/workflows/{_seg(workflow)}/executions", {} if data is None else data, json_of, params=params
    )


def describe_execution(execution_id: str) -> Call[dict[str, Any]]:
    return _get(f"/v1/executions/{_seg(execution_id)}", json_of)


def list_executions(workflow: str | None, status: str | None, limit: int) -> Call[list[dict[str, Any]]]:
    return _get(
        "/v1/executions", _field("executions"), {"workflow": workflow, "status": status, "limit": limit}
    )


def execution_history(execution_id: str) -> Call[list[dict[str, Any]]]:
    return _get(f"/v1/executions/{_seg(execution_id)}/history", _field("events"))


def stop_execution(execution_id: str, error: str | None, cause: str | None) -> Call[dict[str, Any]]:
    body = {k: v for k, v in {"error": error, "cause": cause}.items() if v is not None}
    return _post(f"/v1/executions/{_seg(execution_id)}/stop", body, json_of)
