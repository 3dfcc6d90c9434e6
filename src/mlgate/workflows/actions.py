"""Task resources → mlgate actions: read from the store, invoke a model, call a function, start a workflow.

Native resources take the state's effective input (after ``Parameters``):

- ``mlgate:store:get`` — ``{"s3_bucket"|"bucket", "s3_key"|"key"}`` →
  ``{"body": <base64>, "content_type", "size", "sha256", "s3_bucket", "s3_key"}``;
- ``mlgate:model:invoke`` — ``{"model", "version"?, "input"}`` → the model's output, through
  the :class:`~mlgate.dataplane.DataPlane` exactly like ``POST /v1/models/{name}/predict``;
- ``mlgate:python:<name>`` — the function registered under ``name`` (by a service), called
  with the input; never a module path taken from a definition;
- ``mlgate:workflow:start`` — ``{"workflow", "input"}`` → the child execution's output.

AWS resources run through a :class:`~mlgate.workflows.mapping.ResourceMapping` with Lambda
semantics: a Lambda ARN task gets the effective input as its event and its output is the
"function"'s return value; ``arn:aws:states:::lambda:invoke`` gets ``{"FunctionName",
"Payload"}`` and answers ``{"ExecutedVersion", "Payload", "StatusCode": 200}``;
``arn:aws:states:::states:startExecution.sync[:2]`` starts another workflow.

Buckets: with a ``file://`` default store, bucket ``b`` is the folder ``<store root>/buckets/b``;
with an ``s3://`` store, bucket ``b`` is the S3 bucket ``b`` read with the server's S3
settings, except the store's own model prefix, which workflows never read.

Failures are :class:`~mlgate.workflows.engine.TaskFailure` with names a definition can
``Retry``/``Catch``: ``Store.NoSuchKey``, ``Store.NoSuchBucket``, ``Store.AccessDenied``,
``Store.ObjectTooLarge``, ``Store.InvalidBucket``, ``Store.InvalidKey``, ``Store.Error``,
``Model.InvalidInput``, ``Model.NotFound``, ``Model.Overloaded`` (``Lambda.TooManyRequestsException``
when the task is a mapped Lambda, so an original definition's throttling Retry applies),
``Model.Timeout``, ``Model.Error``, ``Mlgate.InvalidParameters``, ``Mlgate.UnmappedResource``;
a Python function's exception is named by its class, as Lambda names ``errorType``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import inspect
import logging
import mimetypes
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from mlgate.dataplane import DataPlane
from mlgate.errors import (
    InvalidInput,
    MlgateError,
    ModelNotFound,
    ObjectNotFound,
    Overloaded,
    PredictionTimeout,
    StoreError,
    VersionNotFound,
    public_text,
)
from mlgate.runtimes.images import sniff_image_format
from mlgate.settings import S3Settings
from mlgate.store import ArtifactStore, FileArtifactStore, is_s3, open_store
from mlgate.workflows import arns
from mlgate.workflows.engine import TaskCall, TaskFailure, TaskInvoker
from mlgate.workflows.export import iter_states
from mlgate.workflows.jsonata import is_jsonata
from mlgate.workflows.mapping import (
    MappedResource,
    PathError,
    ResourceMapping,
    bucket_allowed,
    function_name,
    get_path,
)
from mlgate.workflows.store import dumps

__all__ = [
    "LAMBDA_INVOKE",
    "MAX_OBJECT_BYTES",
    "START_EXECUTION",
    "Actions",
    "ChildOutcome",
    "ChildStarter",
    "DataBuckets",
    "Function",
    "WorkflowObserver",
]

log = logging.getLogger("mlgate.workflows")

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
START_EXECUTION = (
    "arn:aws:states:::states:startExecution.sync",
    "arn:aws:states:::states:startExecution.sync:2",
)
#: Largest object ``store.get`` reads (a Lambda payload is at most 6 MB as well).
MAX_OBJECT_BYTES = 6 * 1024 * 1024
_MAX_OPEN_BUCKETS = 32
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")

#: A function callable from ``mlgate:python:<name>``: JSON in, JSON out (sync or async).
Function = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """How a child workflow ended."""

    execution_id: str
    status: str
    output: Any = None
    error: str | None = None
    cause: str | None = None


#: Starts a child workflow and waits for it: ``(workflow, input, call) -> outcome``.
ChildStarter = Callable[[str, Any, TaskCall], Awaitable[ChildOutcome]]


class WorkflowObserver(Protocol):
    """What data capture (:mod:`mlgate.monitoring.capture`) is told about workflows: a model a
    task invoked (sampled like an HTTP call) and an execution a Fail state ended (kept for review).
    Both are synchronous and must not block."""

    def model_invoked(self, workflow: str, model: str, version: int, payload: Any, output: Any) -> None: ...

    def execution_failed(
        self,
        workflow: str,
        execution_id: str,
        *,
        execution_input: Any,
        state: Any,
        error: str | None,
        cause: str | None,
    ) -> None: ...


#: The workflow whose task is running (this task's), for :meth:`WorkflowObserver.model_invoked`.
_WORKFLOW: ContextVar[str] = ContextVar("mlgate_workflow", default="")
#: The execution a task runs in: a routed alias (a canary split) deals it one sticky version.
_EXECUTION: ContextVar[str] = ContextVar("mlgate_execution", default="")


def _execution_of(call: TaskCall) -> str:
    return f"execution:{call.execution_id}" if call.execution_id else ""


def _workflow_of(call: TaskCall) -> str:
    machine = call.context.get("StateMachine")
    name = machine.get("Name") if isinstance(machine, Mapping) else None
    return name if isinstance(name, str) else ""


class _Reader(Protocol):
    def size(self, key: str) -> int: ...
    def get_bytes(self, key: str) -> bytes: ...


class DataBuckets:
    """Resolves the buckets a workflow names to readable stores, following the default store.

    ``file:///root`` → bucket ``b`` is ``/root/buckets/b``; ``s3://B/prefix`` → bucket ``b`` is
    S3 bucket ``b`` (same endpoint and credentials), but keys under ``B/prefix`` (the model
    files) are refused.
    """

    def __init__(self, store: ArtifactStore | str, *, s3: S3Settings | None = None) -> None:
        self.store = open_store(store, s3=s3) if isinstance(store, str) else store
        self.s3 = s3
        self._buckets: OrderedDict[str, _Reader] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, bucket: str, key: str) -> _Reader:
        """The store holding ``bucket``; TaskFailure for bad names and the model prefix."""
        if not isinstance(bucket, str) or not _BUCKET.match(bucket) or ".." in bucket:
            raise TaskFailure("Store.InvalidBucket", f"{bucket!r} is not a valid bucket name")
        if is_s3(self.store):
            own = self.store.prefix
            if bucket == self.store.bucket and (not own or key == own or key.startswith(own + "/")):
                raise TaskFailure(
                    "Store.AccessDenied",
                    f"s3://{bucket}/{own} holds mlgate's model files; workflows cannot read it",
                )
        with self._lock:
            reader = self._buckets.get(bucket)
            if reader is None:
                reader = self._open(bucket)
                self._buckets[bucket] = reader
                while len(self._buckets) > _MAX_OPEN_BUCKETS:  # bucket names come from inputs
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(bucket)
        return reader

    def _open(self, bucket: str) -> _Reader:
        if isinstance(self.store, FileArtifactStore):
            folder = self.store.root / "buckets" / bucket
            if not folder.is_dir():
                raise TaskFailure(
                    "Store.NoSuchBucket", f"no bucket {bucket!r} (no folder buckets/{bucket} in the store)"
                )
            return FileArtifactStore(folder)
        if is_s3(self.store):
            return open_store(f"s3://{bucket}", s3=self.s3)
        raise TaskFailure("Store.Error", "this store cannot serve buckets")

    def forget(self, bucket: str) -> None:
        with self._lock:
            self._buckets.pop(bucket, None)


def _content_type(key: str, data: bytes) -> str:
    image = sniff_image_format(data)
    if image is not None:
        return f"image/{image.lower()}"
    guessed, _ = mimetypes.guess_type(Path(key).name)
    return guessed or "application/octet-stream"


def _model_failure(exc: MlgateError, *, as_lambda: bool) -> TaskFailure:
    if isinstance(exc, ModelNotFound | VersionNotFound):
        return TaskFailure("Model.NotFound", exc.message)
    if isinstance(exc, Overloaded) or exc.status == 503:
        return TaskFailure(
            "Lambda.TooManyRequestsException" if as_lambda else "Model.Overloaded", exc.message
        )
    if isinstance(exc, PredictionTimeout):
        return TaskFailure("Model.Timeout", exc.message)
    if 400 <= exc.status < 500:
        return TaskFailure("Model.InvalidInput", exc.message)
    return TaskFailure("Model.Error", exc.message)


def _version(value: Any) -> str | int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TaskFailure("Mlgate.InvalidParameters", "version must be a version number or an alias")
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


class Actions:
    """Runs Task resources; one per server, shared by every execution."""

    def __init__(
        self,
        *,
        dataplane: DataPlane | None,
        buckets: DataBuckets | None,
        functions: Mapping[str, Function] | None = None,
        max_object_bytes: int = MAX_OBJECT_BYTES,
        observer: WorkflowObserver | None = None,
    ) -> None:
        self.dataplane = dataplane
        #: told of each model invocation (data capture); None: nobody
        self.observer = observer
        self.buckets = buckets
        self.functions = dict(functions or {})
        self.max_object_bytes = max_object_bytes

    def invoker(self, mapping: ResourceMapping, *, start_child: ChildStarter | None = None) -> TaskInvoker:
        """The task invoker for one execution of a workflow with this mapping."""

        async def invoke(call: TaskCall) -> Any:
            return await self.run(call, mapping, start_child=start_child)

        return invoke

    # -- dispatch -----------------------------------------------------------------------------

    async def run(
        self, call: TaskCall, mapping: ResourceMapping, *, start_child: ChildStarter | None = None
    ) -> Any:
        """Run one task: a native resource, or an AWS one through ``mapping``."""
        _WORKFLOW.set(_workflow_of(call))  # named in data capture's records of model calls
        _EXECUTION.set(_execution_of(call))
        resource = call.resource
        if resource.startswith("mlgate:"):
            if resource == "mlgate:store:get":
                _check_bucket(call.input, mapping.buckets)
            return await self._native(resource, call.input, call, start_child, as_lambda=False)
        if resource == LAMBDA_INVOKE:
            with _as_lambda_error():
                return await self._lambda_invoke(call, mapping, start_child)
        if resource in START_EXECUTION:
            return await self._start_execution(resource, call, mapping, start_child)
        entry = mapping.lookup(resource)
        if entry is None:
            raise TaskFailure("Mlgate.UnmappedResource", f"resource {resource!r} is not in the mapping file")
        if function_name(resource) is None:
            return await self._mapped(entry, call.input, call, start_child)
        with _as_lambda_error():
            return await self._mapped(entry, call.input, call, start_child)

    async def _native(
        self, resource: str, data: Any, call: TaskCall, start_child: ChildStarter | None, *, as_lambda: bool
    ) -> Any:
        if resource == "mlgate:store:get":
            return await self.store_get(data)
        if resource == "mlgate:model:invoke":
            params = _object(data, "mlgate:model:invoke")
            if not isinstance(params.get("model"), str):
                raise TaskFailure("Mlgate.InvalidParameters", 'mlgate:model:invoke needs {"model", "input"}')
            if "input" not in params:
                raise TaskFailure("Mlgate.InvalidParameters", 'mlgate:model:invoke needs {"model", "input"}')
            return await self.model_invoke(
                params["model"], params["input"], version=params.get("version"), as_lambda=as_lambda
            )
        if resource.startswith("mlgate:python:"):
            return await self.call_function(resource.removeprefix("mlgate:python:"), data)
        if resource == "mlgate:workflow:start":
            params = _object(data, "mlgate:workflow:start")
            workflow = params.get("workflow")
            if not isinstance(workflow, str):
                raise TaskFailure(
                    "Mlgate.InvalidParameters", 'mlgate:workflow:start needs {"workflow", "input"}'
                )
            outcome = await self._child(workflow, params.get("input", {}), call, start_child)
            return outcome.output
        raise TaskFailure("Mlgate.UnmappedResource", f"unknown mlgate resource {resource!r}")

    async def _mapped(
        self, entry: MappedResource, event: Any, call: TaskCall, start_child: ChildStarter | None
    ) -> Any:
        """Play a Lambda: the action gets (part of) the event; the entry shapes the return value."""
        try:
            selected = get_path(event, entry.input_from)
        except PathError as exc:
            raise TaskFailure("Mlgate.InvalidParameters", f"{entry.key}: input_from: {exc}") from None
        p = entry.params
        if entry.action == "store.get":
            params = dict(_object(selected, entry.key))
            if "bucket" in p:
                params.setdefault("bucket", p["bucket"])
            _check_bucket(params, p.get("buckets"))
            result = await self.store_get(params)
        elif entry.action == "model.invoke":
            result = await self.model_invoke(p["model"], selected, version=p.get("version"), as_lambda=True)
        elif entry.action == "python":
            result = await self.call_function(p["function"], selected)
        else:
            result = (await self._child(p["workflow"], selected, call, start_child)).output
        try:
            return entry.lambda_output(event, result)
        except PathError as exc:
            raise TaskFailure("Mlgate.InvalidParameters", f"{entry.key}: result: {exc}") from None

    async def _lambda_invoke(
        self, call: TaskCall, mapping: ResourceMapping, start_child: ChildStarter | None
    ) -> Any:
        params = _object(call.input, LAMBDA_INVOKE)
        name = params.get("FunctionName")
        if not isinstance(name, str):
            raise TaskFailure("Mlgate.InvalidParameters", f"{LAMBDA_INVOKE} needs a FunctionName")
        entry = mapping.lookup(name)
        if entry is None:
            raise TaskFailure(
                "Lambda.ResourceNotFoundException", f"function {name!r} is not in the mapping file"
            )
        payload = params.get("Payload")
        if payload is None:
            payload = {}
        elif isinstance(payload, str):  # JSON text, as Lambda's Invoke takes it (else the string itself)
            with contextlib.suppress(orjson.JSONDecodeError):
                payload = orjson.loads(payload)
        output = await self._mapped(entry, payload, call, start_child)
        return {"ExecutedVersion": "$LATEST", "Payload": output, "StatusCode": 200}

    async def _start_execution(
        self, resource: str, call: TaskCall, mapping: ResourceMapping, start_child: ChildStarter | None
    ) -> Any:
        params = _object(call.input, resource)
        arn = params.get("StateMachineArn")
        if not isinstance(arn, str):
            raise TaskFailure("Mlgate.InvalidParameters", f"{resource} needs a StateMachineArn")
        entry = mapping.lookup(arn)
        if entry is not None and entry.action != "workflow.start":
            raise TaskFailure(
                "Mlgate.InvalidParameters", f"{arn!r} is mapped to {entry.action}, not a workflow"
            )
        workflow = entry.params["workflow"] if entry is not None else arn.rsplit(":", 1)[-1]
        child_input = params.get("Input", {})
        if isinstance(child_input, str):
            try:
                child_input = orjson.loads(child_input)
            except orjson.JSONDecodeError:
                raise TaskFailure("Mlgate.InvalidParameters", "Input is not valid JSON text") from None
        outcome = await self._child(workflow, child_input, call, start_child)
        if resource.endswith(":2"):
            output: Any = outcome.output
        else:
            output = dumps(outcome.output)
        # the child's name is its id (started without a name)
        child_arn = arns.execution_arn(workflow, outcome.execution_id)
        return {"ExecutionArn": child_arn, "Output": output, "Status": outcome.status}

    # -- the actions --------------------------------------------------------------------------

    async def store_get(self, params: Any) -> dict[str, Any]:
        """Read an object: ``{"s3_bucket"|"bucket", "s3_key"|"key"}`` → base64 body and metadata."""
        p = _object(params, "store.get")
        bucket = p.get("s3_bucket", p.get("bucket"))
        key = p.get("s3_key", p.get("key"))
        if not isinstance(bucket, str) or not isinstance(key, str):
            raise TaskFailure("Mlgate.InvalidParameters", 'store.get needs {"s3_bucket", "s3_key"} (strings)')
        if self.buckets is None:
            raise TaskFailure("Store.Error", "this server has no object store")
        data = await asyncio.to_thread(self._read, bucket, key)
        return {
            "body": base64.b64encode(data).decode("ascii"),
            "content_type": _content_type(key, data),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "s3_bucket": bucket,
            "s3_key": key,
        }

    def _read(self, bucket: str, key: str) -> bytes:
        assert self.buckets is not None
        reader = self.buckets.open(bucket, key)
        try:
            size = reader.size(key)
            if size > self.max_object_bytes:
                raise TaskFailure(
                    "Store.ObjectTooLarge",
                    f"{bucket}/{key} has {size} bytes; the limit is {self.max_object_bytes}",
                )
            return reader.get_bytes(key)
        except ObjectNotFound:
            raise TaskFailure("Store.NoSuchKey", f"no object {key!r} in bucket {bucket!r}") from None
        except InvalidInput as exc:
            raise TaskFailure("Store.InvalidKey", exc.message) from None
        except StoreError as exc:
            if "NoSuchBucket" in exc.message:
                self.buckets.forget(bucket)
                raise TaskFailure("Store.NoSuchBucket", f"no bucket {bucket!r}") from None
            if "AccessDenied" in exc.message or "Forbidden" in exc.message:
                raise TaskFailure("Store.AccessDenied", exc.message) from None
            raise TaskFailure("Store.Error", exc.message) from None

    async def model_invoke(
        self, model: str, payload: Any, *, version: Any = None, as_lambda: bool = False
    ) -> Any:
        """The model's output for ``payload``, through its processor, runtime and batcher."""
        if self.dataplane is None:
            raise TaskFailure("Model.NotFound", "this server serves no models")
        try:
            prediction = await self.dataplane.predict(
                model, payload, version=_version(version), who=_EXECUTION.get() or None
            )
        except MlgateError as exc:
            raise _model_failure(exc, as_lambda=as_lambda) from None
        if self.observer is not None:
            workflow = _WORKFLOW.get()
            try:
                self.observer.model_invoked(
                    workflow, prediction.model, prediction.version, payload, prediction.output
                )
            except Exception:  # capture never fails a task
                log.exception("workflow %s: data capture failed for model %s", workflow, model)
        return prediction.output

    async def call_function(self, name: str, payload: Any) -> Any:
        """Call a registered function; its exception's class name is the error (Lambda style)."""
        fn = self.functions.get(name)
        if fn is None:
            raise TaskFailure("Mlgate.UnmappedResource", f"no function {name!r} is registered")
        try:
            if inspect.iscoroutinefunction(fn):
                return await fn(payload)
            result = await asyncio.to_thread(fn, payload)
            if inspect.isawaitable(result):
                return await result
            return result
        except TaskFailure:
            raise
        except Exception as exc:
            cause = public_text(str(exc))
            if cause != str(exc):  # the history shows the public text; the log keeps the rest
                log.warning("workflow function %r failed", name, exc_info=exc)
            raise TaskFailure(type(exc).__name__, cause) from exc

    async def _child(
        self, workflow: str, data: Any, call: TaskCall, start_child: ChildStarter | None
    ) -> ChildOutcome:
        if start_child is None:
            raise TaskFailure("Mlgate.UnmappedResource", "starting workflows is not available here")
        outcome = await start_child(workflow, data, call)
        if outcome.status != "SUCCEEDED":
            raise TaskFailure(
                outcome.error or f"Workflow.{outcome.status}",
                outcome.cause
                or f"workflow {workflow!r} execution {outcome.execution_id} ended {outcome.status}",
            )
        return outcome

    # -- deploy-time checks -------------------------------------------------------------------

    def check(self, doc: Mapping[str, Any], mapping: ResourceMapping) -> list[str]:
        """Problems that would make tasks fail on every run: unmapped resources, unknown functions."""
        problems: list[str] = []
        for where, state in iter_states(dict(doc)):
            resource = state.get("Resource")
            if state.get("Type") != "Task" or not isinstance(resource, str):
                continue
            params = state.get("Parameters", state.get("Arguments"))  # Arguments: a JSONata state's
            params = params if isinstance(params, dict) else {}
            problem = self._check_resource(resource, params, mapping)
            if problem:
                problems.append(f"state {where!r}: {problem}")
        for key, entry in mapping.entries.items():
            if entry.action == "python" and entry.params["function"] not in self.functions:
                problems.append(f"mapping {key!r}: no function {entry.params['function']!r} is registered")
        return problems

    def _check_resource(self, resource: str, params: dict[str, Any], mapping: ResourceMapping) -> str | None:
        if resource.startswith("mlgate:python:"):
            name = resource.removeprefix("mlgate:python:")
            return None if name in self.functions else f"no function {name!r} is registered"
        if resource.startswith("mlgate:"):
            if resource not in ("mlgate:store:get", "mlgate:model:invoke", "mlgate:workflow:start"):
                return f"unknown mlgate resource {resource!r}"
            return None
        if resource == LAMBDA_INVOKE:
            function = params.get("FunctionName")
            if "FunctionName.$" in params or is_jsonata(function):
                return None  # chosen at run time
            if not isinstance(function, str):
                return f"{LAMBDA_INVOKE} needs Parameters.FunctionName (Arguments.FunctionName in JSONata)"
            if mapping.lookup(function) is None:
                return f"function {function!r} is not in the mapping file"
            return None
        if resource in START_EXECUTION:
            return None
        if mapping.lookup(resource) is None:
            hint = f" (function {function_name(resource)!r})" if function_name(resource) else ""
            return f"resource {resource!r}{hint} is not in the mapping file"
        return None


#: errors a "Lambda" function does not raise itself: the Lambda service's, Step Functions' and
#: mlgate's own (a mapping that names nothing) keep a plain-text cause
_SERVICE_ERRORS = ("Lambda.", "States.", "Mlgate.")


@contextlib.contextmanager
def _as_lambda_error() -> Iterator[None]:
    """A mapped Lambda's failure as Step Functions reports a function error.

    The error is the function's ``errorType`` (already the action's error name) and the cause is
    the JSON text of Lambda's error payload: ``{"errorMessage", "errorType", "requestId",
    "stackTrace"}`` (``stackTrace`` is empty: mlgate does not show server frames).
    """
    try:
        yield
    except TaskFailure as failure:
        if failure.error.startswith(_SERVICE_ERRORS):
            raise
        cause = dumps(
            {
                "errorMessage": failure.cause or failure.error,
                "errorType": failure.error,
                "requestId": str(uuid.uuid4()),
                "stackTrace": [],
            }
        )
        raise TaskFailure(failure.error, cause) from failure


def _check_bucket(params: Any, allowed: tuple[str, ...] | None) -> None:
    """A bucket the workflow's mapping does not list is refused, whatever the input names."""
    if allowed is None or not isinstance(params, dict):
        return
    bucket = params.get("s3_bucket", params.get("bucket"))
    if isinstance(bucket, str) and not bucket_allowed(bucket, allowed):
        raise TaskFailure("Store.AccessDenied", f"this workflow may not read bucket {bucket!r}")


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TaskFailure("Mlgate.InvalidParameters", f"{what} needs a JSON object as input")
    return value
