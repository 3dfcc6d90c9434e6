"""The Step Functions API's translation (mlgate.workflows.sfn_api): ARNs, validation, page
tokens, AWS's history events (checked against botocore's own service model), the queries."""

from __future__ import annotations

import asyncio
import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore
import pytest

from mlgate.repository import Repository
from mlgate.settings import Settings, is_loopback
from mlgate.workflows.actions import Actions
from mlgate.workflows.clock import FakeClock
from mlgate.workflows.service import WorkflowService
from mlgate.workflows.sfn_api import (
    Arns,
    SfnError,
    SfnQueries,
    aws_event,
    billing_details,
    decode_token,
    encode_token,
    execution_description,
    page_size,
    parse_input,
    state_machine_description,
    status_filter,
    validate_execution_name,
    validate_state_machine_name,
)
from mlgate.workflows.store import ExecutionEvent, ExecutionRecord, WorkflowRecord, WorkflowStore

LAMBDA = "arn:aws:lambda:us-east-1:123456789012:function:f"


def _model() -> dict[str, Any]:
    root = Path(botocore.__file__).parent / "data" / "stepfunctions"
    (path,) = sorted(root.glob("*/service-2.json.gz"))[-1:]
    model: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return model


def code(exc: pytest.ExceptionInfo[SfnError]) -> str:
    return exc.value.code


# -- ARNs and fields ----------------------------------------------------------------------------


def test_arns_round_trip_and_refusals() -> None:
    arns = Arns("eu-west-1", "000000000000")
    assert arns.state_machine("demo") == "arn:aws:states:eu-west-1:000000000000:stateMachine:demo"
    assert arns.execution("demo", "uno") == "arn:aws:states:eu-west-1:000000000000:execution:demo:uno"
    assert Arns.parse_state_machine(arns.state_machine("demo")) == "demo"
    assert Arns.parse_execution(arns.execution("demo", "uno")) == ("demo", "uno")
    # another region or account: only the resource part is read
    assert Arns.parse_state_machine("arn:aws:states:us-east-1:123456789012:stateMachine:x") == "x"
    assert Arns.parse_execution("arn:aws:states:us-east-1:123456789012:express:x:y:abc") == ("x", "y")
    for bad in (
        "demo",
        "arn:aws:states:us-east-1:123:stateMachine:x",
        "arn:aws:lambda:us-east-1:123456789012:function:x",
        "arn:aws:states:us-east-1:123456789012:execution:x:y",  # an execution, not a machine
        "arn:aws:states:us-east-1:123456789012:stateMachine:x y",
    ):
        with pytest.raises(SfnError) as exc:
            Arns.parse_state_machine(bad)
        assert code(exc) == "InvalidArn"
    with pytest.raises(SfnError) as exc:
        Arns.parse_state_machine("arn:aws:states:us-east-1:123456789012:stateMachine:x:1")
    assert code(exc) == "InvalidArn" and "versions" in exc.value.message
    with pytest.raises(SfnError) as exc:
        Arns.parse_execution("arn:aws:states:us-east-1:123456789012:stateMachine:x")
    assert code(exc) == "InvalidArn"
    with pytest.raises(SfnError) as exc:
        Arns.parse_execution("a" * 300)
    assert code(exc) == "ValidationException"
    with pytest.raises(SfnError) as exc:
        Arns.parse_execution(12)  # type: ignore[arg-type]
    assert code(exc) == "SerializationException"


def test_names_inputs_and_page_sizes() -> None:
    assert validate_state_machine_name("mi-flujo_2") == "mi-flujo_2"
    for bad in ("HelloWorld", "1x", "a b", "x" * 65):
        with pytest.raises(SfnError) as exc:
            validate_state_machine_name(bad)
        assert code(exc) == "InvalidName"
    assert validate_execution_name("Run-1_a") == "Run-1_a"
    for bad in ("", "a b", "a:b", "x" * 81, "ñ"):
        with pytest.raises(SfnError) as exc:
            validate_execution_name(bad)
        assert code(exc) == "InvalidName"
    assert parse_input({}) == {}
    assert parse_input({"input": '{"a": [1, 2]}'}) == {"a": [1, 2]}
    assert parse_input({"input": "3"}) == 3
    with pytest.raises(SfnError) as exc:
        parse_input({"input": "{nope"})
    assert code(exc) == "InvalidExecutionInput"
    with pytest.raises(SfnError) as exc:
        parse_input({"input": json.dumps("x" * 262_144)})
    assert code(exc) == "ValidationException"
    assert page_size({}) == 100 and page_size({"maxResults": 0}) == 100 and page_size({"maxResults": 7}) == 7
    cases: list[tuple[Any, str]] = [
        (1001, "ValidationException"),
        (-1, "ValidationException"),
        ("5", "SerializationException"),
        (True, "SerializationException"),
    ]
    for bad, expected in cases:
        with pytest.raises(SfnError) as exc:
            page_size({"maxResults": bad})
        assert code(exc) == expected
    assert status_filter(None) is None and status_filter("ABORTED") == "ABORTED"
    with pytest.raises(SfnError):
        status_filter("DONE")


KEY = b"k" * 32


def test_page_tokens_are_bound_to_their_operation_and_arguments() -> None:
    token = encode_token("GetExecutionHistory", "abc:f", 42, KEY)
    assert decode_token(token, "GetExecutionHistory", "abc:f", KEY) == 42
    for op, resource in (
        ("ListExecutions", "abc:f"),
        ("GetExecutionHistory", "abc:r"),
        ("GetExecutionHistory", "x"),
    ):
        with pytest.raises(SfnError) as exc:
            decode_token(token, op, resource, KEY)
        assert code(exc) == "InvalidToken"
    for garbage in ("!!!", "bm90IGpzb24", encode_token("x", "y", 1, KEY)[:-3], "W10"):
        with pytest.raises(SfnError) as exc:
            decode_token(garbage, "GetExecutionHistory", "abc:f", KEY)
        assert code(exc) == "InvalidToken"


def test_page_tokens_are_signed() -> None:
    """A client cannot forge a position: an unsigned, re-signed or edited token is refused."""
    import base64

    import orjson

    token = encode_token("GetExecutionHistory", "abc:f", 42, KEY)
    with pytest.raises(SfnError):
        decode_token(token, "GetExecutionHistory", "abc:f", b"other" * 8)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    mac, body = raw[:16], raw[16:]
    forged = orjson.dumps({**orjson.loads(body), "p": 10**15})
    for tampered in (mac + forged, body, forged):
        text = base64.urlsafe_b64encode(tampered).decode().rstrip("=")
        with pytest.raises(SfnError) as exc:
            decode_token(text, "GetExecutionHistory", "abc:f", KEY)
        assert code(exc) == "InvalidToken"


def test_describe_shapes_carry_what_botocore_requires() -> None:
    shapes = _model()["shapes"]
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    record = ExecutionRecord(
        id="0" * 32,
        workflow="demo",
        name="uno",
        revision=1,
        status="SUCCEEDED",
        error=None,
        cause=None,
        owner="key:k",
        parent_id=None,
        started_at=now,
        stopped_at=now + timedelta(milliseconds=250),
        input={"a": 1},
        output={"b": 2},
    )
    described = execution_description(record, Arns())
    assert set(shapes["DescribeExecutionOutput"]["required"]) <= set(described)
    assert set(described) <= set(shapes["DescribeExecutionOutput"]["members"])
    assert described["input"] == '{"a":1}' and described["output"] == '{"b":2}'
    assert described["startDate"] == now.timestamp()
    assert billing_details(record) == {"billedMemoryUsedInMB": 64, "billedDurationInMilliseconds": 300}
    metadata = execution_description(record, Arns(), include_data=False)
    assert "input" not in metadata and "output" not in metadata
    machine = WorkflowRecord("demo", '{"StartAt": "p"}', None, "", 3, now, now)
    described = state_machine_description(machine, Arns())
    assert set(shapes["DescribeStateMachineOutput"]["required"]) <= set(described)
    assert set(described) <= set(shapes["DescribeStateMachineOutput"]["members"])
    assert described["revisionId"] == "3" and described["definition"] == '{"StartAt": "p"}'


# -- history events -----------------------------------------------------------------------------


class Env:
    def __init__(self, tmp: Path) -> None:
        self.repo = Repository.open(f"sqlite:///{tmp / 'wf.db'}")
        self.store = WorkflowStore(self.repo.engine)
        self.queries = SfnQueries(self.repo.engine)
        self.attempts = 0

    def service(self) -> WorkflowService:
        def flaky(x: Any) -> Any:
            self.attempts += 1
            if self.attempts == 1:
                raise ValueError("first time")
            return x

        def boom(_: Any) -> Any:
            raise ValueError("kaboom")

        actions = Actions(
            dataplane=None, buckets=None, functions={"echo": lambda x: x, "flaky": flaky, "boom": boom}
        )
        return WorkflowService(
            self.store, actions=actions, clock=FakeClock(), flush_interval_s=0.02, heartbeat_s=3600
        )


EVERYTHING = {
    "StartAt": "lambda",
    "States": {
        "lambda": {"Type": "Task", "Resource": LAMBDA, "Next": "flaky"},
        "flaky": {
            "Type": "Task",
            "Resource": "mlgate:python:flaky",
            "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 2}],
            "Next": "invoke",
        },
        "invoke": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": LAMBDA, "Payload.$": "$"},
            "OutputPath": "$.Payload",
            "Next": "both",
        },
        "both": {
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "a", "States": {"a": {"Type": "Pass", "End": True}}},
                {"StartAt": "b", "States": {"b": {"Type": "Wait", "Seconds": 0, "End": True}}},
            ],
            "Next": "each",
        },
        "each": {
            "Type": "Map",
            "ItemsPath": "$[0].items",
            "Iterator": {"StartAt": "i", "States": {"i": {"Type": "Pass", "End": True}}},
            "Next": "choose",
        },
        "choose": {
            "Type": "Choice",
            "Choices": [{"Variable": "$[0]", "IsPresent": True, "Next": "fail"}],
            "Default": "done",
        },
        "done": {"Type": "Succeed"},
        "fail": {
            "Type": "Task",
            "Resource": "mlgate:python:boom",
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "stop"}],
            "End": True,
        },
        "stop": {"Type": "Fail", "Error": "Nope", "Cause": "as planned"},
    },
}
MAPPING = {"resources": {LAMBDA: {"action": "python", "function": "echo"}}}


def test_history_events_are_aws_history_events(tmp_path: Path) -> None:
    env = Env(tmp_path)
    model = _model()
    shapes = model["shapes"]
    members = shapes["HistoryEvent"]["members"]
    types = set(shapes["HistoryEventType"]["enum"])

    async def go() -> list[ExecutionEvent]:
        service = env.service()
        await service.start()
        try:
            service.deploy_sync("everything", EVERYTHING, mapping=MAPPING)
            record = await service.start_execution("everything", {"items": [1, 2]})
            assert record.status == "FAILED" and record.error == "Nope"
            return await service.history(record.id)
        finally:
            await service.stop()

    stored = asyncio.run(go())
    translated = [aws_event(e, region="eu-west-1") for e in stored]
    dropped = {e.type for e, t in zip(stored, translated, strict=True) if t is None}
    assert dropped == {"RetryScheduled", "ParallelBranchStarted", "ParallelBranchSucceeded"}
    events = [t for t in translated if t is not None]
    kinds = [e["type"] for e in events]
    for event in events:
        assert event["type"] in types, event
        for key, value in event.items():
            assert key in members, key
            if key.endswith("EventDetails"):
                shape = shapes[members[key]["shape"]]
                assert set(shape.get("required", [])) <= set(value), (key, value)
                assert set(value) <= set(shape["members"]), (key, value)
    # a Lambda ARN resource: AWS's LambdaFunction* events; lambda:invoke: Task events
    assert kinds[:6] == [
        "ExecutionStarted",
        "TaskStateEntered",
        "LambdaFunctionScheduled",
        "LambdaFunctionStarted",
        "LambdaFunctionSucceeded",
        "TaskStateExited",
    ]
    scheduled = next(e for e in events if e["type"] == "TaskScheduled")
    assert scheduled["taskScheduledEventDetails"]["resourceType"] == "mlgate"
    assert scheduled["taskScheduledEventDetails"]["region"] == "eu-west-1"
    invoke = [e for e in events if e["type"] == "TaskScheduled"][2]["taskScheduledEventDetails"]
    assert (invoke["resourceType"], invoke["resource"]) == ("lambda", "invoke")
    assert kinds.count("TaskFailed") == 2  # the retried attempt, and boom
    assert {"ParallelStateStarted", "MapStateStarted", "MapIterationStarted", "FailStateEntered"} <= set(
        kinds
    )
    assert kinds[-1] == "ExecutionFailed"
    assert events[-1]["executionFailedEventDetails"] == {"error": "Nope", "cause": "as planned"}
    assert events[0]["id"] == 1 and "previousEventId" not in events[0]
    assert all(e["previousEventId"] == e["id"] - 1 for e in events[1:])
    # includeExecutionData=false: no payloads
    lean = [aws_event(e, region="r", include_data=False) for e in stored]
    assert all("input" not in json.dumps(e) for e in lean if e is not None and e["type"] != "TaskScheduled")


def test_queries(tmp_path: Path) -> None:
    env = Env(tmp_path)

    async def go() -> None:
        service = env.service()
        await service.start()
        try:
            service.deploy_sync("echo", {"StartAt": "p", "States": {"p": {"Type": "Pass", "End": True}}})
            mine = await service.start_execution("echo", {"n": 1}, name="uno", owner="key:a")
            theirs = await service.start_execution("echo", {"n": 2}, name="uno", owner="key:b")
            more = [await service.start_execution("echo", {"n": i}, owner="key:a") for i in range(5)]
            q = env.queries
            assert q.find_execution("echo", "uno", "key:a") == mine.id
            assert q.find_execution("echo", "uno", "key:b") == theirs.id
            assert q.find_execution("echo", "uno", None) in (mine.id, theirs.id)
            assert q.find_execution("echo", more[0].id, "key:a") == more[0].id  # by id too
            assert q.find_execution("echo", more[0].id, "key:b") is None
            assert q.find_execution("other", "uno", None) is None
            assert q.last_event_id(mine.id) == 4
            pages: list[str] = []
            before = None
            while True:
                rows = q.list_executions("echo", owner="key:a", status=None, limit=2, before=before)
                pages += [r.id for r in rows]
                if len(rows) < 2:
                    break
                before = (rows[-1].started_at, rows[-1].id)
            assert sorted(pages) == sorted([mine.id, *(m.id for m in more)]) and len(pages) == 6
            assert q.list_executions("echo", owner=None, status="FAILED", limit=10, before=None) == []
            assert q.running("echo") == []
            assert q.delete_workflow("echo") is True
            assert q.delete_workflow("echo") is False
            service.forget("echo")
            assert await service.list_workflows() == []
        finally:
            await service.stop()

    asyncio.run(go())


def test_the_unauthenticated_emulator_needs_a_loopback_bind() -> None:
    assert Settings(sfn={"unauthenticated": True}).sfn.unauthenticated  # type: ignore[arg-type]
    assert Settings(host="::1", sfn={"unauthenticated": True}).sfn.unauthenticated  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loopback"):
        Settings(host="0.0.0.0", sfn={"unauthenticated": True})  # type: ignore[arg-type]
    assert Settings(host="0.0.0.0").sfn.region == "us-east-1"
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.com")
