"""The AWS Step Functions API's shapes over mlgate's workflows (``http/routes_sfn.py`` is the wire).

What AWS's tools send and expect, translated to and from mlgate's workflows and executions:

- **ARNs**: a workflow is ``arn:aws:states:<region>:<account>:stateMachine:<name>`` and an
  execution ``arn:aws:states:<region>:<account>:execution:<workflow>:<execution name>``
  (:class:`Arns`; region and account from ``MLGATE_SFN__REGION`` / ``__ACCOUNT``). ARNs naming
  another region or account are accepted: only the resource part is read.
- **Validation** as AWS does it (:class:`SfnError` with AWS's error name, always a 400):
  names, ARNs, the input as JSON text ≤ 256 KiB, ``maxResults`` 0-1000, page tokens.
- **Describe shapes** (:func:`execution_description`, :func:`state_machine_description`) and
  **history events** in AWS's format (:func:`aws_event`): mlgate's stored events carry the same
  names; those without an AWS counterpart (``RetryScheduled``, ``ParallelBranch*``) are left out,
  and Task events of a Lambda ARN resource become AWS's ``LambdaFunction*`` events.
- **Page tokens** (:func:`encode_token`, :func:`decode_token`): an opaque, validated position
  bound to the operation and its arguments; a token from elsewhere is ``InvalidToken``. Tokens
  carry no secret: what one can point at is only what its caller may list anyway.
- **Queries** the workflow store does not have (:class:`SfnQueries`): an execution by name,
  keyset pages of executions, an execution's last event id, deleting a workflow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, and_, delete, func, or_, select

from mlgate.db.engine import write_tx
from mlgate.db.tables import execution_events, executions, workflows
from mlgate.types import NAME_PATTERN
from mlgate.workflows import arns
from mlgate.workflows.store import (
    EXECUTION_NAME_MAX,
    STATUSES,
    ExecutionEvent,
    ExecutionRecord,
    ExecutionSummary,
    Status,
    WorkflowRecord,
)

__all__ = [
    "DEFAULT_PAGE",
    "MAX_DEFINITION",
    "MAX_INPUT",
    "Arns",
    "SfnError",
    "SfnQueries",
    "aws_event",
    "billing_details",
    "decode_token",
    "encode_token",
    "epoch",
    "execution_description",
    "execution_item",
    "json_text",
    "optional_bool",
    "optional_str",
    "page_size",
    "parse_input",
    "required_str",
    "state_machine_description",
    "state_machine_item",
    "validate_execution_name",
    "validate_state_machine_name",
]

#: AWS's limits: an input (SensitiveData), a definition, an ARN, a page token, error and cause
MAX_INPUT = 262_144
MAX_DEFINITION = 1_048_576
MAX_ARN = 256
MAX_TOKEN = 3096
MAX_ERROR = 256
MAX_CAUSE = 32_768
#: ``maxResults`` 0 (or absent) means AWS's default page
DEFAULT_PAGE = 100
MAX_PAGE = 1000

_PARTITION = r"arn:aws(?:-[a-z]+)*:states:[a-z0-9-]*:[0-9]{12}:"
_STATE_MACHINE_ARN = re.compile(rf"^{_PARTITION}stateMachine:([^:\s]{{1,80}})(?::([^:\s]+))?\Z")
_EXECUTION_ARN = re.compile(
    rf"^{_PARTITION}(?:execution|express):([^:\s]{{1,80}}):([^:\s]{{1,80}})(?::[^:\s]+)?\Z"
)
_ID = re.compile(r"^[0-9a-f]{32}\Z")


class SfnError(Exception):
    """An AWS error: ``code`` is the ``__type`` botocore raises as ``client.exceptions.<code>``."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"__type": self.code, "message": self.message}


def _constraint(field: str, rule: str) -> SfnError:
    return SfnError(
        "ValidationException",
        f"1 validation error detected: Value at '{field}' failed to satisfy constraint: {rule}",
    )


# -- request fields ---------------------------------------------------------------------------


def required_str(body: Mapping[str, Any], field: str, *, max_len: int, min_len: int = 1) -> str:
    value = body.get(field)
    if value is None:
        raise SfnError("ValidationException", f"the parameter '{field}' is required")
    return _str(field, value, max_len, min_len)


def optional_str(body: Mapping[str, Any], field: str, *, max_len: int, min_len: int = 0) -> str | None:
    value = body.get(field)
    return None if value is None else _str(field, value, max_len, min_len)


def _str(field: str, value: Any, max_len: int, min_len: int) -> str:
    if not isinstance(value, str):
        raise SfnError("SerializationException", f"'{field}' must be a string")
    if len(value) > max_len:
        raise _constraint(field, f"Member must have length less than or equal to {max_len}")
    if len(value) < min_len:
        raise _constraint(field, f"Member must have length greater than or equal to {min_len}")
    return value


def optional_bool(body: Mapping[str, Any], field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SfnError("SerializationException", f"'{field}' must be a boolean")
    return value


def page_size(body: Mapping[str, Any]) -> int:
    """``maxResults``: 0 or absent → 100; at most 1000."""
    value = body.get("maxResults")
    if value is None:
        return DEFAULT_PAGE
    if isinstance(value, bool) or not isinstance(value, int):
        raise SfnError("SerializationException", "'maxResults' must be an integer")
    if not 0 <= value <= MAX_PAGE:
        raise _constraint("maxResults", f"Member must have value between 0 and {MAX_PAGE}")
    return value or DEFAULT_PAGE


def parse_input(body: Mapping[str, Any]) -> Any:
    """``input``: JSON text of at most 256 KiB (absent: ``{}``, as AWS)."""
    text = optional_str(body, "input", max_len=MAX_INPUT)
    if text is None:
        return {}
    if len(text.encode("utf-8", "surrogatepass")) > MAX_INPUT:
        raise _constraint("input", f"Member must have length less than or equal to {MAX_INPUT}")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SfnError("InvalidExecutionInput", f"Invalid State Machine Execution Input: {exc}") from None


def validate_state_machine_name(name: str) -> str:
    """mlgate's workflow names (a subset of AWS's): 1-64 lowercase letters, digits, '-' and '_',
    starting with a letter."""
    if not NAME_PATTERN.match(name):
        raise SfnError(
            "InvalidName",
            f"Invalid Name: '{name[:80]}' (mlgate's state machine names are 1-64 lowercase letters, "
            "digits, '-' and '_', starting with a letter)",
        )
    return name


def validate_execution_name(name: str) -> str:
    if not (
        0 < len(name) <= EXECUTION_NAME_MAX and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)
    ):
        raise SfnError(
            "InvalidName",
            f"Invalid Name: '{name[:80]}' (mlgate's execution names are 1-{EXECUTION_NAME_MAX} "
            "letters, digits, '-' and '_')",
        )
    return name


# -- ARNs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arns:
    """ARNs of this server's state machines and executions (:mod:`mlgate.workflows.arns`'s shapes;
    the same defaults as the ``$$`` context object's ARNs)."""

    region: str = arns.REGION
    account: str = arns.ACCOUNT

    def state_machine(self, name: str) -> str:
        return arns.state_machine_arn(name, region=self.region, account=self.account)

    def execution(self, workflow: str, name: str) -> str:
        return arns.execution_arn(workflow, name, region=self.region, account=self.account)

    def role(self) -> str:
        """The ``roleArn`` answered for every state machine (mlgate keeps none: it is ignored)."""
        return arns.role_arn(account=self.account)

    @staticmethod
    def parse_state_machine(arn: str, field: str = "stateMachineArn") -> str:
        """The workflow name a state machine ARN names; ``InvalidArn`` otherwise."""
        _str(field, arn, MAX_ARN, 1)
        match = _STATE_MACHINE_ARN.match(arn)
        if match is None:
            raise SfnError("InvalidArn", f"Invalid Arn: '{arn}'")
        if match.group(2) is not None:
            raise SfnError(
                "InvalidArn", f"Invalid Arn: '{arn}' (versions and aliases are not supported here)"
            )
        return match.group(1)

    @staticmethod
    def parse_execution(arn: str, field: str = "executionArn") -> tuple[str, str]:
        """(workflow, execution name or id) an execution ARN names; ``InvalidArn`` otherwise."""
        _str(field, arn, MAX_ARN, 1)
        match = _EXECUTION_ARN.match(arn)
        if match is None:
            raise SfnError("InvalidArn", f"Invalid Arn: '{arn}'")
        return match.group(1), match.group(2)


# -- page tokens ------------------------------------------------------------------------------


_MAC_BYTES = 16


def encode_token(op: str, resource: str, position: Any, key: bytes) -> str:
    """An opaque token for the next page of ``op`` over ``resource`` (what it was called with),
    signed with ``key`` (HMAC-SHA256, truncated to 128 bits): a client cannot forge a position."""
    raw = orjson.dumps({"o": op, "r": resource, "p": position})
    mac = hmac.new(key, raw, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(mac + raw).decode().rstrip("=")


def decode_token(token: str, op: str, resource: str, key: bytes) -> Any:
    """The position a token of ``op`` over ``resource`` carries; ``InvalidToken`` for anything else
    (not base64, not signed with ``key``, issued for other arguments)."""
    _str("nextToken", token, MAX_TOKEN, 1)
    try:
        signed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise SfnError("InvalidToken", f"Invalid Token: '{token[:64]}'") from None
    mac, raw = signed[:_MAC_BYTES], signed[_MAC_BYTES:]
    if not hmac.compare_digest(mac, hmac.new(key, raw, hashlib.sha256).digest()[:_MAC_BYTES]):
        raise SfnError("InvalidToken", "Invalid Token: it was not issued by this server")
    try:
        data = orjson.loads(raw)
    except ValueError:
        raise SfnError("InvalidToken", "Invalid Token") from None
    if not isinstance(data, dict) or data.get("o") != op or data.get("r") != resource or "p" not in data:
        raise SfnError("InvalidToken", "Invalid Token: it was not issued for these arguments")
    return data["p"]


# -- answers ----------------------------------------------------------------------------------


def epoch(when: datetime) -> float:
    """A timestamp as awsJson sends it: seconds since the epoch."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def json_text(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def state_machine_item(w: WorkflowRecord, arns: Arns) -> dict[str, Any]:
    return {
        "stateMachineArn": arns.state_machine(w.name),
        "name": w.name,
        "type": "STANDARD",
        "creationDate": epoch(w.created_at),
    }


def state_machine_description(w: WorkflowRecord, arns: Arns) -> dict[str, Any]:
    body = {
        **state_machine_item(w, arns),
        "status": "ACTIVE",
        "definition": w.definition,
        "roleArn": arns.role(),
        "revisionId": str(w.revision),
        "loggingConfiguration": {"level": "OFF", "includeExecutionData": False},
        "tracingConfiguration": {"enabled": False},
    }
    if w.description:
        body["description"] = w.description
    return body


def execution_item(e: ExecutionSummary, arns: Arns) -> dict[str, Any]:
    body: dict[str, Any] = {
        "executionArn": arns.execution(e.workflow, e.name),
        "stateMachineArn": arns.state_machine(e.workflow),
        "name": e.name,
        "status": e.status,
        "startDate": epoch(e.started_at),
    }
    if e.stopped_at is not None:
        body["stopDate"] = epoch(e.stopped_at)
    return body


def execution_description(e: ExecutionRecord, arns: Arns, *, include_data: bool = True) -> dict[str, Any]:
    """DescribeExecution's answer (and StartSyncExecution's, with :func:`billing_details`)."""
    body = execution_item(e, arns)
    if include_data:
        body["input"] = json_text(e.input)
        body["inputDetails"] = {"included": True}
        if e.status == "SUCCEEDED":
            body["output"] = json_text(e.output)
            body["outputDetails"] = {"included": True}
    if e.error is not None and e.status != "SUCCEEDED":
        body["error"] = e.error
    if e.cause is not None and e.status != "SUCCEEDED":
        body["cause"] = e.cause
    body["redriveCount"] = 0
    body["redriveStatus"] = "NOT_REDRIVABLE"
    body["redriveStatusReason"] = "Redrive is not supported by mlgate"
    return body


def billing_details(e: ExecutionSummary) -> dict[str, int]:
    """AWS's Express billing units, nominally: the duration rounded up to 100 ms, 64 MB."""
    stopped = e.stopped_at or e.started_at
    millis = max(0.0, (epoch(stopped) - epoch(e.started_at)) * 1000)
    return {
        "billedMemoryUsedInMB": 64,
        "billedDurationInMilliseconds": max(100, math.ceil(millis / 100) * 100),
    }


# -- history events ---------------------------------------------------------------------------

_EXECUTION_ENDS = {
    "ExecutionFailed": "executionFailedEventDetails",
    "ExecutionAborted": "executionAbortedEventDetails",
    "ExecutionTimedOut": "executionTimedOutEventDetails",
}
_TASK_DETAILS = {
    "TaskScheduled": "taskScheduledEventDetails",
    "TaskStarted": "taskStartedEventDetails",
    "TaskSucceeded": "taskSucceededEventDetails",
    "TaskFailed": "taskFailedEventDetails",
    "TaskTimedOut": "taskTimedOutEventDetails",
}
_LAMBDA = {
    "TaskScheduled": ("LambdaFunctionScheduled", "lambdaFunctionScheduledEventDetails"),
    "TaskStarted": ("LambdaFunctionStarted", None),
    "TaskSucceeded": ("LambdaFunctionSucceeded", "lambdaFunctionSucceededEventDetails"),
    "TaskFailed": ("LambdaFunctionFailed", "lambdaFunctionFailedEventDetails"),
    "TaskTimedOut": ("LambdaFunctionTimedOut", "lambdaFunctionTimedOutEventDetails"),
}
_MAP_ITERATIONS = {
    "MapIterationStarted": "mapIterationStartedEventDetails",
    "MapIterationSucceeded": "mapIterationSucceededEventDetails",
    "MapIterationFailed": "mapIterationFailedEventDetails",
    "MapIterationAborted": "mapIterationAbortedEventDetails",
}
#: AWS events with no details member
_BARE = frozenset(
    {
        "MapStateSucceeded",
        "MapStateFailed",
        "MapStateAborted",
        "ParallelStateStarted",
        "ParallelStateSucceeded",
        "ParallelStateFailed",
        "ParallelStateAborted",
        "TaskStateAborted",
        "WaitStateAborted",
    }
)
_STATE_TYPES = ("Task", "Choice", "Pass", "Wait", "Succeed", "Fail", "Parallel", "Map")
_ENTERED = frozenset(f"{t}StateEntered" for t in _STATE_TYPES)
_EXITED = frozenset(f"{t}StateExited" for t in _STATE_TYPES if t != "Fail")


def _resource_parts(resource: str) -> tuple[str, str]:
    """AWS's (resourceType, resource): ``arn:aws:states:::lambda:invoke`` → (lambda, invoke)."""
    if resource.startswith("arn:") and ":states:::" in resource:
        service, _, action = resource.split(":::", 1)[1].partition(":")
        return service, action or service
    if resource.startswith("arn:"):
        parts = resource.split(":")
        return (parts[2] if len(parts) > 2 else "arn"), ":".join(parts[5:]) or resource
    kind, _, rest = resource.partition(":")
    return kind, rest or resource


def _error_fields(details: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("error", "cause"):
        value = details.get(key)
        if value is not None:
            out[key] = str(value)
    return out


def _payload(out: dict[str, Any], key: str, details: Mapping[str, Any], source: str, include: bool) -> None:
    if include and source in details:
        out[key] = json_text(details[source])
        out[f"{key}Details"] = {"truncated": False}


def aws_event(e: ExecutionEvent, *, region: str, include_data: bool = True) -> dict[str, Any] | None:
    """An mlgate history event as AWS's ``HistoryEvent``; None for events AWS has no type for."""
    d = e.details if isinstance(e.details, Mapping) else {}
    kind = e.type
    event: dict[str, Any] = {"timestamp": epoch(e.timestamp), "type": kind, "id": e.id}
    if e.id > 1:
        event["previousEventId"] = e.id - 1
    if kind == "ExecutionStarted":
        details: dict[str, Any] = {}
        _payload(details, "input", d, "input", include_data)
        event["executionStartedEventDetails"] = details
    elif kind == "ExecutionSucceeded":
        details = {}
        _payload(details, "output", d, "output", include_data)
        event["executionSucceededEventDetails"] = details
    elif kind in _EXECUTION_ENDS:
        event[_EXECUTION_ENDS[kind]] = _error_fields(d)
    elif kind in _ENTERED:
        details = {"name": e.state or ""}
        _payload(details, "input", d, "input", include_data)
        event["stateEnteredEventDetails"] = details
    elif kind in _EXITED:
        details = {"name": e.state or ""}
        _payload(details, "output", d, "output", include_data)
        event["stateExitedEventDetails"] = details
    elif kind in _TASK_DETAILS:
        resource = str(d.get("resource") or "")
        if resource.startswith("arn:") and ":lambda:" in resource and ":function:" in resource:
            kind, member = _LAMBDA[kind]
            event["type"] = kind
            details = {}
            if kind == "LambdaFunctionScheduled":
                details["resource"] = resource
                _payload(details, "input", d, "parameters", include_data)
                if isinstance(d.get("timeout_seconds"), int | float):
                    details["timeoutInSeconds"] = int(d["timeout_seconds"])
            elif kind == "LambdaFunctionSucceeded":
                _payload(details, "output", d, "output", include_data)
            else:
                details.update(_error_fields(d))
            if member is not None:
                event[member] = details
            return event
        resource_type, name = _resource_parts(resource)
        details = {"resourceType": resource_type, "resource": name}
        if kind == "TaskScheduled":
            details["region"] = region
            details["parameters"] = json_text(d.get("parameters")) if include_data else ""
            if isinstance(d.get("timeout_seconds"), int | float):
                details["timeoutInSeconds"] = int(d["timeout_seconds"])
        elif kind == "TaskSucceeded":
            _payload(details, "output", d, "output", include_data)
        elif kind in ("TaskFailed", "TaskTimedOut"):
            details.update(_error_fields(d))
        event[_TASK_DETAILS[kind]] = details
    elif kind == "MapStateStarted":
        length = d.get("length")
        event["mapStateStartedEventDetails"] = {"length": length} if isinstance(length, int) else {}
    elif kind in _MAP_ITERATIONS:
        details = {"name": e.state or ""}
        if isinstance(d.get("index"), int):
            details["index"] = d["index"]
        event[_MAP_ITERATIONS[kind]] = details
    elif kind not in _BARE:
        return None  # RetryScheduled, ParallelBranch*: mlgate's own, no AWS type
    return event


# -- queries ----------------------------------------------------------------------------------


class SfnQueries:
    """What the Step Functions API needs beyond :class:`~mlgate.workflows.store.WorkflowStore`
    (sync; call from a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def find_execution(self, workflow: str, ref: str, owner: str | None) -> str | None:
        """The id of ``workflow``'s execution named ``ref`` (or whose id is ``ref``) that ``owner``
        started; ``owner=None`` (an admin): anyone's, the newest first."""
        query = select(executions.c.id).where(
            and_(executions.c.workflow == workflow, executions.c.name == ref)
        )
        if owner is not None:
            query = query.where(executions.c.owner == owner)
        query = query.order_by(executions.c.started_at.desc()).limit(1)
        with self._engine.connect() as conn:
            found = conn.execute(query).scalar()
            if found is None and _ID.match(ref):
                by_id = select(executions.c.id).where(
                    and_(executions.c.id == ref, executions.c.workflow == workflow)
                )
                if owner is not None:
                    by_id = by_id.where(executions.c.owner == owner)
                found = conn.execute(by_id).scalar()
        return None if found is None else str(found)

    def list_executions(
        self,
        workflow: str,
        *,
        owner: str | None,
        status: Status | None,
        limit: int,
        before: tuple[datetime, str] | None,
    ) -> list[ExecutionSummary]:
        """A page of ``workflow``'s executions, newest first, after the keyset position ``before``."""
        columns = [c for c in executions.c if c.name not in ("input", "output")]
        query = select(*columns).where(executions.c.workflow == workflow)
        if owner is not None:
            query = query.where(executions.c.owner == owner)
        if status is not None:
            query = query.where(executions.c.status == status)
        if before is not None:
            at, last = before
            query = query.where(
                or_(
                    executions.c.started_at < at,
                    and_(executions.c.started_at == at, executions.c.id < last),
                )
            )
        query = query.order_by(executions.c.started_at.desc(), executions.c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [
                ExecutionSummary(
                    id=r.id,
                    workflow=r.workflow,
                    name=r.name,
                    revision=r.revision,
                    status=status_filter(r.status) or "RUNNING",
                    error=r.error,
                    cause=r.cause,
                    owner=r.owner,
                    parent_id=r.parent_id,
                    started_at=r.started_at,
                    stopped_at=r.stopped_at,
                )
                for r in conn.execute(query)
            ]

    def last_event_id(self, execution_id: str) -> int:
        with self._engine.connect() as conn:
            value = conn.execute(
                select(func.max(execution_events.c.seq)).where(
                    execution_events.c.execution_id == execution_id
                )
            ).scalar()
        return int(value or 0)

    def running(self, workflow: str) -> list[str]:
        query = select(executions.c.id).where(
            and_(executions.c.workflow == workflow, executions.c.status == "RUNNING")
        )
        with self._engine.connect() as conn:
            return [str(i) for i in conn.execute(query).scalars()]

    def delete_workflow(self, workflow: str) -> bool:
        """Delete a workflow with its finished executions and their histories, in one transaction
        (False: it did not exist). RUNNING executions must have been stopped first: the
        foreign keys refuse to delete it under one started meanwhile."""
        with write_tx(self._engine) as conn:
            ids = select(executions.c.id).where(executions.c.workflow == workflow).scalar_subquery()
            conn.execute(delete(execution_events).where(execution_events.c.execution_id.in_(ids)))
            conn.execute(delete(executions).where(executions.c.workflow == workflow))
            result = conn.execute(delete(workflows).where(workflows.c.name == workflow))
            return bool(result.rowcount)


def status_filter(value: Any) -> Status | None:
    """``statusFilter`` of ListExecutions."""
    if value is None:
        return None
    for status in STATUSES:
        if status == value:
            return status
    if value == "PENDING_REDRIVE":
        raise SfnError("ValidationException", "statusFilter PENDING_REDRIVE: mlgate does not redrive")
    raise _constraint("statusFilter", f"Member must satisfy enum value set: {list(STATUSES)}")
