"""The AWS Step Functions API (awsJson1_0): ``POST /`` with ``X-Amz-Target: AWSStepFunctions.<Op>``.

So that ``boto3.client("stepfunctions", endpoint_url=…)`` and ``aws stepfunctions --endpoint-url
…`` drive mlgate's workflows. This module is the wire — parse, authenticate, dispatch, answer in
AWS's shapes with AWS's error ``__type``\\ s (botocore raises ``client.exceptions.<__type>``);
:mod:`mlgate.workflows.sfn_api` translates the shapes.

Authentication is mlgate's (an API key in ``x-api-key`` or a bearer token); AWS's SigV4
``Authorization: AWS4-HMAC-SHA256 …`` is not a credential here and is ignored. Create, Update
and Delete need an admin (as deploying); the rest any caller, who sees their own executions
(admins: all), as on ``/v1/executions``. Starting is metered like ``POST
/v1/workflows/{name}/executions``. ``MLGATE_SFN__UNAUTHENTICATED=true`` (a loopback bind only)
turns calls without credentials from loopback peers into an admin's: a local emulator for the
AWS CLI, which cannot add a header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from mlgate.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MlgateError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    QuotaExceeded,
    Throttled,
    Unauthorized,
)
from mlgate.http.deps import caller_of, exchange_of, server_of
from mlgate.http.gateway import GatewayRejected, admit, bearer_of
from mlgate.settings import SfnSettings, is_loopback
from mlgate.types import NAME_PATTERN, Caller
from mlgate.workflows.service import WorkflowService
from mlgate.workflows.sfn_api import (
    MAX_CAUSE,
    MAX_DEFINITION,
    MAX_ERROR,
    Arns,
    SfnError,
    SfnQueries,
    aws_event,
    billing_details,
    decode_token,
    encode_token,
    epoch,
    execution_description,
    execution_item,
    optional_bool,
    optional_str,
    page_size,
    parse_input,
    required_str,
    state_machine_description,
    state_machine_item,
    status_filter,
    validate_execution_name,
    validate_state_machine_name,
)
from mlgate.workflows.store import ExecutionEvent, ExecutionRecord, WorkflowRecord

__all__ = ["CONTENT_TYPE", "TARGET_PREFIX", "router"]

log = logging.getLogger("mlgate.sfn")
router = APIRouter(tags=["aws-stepfunctions"])

CONTENT_TYPE = "application/x-amz-json-1.0"
TARGET_PREFIX = "AWSStepFunctions."
#: who calls without credentials in the unauthenticated emulator mode
EMULATOR = Caller(kind="key", id="sfn-emulator", username=None, role="admin")
#: GetExecutionHistory reads the store in chunks, and stops a page past this many bytes of payload
_HISTORY_CHUNK = 200
_PAGE_BYTES = 8 * 1024 * 1024
_DELETE_ATTEMPTS = 3


@dataclass(slots=True)
class _Call:
    request: Request
    service: WorkflowService
    queries: SfnQueries
    arns: Arns
    settings: SfnSettings
    body: dict[str, Any]
    #: signs and checks page tokens (derived from the JWT secret: the same on every replica)
    token_key: bytes = b""
    _caller: Caller | None = None

    def emulated(self) -> bool:
        """No credentials, the emulator mode on, a loopback peer, and a loopback ``Host`` (and
        ``Origin``, if any): a web page whose own domain resolves to 127.0.0.1 (DNS rebinding)
        sends its own host name, so it cannot act as the emulator's admin."""
        x = exchange_of(self.request)
        if not self.settings.unauthenticated or x.api_key or bearer_of(x.authorization):
            return False
        client = self.request.client
        if client is None or not is_loopback(client.host):
            return False
        host = _hostname(self.request.headers.get("host", ""))
        origin = self.request.headers.get("origin")
        if origin is not None:
            parsed = urlsplit(origin)
            if parsed.scheme not in ("http", "https") or not is_loopback(parsed.hostname or ""):
                return False
        return is_loopback(host)

    async def caller(self) -> Caller:
        if self._caller is None:
            if self.emulated():
                self._caller = EMULATOR
            else:
                caller = await caller_of(self.request)
                if caller is None:
                    raise Unauthorized(
                        "send an mlgate API key in the x-api-key header (a boto3 event hook adds it; "
                        "AWS signatures are not credentials here)"
                    )
                self._caller = caller
        return self._caller

    async def admin(self) -> Caller:
        caller = await self.caller()
        if caller.role != "admin":
            raise Forbidden("creating, updating and deleting state machines needs an admin key")
        return caller

    async def owner(self) -> str:
        return _owner_of(await self.caller())


def _hostname(host: str) -> str:
    """The host name of a ``Host`` header value (``[::1]:8000`` → ``::1``, ``a:80`` → ``a``)."""
    return urlsplit(f"//{host}").hostname or "" if host else ""


def _owner_of(caller: Caller) -> str:
    """As :func:`mlgate.http.routes_workflows.owner_of`: the user, else the key."""
    return caller.username if caller.username else f"key:{caller.id}"


def _answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=CONTENT_TYPE, headers=headers)


@router.post(
    "/",
    summary="AWS Step Functions API (awsJson1_0: X-Amz-Target: AWSStepFunctions.<Operation>)",
    openapi_extra={
        "requestBody": {"required": True, "content": {CONTENT_TYPE: {"schema": {"type": "object"}}}},
        "parameters": [
            {"name": "X-Amz-Target", "in": "header", "required": True, "schema": {"type": "string"}}
        ],
    },
)
async def step_functions(request: Request) -> Response:
    request_id = exchange_of(request).request_id
    headers = {"x-amzn-RequestId": request_id}
    try:
        target = request.headers.get("x-amz-target", "")
        operation = (
            _OPERATIONS.get(target.removeprefix(TARGET_PREFIX)) if target.startswith(TARGET_PREFIX) else None
        )
        if operation is None:
            raise SfnError("UnknownOperationException", f"unknown operation {target[:100]!r}")
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            raise SfnError("SerializationException", "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise SfnError("SerializationException", "the request body must be a JSON object")
        server = server_of(request)
        service = server.workflows
        if service is None:
            raise Overloaded("the workflow service is starting; retry shortly", retry_after=1.0)
        settings = server.settings.sfn
        call = _Call(
            request,
            service,
            SfnQueries(server.repository.engine),
            Arns(settings.region, settings.account),
            settings,
            body,
            server.gate.tokens.derived_key("mlgate-sfn-page-tokens"),
        )
        return _answer(await operation(call), headers=headers)
    except SfnError as exc:
        return _answer(exc.body(), exc.status, headers)
    except GatewayRejected as rejected:
        message = rejected.body.get("message") if isinstance(rejected.body, dict) else None
        code, status = _REJECTIONS.get(rejected.status, ("ServiceUnavailable", rejected.status))
        body = {"__type": code, "message": str(message or code)}
        return _answer(body, status, {**headers, **rejected.headers})
    except MlgateError as exc:
        code, status = _mlgate_error(exc)
        retry = getattr(exc, "retry_after", None)
        if retry is not None:
            headers["Retry-After"] = str(max(1, int(retry + 0.999)))
        return _answer({"__type": code, "message": exc.message}, status, headers)
    except Exception:
        log.exception("the Step Functions API failed (request %s)", request_id)
        return _answer({"__type": "InternalFailure", "message": "internal error"}, 500, headers)


_REJECTIONS = {
    401: ("UnrecognizedClientException", 401),
    403: ("AccessDeniedException", 403),
    429: ("ThrottlingException", 400),
    503: ("ServiceUnavailable", 503),
}


def _mlgate_error(exc: MlgateError) -> tuple[str, int]:
    """mlgate's errors that no operation turned into a specific AWS one."""
    if isinstance(exc, Unauthorized):
        return "UnrecognizedClientException", 401
    if isinstance(exc, Forbidden):
        return "AccessDeniedException", 403
    if isinstance(exc, Throttled):
        return "ThrottlingException", 400
    if isinstance(exc, QuotaExceeded):
        return "ServiceQuotaExceededException", 400
    if isinstance(exc, Overloaded):
        return "ServiceUnavailable", 503
    if isinstance(exc, InvalidInput):
        return "ValidationException", 400
    if isinstance(exc, NotFound):
        return "ResourceNotFound", 400
    if isinstance(exc, Conflict):
        return "ConflictException", 400
    return "InternalFailure", exc.status if exc.status >= 500 else 500


# -- state machines -----------------------------------------------------------------------------


def _machine_name(call: _Call, field: str = "stateMachineArn") -> str:
    return Arns.parse_state_machine(required_str(call.body, field, max_len=256), field)


def _role(call: _Call, required: bool) -> str | None:
    """``roleArn``: checked as an ARN and otherwise ignored (mlgate runs tasks as itself)."""
    role = (required_str if required else optional_str)(call.body, "roleArn", max_len=256)
    if role is not None and not role.startswith("arn:"):
        raise SfnError("InvalidArn", f"Invalid Arn: '{role}'")
    return role


async def _workflow(call: _Call, name: str) -> WorkflowRecord:
    if not NAME_PATTERN.match(name):
        raise SfnError(
            "StateMachineDoesNotExist", f"State Machine Does Not Exist: '{call.arns.state_machine(name)}'"
        )
    try:
        return await call.service.get(name)
    except NotFound:
        raise SfnError(
            "StateMachineDoesNotExist", f"State Machine Does Not Exist: '{call.arns.state_machine(name)}'"
        ) from None


def _invalid_definition(exc: InvalidInput) -> SfnError:
    errors = exc.details.get("errors") if isinstance(exc.details, dict) else None
    detail = "; ".join(str(e) for e in errors) if isinstance(errors, list) and errors else exc.message
    return SfnError("InvalidDefinition", f"Invalid State Machine Definition: '{detail}'")


def _same_definition(a: str, b: str) -> bool:
    try:
        return bool(orjson.loads(a) == orjson.loads(b))
    except orjson.JSONDecodeError:
        return a == b


async def create_state_machine(call: _Call) -> dict[str, Any]:
    await call.admin()
    name = validate_state_machine_name(required_str(call.body, "name", max_len=80))
    definition = required_str(call.body, "definition", max_len=MAX_DEFINITION)
    _role(call, required=True)
    kind = call.body.get("type", "STANDARD")
    if kind not in ("STANDARD", "EXPRESS"):
        raise SfnError("ValidationException", f"type must be STANDARD or EXPRESS, not {str(kind)[:40]!r}")
    try:
        existing: WorkflowRecord | None = await call.service.get(name)
    except NotFound:
        existing = None
    if existing is not None:  # AWS: the same definition again answers the existing machine
        if not _same_definition(existing.definition, definition):
            raise SfnError(
                "StateMachineAlreadyExists",
                f"State Machine Already Exists: '{call.arns.state_machine(name)}'",
            )
        record = existing
    else:
        try:
            record = await call.service.deploy(name, definition)
        except InvalidInput as exc:
            raise _invalid_definition(exc) from None
    return {"stateMachineArn": call.arns.state_machine(name), "creationDate": epoch(record.created_at)}


async def update_state_machine(call: _Call) -> dict[str, Any]:
    await call.admin()
    name = _machine_name(call)
    definition = optional_str(call.body, "definition", max_len=MAX_DEFINITION, min_len=1)
    role = _role(call, required=False)
    others = ("loggingConfiguration", "tracingConfiguration", "encryptionConfiguration")
    if definition is None and role is None and not any(call.body.get(k) is not None for k in others):
        raise SfnError(
            "MissingRequiredParameter", "give a definition, a roleArn or a configuration to update"
        )
    record = await _workflow(call, name)
    if definition is not None:
        try:  # the mapping and the description stay
            record = await call.service.deploy(name, definition, mapping=record.mapping)
        except InvalidInput as exc:
            raise _invalid_definition(exc) from None
    return {"updateDate": epoch(record.updated_at), "revisionId": str(record.revision)}


async def describe_state_machine(call: _Call) -> dict[str, Any]:
    await call.caller()
    return state_machine_description(await _workflow(call, _machine_name(call)), call.arns)


async def list_state_machines(call: _Call) -> dict[str, Any]:
    await call.caller()
    size = page_size(call.body)
    token = optional_str(call.body, "nextToken", max_len=1024, min_len=1)
    after = decode_token(token, "ListStateMachines", "", call.token_key) if token else ""
    if not isinstance(after, str):
        raise SfnError("InvalidToken", "Invalid Token")
    records = [w for w in await call.service.list_workflows() if w.name > after]
    page = records[:size]
    answer: dict[str, Any] = {"stateMachines": [state_machine_item(w, call.arns) for w in page]}
    if len(records) > size:
        answer["nextToken"] = encode_token("ListStateMachines", "", page[-1].name, call.token_key)
    return answer


async def delete_state_machine(call: _Call) -> dict[str, Any]:
    """Running executions are stopped (AWS lets them finish), then the workflow is deleted with
    its executions and their histories. A machine that does not exist is not an error (AWS)."""
    await call.admin()
    name = _machine_name(call)
    if not NAME_PATTERN.match(name):
        return {}
    for _ in range(_DELETE_ATTEMPTS):
        for execution_id in await asyncio.to_thread(call.queries.running, name):
            with contextlib.suppress(Conflict, NotFound):
                await call.service.stop_execution(
                    execution_id, error="States.Aborted", cause="the state machine was deleted"
                )
        try:
            await asyncio.to_thread(call.queries.delete_workflow, name)
        except Exception as exc:  # an execution started meanwhile (foreign key): stop it too
            log.info("deleting workflow %s: %s; retrying", name, type(exc).__name__)
            continue
        call.service.forget(name)
        return {}
    raise SfnError("ConflictException", f"executions of '{name}' keep starting; retry the deletion")


# -- executions ---------------------------------------------------------------------------------


async def _start(call: _Call, workflow: str, data: Any, name: str | None) -> ExecutionRecord:
    """Check, authenticate, meter (as ``POST /v1/workflows/{name}/executions``) and start (async)."""
    try:
        stored = call.service.check_input(data)
    except (PayloadTooLarge, InvalidInput) as exc:
        raise SfnError(
            "InvalidExecutionInput", f"Invalid State Machine Execution Input: {exc.message}"
        ) from None
    if call.emulated():
        caller = await call.caller()
        await _workflow(call, workflow)
    else:
        x = exchange_of(call.request)

        async def known() -> WorkflowRecord:
            return await _workflow(call, workflow)

        admission = await admit(x, model=None, declared="either", scope=f"workflow:{workflow}", check=known)
        caller = admission.caller
        if caller.kind == "anonymous":
            caller = await call.caller()
        x.model = f"workflow:{workflow}"
    owner = _owner_of(caller)
    try:
        return await call.service.start_execution(workflow, stored, mode="async", name=name, owner=owner)
    except NotFound:
        raise SfnError(
            "StateMachineDoesNotExist", f"State Machine Does Not Exist: '{call.arns.state_machine(workflow)}'"
        ) from None
    except Conflict as exc:
        # AWS: the same name and input while it runs answers that execution; anything else refuses
        existing_id = exc.details.get("executionId")
        if isinstance(existing_id, str):
            existing = await call.service.describe(existing_id)
            if existing.status == "RUNNING" and existing.input == stored.value:
                return existing
        raise SfnError(
            "ExecutionAlreadyExists",
            f"Execution Already Exists: '{call.arns.execution(workflow, name or '')}'",
        ) from None


def _execution_name(call: _Call) -> str | None:
    name = optional_str(call.body, "name", max_len=80, min_len=1)
    return None if name is None else validate_execution_name(name)


async def start_execution(call: _Call) -> dict[str, Any]:
    workflow = _machine_name(call)
    name = _execution_name(call)
    data = parse_input(call.body)
    optional_str(call.body, "traceHeader", max_len=256)
    record = await _start(call, workflow, data, name)
    return {"executionArn": call.arns.execution(workflow, record.name), "startDate": epoch(record.started_at)}


async def start_sync_execution(call: _Call) -> dict[str, Any]:
    """Runs to its end (any state machine here: Express semantics are not enforced), at most
    ``sync_timeout_s``: then it is stopped and answered TIMED_OUT (stored as ABORTED)."""
    workflow = _machine_name(call)
    name = _execution_name(call) or uuid.uuid4().hex
    data = parse_input(call.body)
    optional_str(call.body, "traceHeader", max_len=256)
    started = await _start(call, workflow, data, name)
    timeout = call.settings.sync_timeout_s
    try:
        record = await asyncio.wait_for(call.service.wait(started.id), timeout)
        timed_out = False
    except TimeoutError:
        cause = f"StartSyncExecution waited {timeout:g} s (MLGATE_SFN__SYNC_TIMEOUT_S)"
        try:
            record = await call.service.stop_execution(started.id, error="States.Timeout", cause=cause)
        except Conflict:  # it ended just now
            record = await call.service.describe(started.id)
        timed_out = record.status == "ABORTED"
    answer = execution_description(record, call.arns, include_data=True)
    for key in ("redriveCount", "redriveStatus", "redriveStatusReason"):
        answer.pop(key, None)
    if timed_out:
        answer["status"] = "TIMED_OUT"
    answer["billingDetails"] = billing_details(record)
    return answer


async def _execution(call: _Call) -> ExecutionRecord:
    arn = required_str(call.body, "executionArn", max_len=256)
    workflow, ref = Arns.parse_execution(arn)
    caller = await call.caller()
    owner = _owner_of(caller)
    found = await asyncio.to_thread(call.queries.find_execution, workflow, ref, owner)
    if found is None and caller.role == "admin":  # an admin sees everyone's
        found = await asyncio.to_thread(call.queries.find_execution, workflow, ref, None)
    if found is not None:
        try:
            return await call.service.describe(found)
        except NotFound:
            pass
    raise SfnError("ExecutionDoesNotExist", f"Execution Does Not Exist: '{arn}'")


async def describe_execution(call: _Call) -> dict[str, Any]:
    included = call.body.get("includedData", "ALL_DATA")
    if included not in ("ALL_DATA", "METADATA_ONLY"):
        raise SfnError("ValidationException", "includedData must be ALL_DATA or METADATA_ONLY")
    record = await _execution(call)
    return execution_description(record, call.arns, include_data=included == "ALL_DATA")


async def stop_execution(call: _Call) -> dict[str, Any]:
    """Aborts a running execution; one that has already ended is answered with its stop date."""
    error = optional_str(call.body, "error", max_len=MAX_ERROR)
    cause = optional_str(call.body, "cause", max_len=MAX_CAUSE)
    record = await _execution(call)
    try:
        record = await call.service.stop_execution(record.id, error=error, cause=cause)
    except Conflict:
        record = await call.service.describe(record.id)
    return {"stopDate": epoch(record.stopped_at or record.started_at)}


async def get_execution_history(call: _Call) -> dict[str, Any]:
    size = page_size(call.body)
    reverse = optional_bool(call.body, "reverseOrder", False)
    include = optional_bool(call.body, "includeExecutionData", True)
    token = optional_str(call.body, "nextToken", max_len=1024, min_len=1)
    record = await _execution(call)
    resource = f"{record.id}:{'r' if reverse else 'f'}"
    if record.status == "RUNNING":
        await call.service.flush()
    position: int
    if token:
        decoded = decode_token(token, "GetExecutionHistory", resource, call.token_key)
        if isinstance(decoded, bool) or not isinstance(decoded, int) or decoded < 0:
            raise SfnError("InvalidToken", "Invalid Token")
        # signed, so issued here; still bounded by the history (it never shrinks) before any query
        if decoded > await asyncio.to_thread(call.queries.last_event_id, record.id) + 1:
            raise SfnError("InvalidToken", "Invalid Token")
        position = decoded
    else:
        position = await asyncio.to_thread(call.queries.last_event_id, record.id) + 1 if reverse else 0
    region = call.arns.region
    events: list[dict[str, Any]] = []
    budget = _PAGE_BYTES

    def add(e: ExecutionEvent) -> None:
        nonlocal budget
        event = aws_event(e, region=region, include_data=include)
        if event is not None:
            events.append(event)
            budget -= sum(
                len(v)
                for d in event.values()
                if isinstance(d, dict)
                for v in d.values()
                if isinstance(v, str)
            )

    def full() -> bool:
        return len(events) >= size or budget <= 0

    def page(more: bool) -> dict[str, Any]:
        answer: dict[str, Any] = {"events": events}
        if more:
            answer["nextToken"] = encode_token("GetExecutionHistory", resource, position, call.token_key)
        return answer

    if not reverse:  # ``position``: the last stored event id already answered
        while True:
            chunk = await call.service.history(record.id, after=position, limit=_HISTORY_CHUNK)
            for e in chunk:
                if full():
                    return page(True)
                add(e)
                position = e.id
            if len(chunk) < _HISTORY_CHUNK:
                return page(False)
    while position > 1:  # reverse; ``position``: events below it are still to answer
        start = max(0, position - 1 - _HISTORY_CHUNK)
        chunk = await call.service.history(record.id, after=start, limit=position - 1 - start)
        for e in reversed(chunk):
            if e.id >= position:
                continue
            if full():
                return page(True)
            add(e)
            position = e.id
        position = min(position, start + 1)
    return page(False)


async def list_executions(call: _Call) -> dict[str, Any]:
    if call.body.get("mapRunArn") is not None:
        raise SfnError("ValidationException", "mapRunArn: Map Runs are not supported by mlgate")
    workflow = _machine_name(call)
    status = status_filter(call.body.get("statusFilter"))
    redrive = call.body.get("redriveFilter")
    if redrive not in (None, "REDRIVEN", "NOT_REDRIVEN"):
        raise SfnError("ValidationException", "redriveFilter must be REDRIVEN or NOT_REDRIVEN")
    size = page_size(call.body)
    token = optional_str(call.body, "nextToken", max_len=3096, min_len=1)
    caller = await call.caller()
    await _workflow(call, workflow)
    owner = None if caller.role == "admin" else _owner_of(caller)
    resource = f"{workflow}:{status or ''}:{owner or ''}"
    before: tuple[datetime, str] | None = None
    if token:
        decoded = decode_token(token, "ListExecutions", resource, call.token_key)
        try:
            at, last = decoded
            before = (datetime.fromisoformat(at), str(last))
        except (TypeError, ValueError):
            raise SfnError("InvalidToken", "Invalid Token") from None
        if before[0].tzinfo is None:
            raise SfnError("InvalidToken", "Invalid Token")
    if redrive == "REDRIVEN":  # nothing is ever redriven here
        return {"executions": []}
    rows = await asyncio.to_thread(
        lambda: call.queries.list_executions(
            workflow, owner=owner, status=status, limit=size + 1, before=before
        )
    )
    page = rows[:size]
    answer: dict[str, Any] = {"executions": [execution_item(r, call.arns) for r in page]}
    if len(rows) > size:
        last_row = page[-1]
        answer["nextToken"] = encode_token(
            "ListExecutions", resource, [last_row.started_at.isoformat(), last_row.id], call.token_key
        )
    return answer


_OPERATIONS: dict[str, Callable[[_Call], Awaitable[dict[str, Any]]]] = {
    "CreateStateMachine": create_state_machine,
    "UpdateStateMachine": update_state_machine,
    "DescribeStateMachine": describe_state_machine,
    "ListStateMachines": list_state_machines,
    "DeleteStateMachine": delete_state_machine,
    "StartExecution": start_execution,
    "StartSyncExecution": start_sync_execution,
    "DescribeExecution": describe_execution,
    "GetExecutionHistory": get_execution_history,
    "ListExecutions": list_executions,
    "StopExecution": stop_execution,
}
