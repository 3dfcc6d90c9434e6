"""Places where mlgate used to differ from AWS Step Functions' recorded executions.

- the context object: ARNs for ``Execution.Id`` and ``StateMachine.Id``, ``Execution.RoleArn``
  (https://docs.aws.amazon.com/step-functions/latest/dg/input-output-contextobject.html);
- ``OutputPath`` (and ``InputPath``) may read the context object (``$$``);
- a mapped Lambda's failure has Lambda's JSON error payload as its ``Cause``;
- a string ``Payload`` of ``lambda:invoke`` is JSON text.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mlgate.workflows import arns
from mlgate.workflows.actions import Actions
from mlgate.workflows.engine import TaskCall, TaskFailure
from mlgate.workflows.mapping import parse_mapping

from .support import Tasks, execute, machine, single, task

FN = "arn:aws:lambda:us-east-1:123456789012:function:enrich"


# -- arns ------------------------------------------------------------------------------------------


def test_arns_round_trip() -> None:
    assert arns.state_machine_arn("w") == "arn:aws:states:us-east-1:123456789012:stateMachine:w"
    assert arns.execution_arn("w", "n") == "arn:aws:states:us-east-1:123456789012:execution:w:n"
    assert arns.role_arn() == arns.ROLE_ARN == "arn:aws:iam::123456789012:role/mlgate-workflows"
    parsed = arns.parse_execution_arn(arns.execution_arn("w", "n", region="eu-west-1", account="1"))
    assert parsed == arns.ExecutionArn("eu-west-1", "1", "w", "n")
    assert arns.parse_state_machine_arn(arns.state_machine_arn("w")) == arns.StateMachineArn(
        "us-east-1", "123456789012", "w"
    )
    assert arns.parse_state_machine_arn("arn:aws:states:r:1:stateMachine:w:prod") == arns.StateMachineArn(
        "r", "1", "w", "prod"
    )
    assert arns.parse_execution_arn("arn:aws:states:r:1:stateMachine:w") is None
    assert arns.parse_state_machine_arn("w") is None


# -- the context object ----------------------------------------------------------------------------


def test_context_ids_are_arns_and_the_execution_has_a_role() -> None:
    run = execute(
        single({"Type": "Pass", "Parameters": {"e.$": "$$.Execution", "m.$": "$$.StateMachine"}}),
        {"k": 1},
        execution_id="0f3a",
        execution_name="run-1",
        state_machine_name="vehiculos",
    )
    assert run.output["e"]["Id"] == "arn:aws:states:us-east-1:123456789012:execution:vehiculos:run-1"
    assert run.output["e"]["Name"] == "run-1"
    assert run.output["e"]["RoleArn"] == "arn:aws:iam::123456789012:role/mlgate-workflows"
    assert run.output["m"] == {
        "Id": "arn:aws:states:us-east-1:123456789012:stateMachine:vehiculos",
        "Name": "vehiculos",
    }


def test_an_execution_without_a_name_is_named_by_its_id() -> None:
    run = execute(
        single({"Type": "Pass", "OutputPath": "$$.Execution"}), execution_id="abc", state_machine_name="w"
    )
    assert (run.output["Name"], run.output["Id"]) == ("abc", arns.execution_arn("w", "abc"))


def test_explicit_arns_are_kept() -> None:
    run = execute(
        single({"Type": "Pass", "Parameters": {"e.$": "$$.Execution.Id", "m.$": "$$.StateMachine.Id"}}),
        execution_arn="arn:aws:states:eu-west-1:1:execution:w:n",
        state_machine_id="arn:aws:states:eu-west-1:1:stateMachine:w",
    )
    assert run.output == {
        "e": "arn:aws:states:eu-west-1:1:execution:w:n",
        "m": "arn:aws:states:eu-west-1:1:stateMachine:w",
    }


# -- OutputPath / InputPath with $$ ----------------------------------------------------------------


def test_outputpath_reads_the_context_object() -> None:
    run = execute(
        machine(
            {
                "A": {"Type": "Pass", "OutputPath": "$$.State.Name", "Next": "B"},
                "B": {"Type": "Pass", "InputPath": "$$.Execution.Input.k", "End": True},
            }
        ),
        {"k": [1, 2]},
    )
    assert run.status == "SUCCEEDED", run.cause
    assert run.output == [1, 2]
    assert run.of_type("PassStateExited")[0].details["output"] == "A"


def test_outputpath_context_sees_the_final_retry_count() -> None:
    tasks_run = execute(
        single(task(OutputPath="$$.State.RetryCount", Retry=[{"ErrorEquals": ["E"], "IntervalSeconds": 1}])),
        tasks=_failing_twice(),
    )
    assert (tasks_run.status, tasks_run.output) == ("SUCCEEDED", 2)


def test_outputpath_of_a_missing_context_field_is_a_runtime_error() -> None:
    run = execute(single({"Type": "Pass", "OutputPath": "$$.Task.Token"}))
    assert (run.status, run.error) == ("FAILED", "States.Runtime")


def _failing_twice() -> Any:
    return Tasks({"fn": [TaskFailure("E", "x"), TaskFailure("E", "y"), {"ok": True}]})


# -- Lambda errors and payloads --------------------------------------------------------------------


def _call(resource: str, data: Any) -> TaskCall:
    return TaskCall(resource=resource, input=data, state_name="S", execution_id="x", context={})


def _boom(event: Any) -> Any:
    raise ValueError(f"bad value {event!r}")


def _failure(coro: Any) -> TaskFailure:
    try:
        asyncio.run(coro)
    except TaskFailure as failure:
        return failure
    raise AssertionError("the task did not fail")


ACTIONS = Actions(dataplane=None, buckets=None, functions={"boom": _boom, "echo": lambda event: event})
MAPPING = parse_mapping(
    {
        "resources": {
            FN: {"action": "python", "function": "boom"},
            "echo": {"action": "python", "function": "echo"},
            "missing": {"action": "python", "function": "nope"},
        }
    }
)


def test_a_failing_mapped_lambda_has_lambdas_error_payload_as_cause() -> None:
    for call in (
        _call(FN, {"a": 1}),
        _call("arn:aws:states:::lambda:invoke", {"FunctionName": FN, "Payload": {"a": 1}}),
        _call("arn:aws:states:::lambda:invoke", {"FunctionName": f"{FN}:$LATEST", "Payload": {"a": 1}}),
    ):
        failure = _failure(ACTIONS.run(call, MAPPING))
        assert failure.error == "ValueError"  # errorType
        cause = json.loads(failure.cause)
        assert set(cause) == {"errorMessage", "errorType", "requestId", "stackTrace"}
        assert cause["errorMessage"] == "bad value {'a': 1}"
        assert (cause["errorType"], cause["stackTrace"]) == ("ValueError", [])


def test_service_errors_keep_a_plain_cause() -> None:
    failure = _failure(
        ACTIONS.run(
            _call("arn:aws:states:::lambda:invoke", {"FunctionName": "ghost", "Payload": {}}), MAPPING
        )
    )
    assert failure.error == "Lambda.ResourceNotFoundException"
    assert not failure.cause.startswith("{")
    unregistered = _failure(
        ACTIONS.run(_call("arn:aws:lambda:us-east-1:123456789012:function:missing", {}), MAPPING)
    )
    assert unregistered.error == "Mlgate.UnmappedResource"
    assert not unregistered.cause.startswith("{")


def test_native_python_failures_keep_their_message_as_cause() -> None:
    failure = _failure(ACTIONS.run(_call("mlgate:python:boom", 1), MAPPING))
    assert (failure.error, failure.cause) == ("ValueError", "bad value 1")


def test_a_string_payload_is_json_text() -> None:
    def invoke(payload: Any) -> Any:
        call = _call("arn:aws:states:::lambda:invoke", {"FunctionName": "echo", "Payload": payload})
        return asyncio.run(ACTIONS.run(call, MAPPING))["Payload"]

    assert invoke('{"a": [1, 2]}') == {"a": [1, 2]}
    assert invoke("42") == 42
    assert invoke('"text"') == "text"
    assert invoke("not json") == "not json"  # not JSON text: the string itself
    assert invoke(None) == {}


def test_a_failing_lambda_cause_reaches_a_catcher_as_json_text() -> None:
    from mlgate.workflows.engine import FakeClock, Interpreter
    from mlgate.workflows.spec import parse_definition

    definition = machine(
        {
            "Call": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": FN, "Payload.$": "States.JsonToString($)"},
                "Catch": [{"ErrorEquals": ["ValueError"], "ResultPath": "$.error", "Next": "Done"}],
                "End": True,
            },
            "Done": {
                "Type": "Pass",
                "Parameters": {"message.$": "States.StringToJson($.error.Cause)"},
                "End": True,
            },
        }
    )
    interpreter = Interpreter(
        parse_definition(definition), invoke=ACTIONS.invoker(MAPPING), clock=FakeClock(), execution_id="e"
    )
    result = asyncio.run(interpreter.run({"k": "v"}))
    assert result.status == "SUCCEEDED", result.cause
    assert result.output["message"]["errorMessage"] == "bad value {'k': 'v'}"  # Payload was parsed


# -- history and path failures as AWS records them -------------------------------------------------


def test_parallel_and_map_failed_events_only_when_the_failure_is_final() -> None:
    flaky = single({"Type": "Fail", "Error": "Flaky", "Cause": "again"}, "Flake")
    retry = [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 1, "MaxAttempts": 2}]
    for state in (
        {"Type": "Parallel", "Branches": [flaky], "Retry": retry},
        {"Type": "Map", "ItemProcessor": flaky, "ItemsPath": "$.xs", "Retry": retry},
    ):
        run = execute(single(state, "P"), {"xs": [1]})
        assert (run.status, run.error) == ("FAILED", "Flaky")
        started = f"{state['Type']}StateStarted"
        failed = f"{state['Type']}StateFailed"
        assert [t for t in run.types() if t in (started, failed, "RetryScheduled")] == [
            started,
            "RetryScheduled",
            started,
            "RetryScheduled",
            started,
            failed,
        ]


def test_a_missing_path_in_result_selector_or_item_selector_is_a_runtime_error() -> None:
    catch_all = [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]
    run = execute(
        machine(
            {
                "T": task(ResultSelector={"x.$": "$.nope"}, Catch=catch_all, End=True),
                "Caught": {"Type": "Succeed"},
            }
        ),
        {"a": 1},
    )
    assert (run.status, run.error) == ("FAILED", "States.Runtime")
    assert "specified for the field 'x.$' could not be found in the input '{\"a\":1}'" in (run.cause or "")
    mapped = execute(
        single(
            {
                "Type": "Map",
                "ItemSelector": {"v.$": "$$.Map.Item.Value.k"},
                "ItemProcessor": single({"Type": "Pass"}, "E"),
            },
            "M",
        ),
        [{}],
    )
    assert (mapped.status, mapped.error) == ("FAILED", "States.Runtime")


def test_a_loop_of_pass_and_choice_states_lets_the_event_loop_run() -> None:
    """A loop without a Task or a Wait still yields at each state, so other requests (and a
    stop) get through instead of the execution holding the event loop until it ends."""
    import asyncio

    from mlgate.workflows.engine import FakeClock, Interpreter
    from mlgate.workflows.spec import parse_definition

    countdown = machine(
        {
            "Check": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.n", "NumericGreaterThan": 0, "Next": "Down"}],
                "Default": "Done",
            },
            "Down": {"Type": "Pass", "Parameters": {"n.$": "States.MathAdd($.n, -1)"}, "Next": "Check"},
            "Done": {"Type": "Succeed"},
        }
    )

    async def scenario() -> tuple[str, int]:
        interpreter = Interpreter(parse_definition(countdown), invoke=Tasks(), clock=FakeClock())
        ticks = 0

        async def other_work() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(other_work())
        result = await interpreter.run({"n": 200})
        other.cancel()
        return result.status, ticks

    status, ticks = asyncio.run(scenario())
    assert status == "SUCCEEDED"
    assert ticks >= 200  # the other task ran between the states
