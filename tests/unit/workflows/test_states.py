"""Conformance: Pass, Wait, Succeed, Fail and Task states, state and execution timeouts, stopping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from mlgate.workflows.engine import FakeClock, Interpreter, TaskCall, TaskFailure
from mlgate.workflows.spec import parse_definition
from tests.unit.workflows.support import Tasks, execute, machine, single, task

# -- Pass --------------------------------------------------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/state-pass.html


def test_pass_state_injects_a_result_at_resultpath() -> None:
    definition = machine(
        {
            "No-op": {
                "Type": "Pass",
                "Result": {"x-datum": 0.381018, "y-datum": 622.2269926397355},
                "ResultPath": "$.coords",
                "Next": "End",
            },
            "End": {"Type": "Succeed"},
        }
    )
    assert execute(definition, {"georefOf": "Home"}).output == {
        "georefOf": "Home",
        "coords": {"x-datum": 0.381018, "y-datum": 622.2269926397355},
    }


def test_pass_state_without_result_passes_its_input() -> None:
    assert execute(single({"Type": "Pass"}), {"a": [1, 2]}).output == {"a": [1, 2]}


def test_pass_state_parameters_shape_its_output() -> None:
    definition = single(
        {"Type": "Pass", "Parameters": {"greeting.$": "States.Format('Hi {}', $.who)", "n": 1}}
    )
    assert execute(definition, {"who": "Ana"}).output == {"greeting": "Hi Ana", "n": 1}


def test_pass_state_result_null_is_a_result() -> None:
    assert execute(single({"Type": "Pass", "Result": None, "ResultPath": "$.r"}), {"a": 1}).output == {
        "a": 1,
        "r": None,
    }


# -- Wait ----------------------------------------------------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/state-wait.html


def test_wait_seconds_sleeps_on_the_clock() -> None:
    run = execute(single({"Type": "Wait", "Seconds": 10}, "wait_ten_seconds"), {"a": 1})
    assert run.clock.sleeps == [10]
    assert run.output == {"a": 1}


def test_wait_until_an_absolute_timestamp() -> None:
    run = execute(
        single({"Type": "Wait", "Timestamp": "2016-03-14T01:59:00Z"}, "wait_until"),
        start=datetime(2016, 3, 14, 1, 58, 30, tzinfo=UTC),
    )
    assert run.clock.sleeps == [30]


def test_wait_until_a_timestamp_from_the_input() -> None:
    run = execute(
        single({"Type": "Wait", "TimestampPath": "$.expirydate"}, "wait_until"),
        {"expirydate": "2016-03-14T01:59:00Z"},
        start=datetime(2016, 3, 14, 1, 0, 0, tzinfo=UTC),
    )
    assert run.clock.sleeps == [3540]


def test_wait_seconds_from_the_input() -> None:
    run = execute(single({"Type": "Wait", "SecondsPath": "$.delay"}), {"delay": 2.5})
    assert run.clock.sleeps == [2.5]


def test_wait_for_a_past_timestamp_does_not_sleep() -> None:
    run = execute(single({"Type": "Wait", "Timestamp": "2001-01-01T00:00:00Z"}))
    assert (run.status, run.clock.sleeps) == ("SUCCEEDED", [])


@pytest.mark.parametrize(("field", "value"), [("SecondsPath", "soon"), ("TimestampPath", "tomorrow")])
def test_wait_with_a_bad_value_at_its_path_is_a_runtime_error(field: str, value: str) -> None:
    run = execute(single({"Type": "Wait", field: "$.v"}), {"v": value})
    assert (run.status, run.error) == ("FAILED", "States.Runtime")


def test_wait_state_applies_input_and_output_path() -> None:
    definition = single({"Type": "Wait", "Seconds": 1, "InputPath": "$.in", "OutputPath": "$.x"})
    assert execute(definition, {"in": {"x": 5}}).output == 5


# -- Succeed -----------------------------------------------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/state-succeed.html


def test_succeed_state_ends_with_its_filtered_input() -> None:
    definition = single({"Type": "Succeed", "InputPath": "$.a", "OutputPath": "$.b"})
    run = execute(definition, {"a": {"b": "done"}})
    assert (run.status, run.output) == ("SUCCEEDED", "done")


# -- Fail ----------------------------------------------------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/state-fail.html


def test_fail_state_error_and_cause() -> None:
    definition = single({"Type": "Fail", "Error": "ErrorA", "Cause": "Kaiju attack"}, "FailState")
    run = execute(definition)
    assert (run.status, run.error, run.cause, run.output) == ("FAILED", "ErrorA", "Kaiju attack", None)


def test_fail_state_error_path_and_cause_path() -> None:
    definition = single({"Type": "Fail", "ErrorPath": "$$.State.Name", "CausePath": "$.Cause"}, "FailState")
    run = execute(definition, {"Cause": "the cause"})
    assert (run.error, run.cause) == ("FailState", "the cause")


def test_fail_state_cause_path_with_an_intrinsic() -> None:
    cause = "States.Format('this is the error: {}, and this is the cause: {}', $.Error, $.Cause)"
    definition = single({"Type": "Fail", "ErrorPath": "$.Error", "CausePath": cause})
    run = execute(definition, {"Error": "ErrorA", "Cause": "Kaiju attack"})
    assert (run.error, run.cause) == (
        "ErrorA",
        "this is the error: ErrorA, and this is the cause: Kaiju attack",
    )


def test_fail_state_error_path_must_select_a_string() -> None:
    run = execute(single({"Type": "Fail", "ErrorPath": "$.e"}), {"e": 42})
    assert (run.status, run.error) == ("FAILED", "States.Runtime")


def test_fail_state_without_error_or_cause() -> None:
    run = execute(single({"Type": "Fail"}))
    assert (run.status, run.error, run.cause) == ("FAILED", None, None)


# -- Task ----------------------------------------------------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/state-task.html and .../concepts-error-handling.html


def test_task_call_carries_resource_state_execution_and_context() -> None:
    run = execute(single(task("mlgate:model:invoke"), "Infer"), {"x": 1}, execution_id="e-1")
    call = run.tasks.calls[0]
    assert (call.resource, call.input, call.state_name, call.execution_id) == (
        "mlgate:model:invoke",
        {"x": 1},
        "Infer",
        "e-1",
    )
    # the context object has the execution's ARN (its name defaults to the id)
    assert call.context["Execution"]["Id"] == "arn:aws:states:us-east-1:123456789012:execution::e-1"


def test_a_task_failure_names_the_error() -> None:
    tasks = Tasks({"fn": TaskFailure("THRESHOLD_CONFIDENCE_NOT_MET", "best 0.41 < 0.75")})
    run = execute(single(task()), tasks=tasks)
    assert (run.status, run.error, run.cause) == (
        "FAILED",
        "THRESHOLD_CONFIDENCE_NOT_MET",
        "best 0.41 < 0.75",
    )


def test_any_other_exception_is_states_task_failed_with_its_message_as_cause() -> None:
    run = execute(single(task()), tasks=Tasks({"fn": ValueError("model exploded")}))
    assert (run.error, run.cause) == ("States.TaskFailed", "model exploded")


def test_an_exception_without_message_is_described_by_its_type() -> None:
    run = execute(single(task()), tasks=Tasks({"fn": KeyError()}))
    assert (run.error, run.cause) == ("States.TaskFailed", "KeyError")


async def _forever(_input: Any) -> Any:
    await asyncio.Event().wait()


def test_task_timeout_seconds_is_states_timeout() -> None:
    run = execute(single(task(TimeoutSeconds=0.01)), tasks=Tasks({"fn": _forever}))
    assert (run.status, run.error) == ("FAILED", "States.Timeout")
    assert run.types()[-2:] == ["TaskTimedOut", "ExecutionFailed"]


def test_task_timeout_seconds_path() -> None:
    run = execute(single(task(TimeoutSecondsPath="$.t")), {"t": 0.01}, tasks=Tasks({"fn": _forever}))
    assert run.error == "States.Timeout"


def test_a_timeout_error_raised_by_the_task_itself_is_a_task_failure() -> None:
    run = execute(single(task(TimeoutSeconds=60)), tasks=Tasks({"fn": TimeoutError("upstream slow")}))
    assert (run.error, run.cause) == ("States.TaskFailed", "upstream slow")


def test_task_fast_enough_is_not_timed_out() -> None:
    run = execute(single(task(TimeoutSeconds=5)), {"a": 1})
    assert run.status == "SUCCEEDED"


# -- Execution timeout -----------------------------------------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/statemachine-structure.html (TimeoutSeconds)


def test_machine_timeout_seconds_on_the_clock_times_out_the_execution() -> None:
    definition = machine({"W": {"Type": "Wait", "Seconds": 60, "End": True}}, TimeoutSeconds=10)
    run = execute(definition)
    assert (run.status, run.error, run.output) == ("TIMED_OUT", "States.Timeout", None)
    assert run.clock.sleeps == [10]
    assert run.types()[-1] == "ExecutionTimedOut"


def test_machine_timeout_seconds_in_real_time_stops_a_hanging_task() -> None:
    definition = machine({"T": task(End=True)}, TimeoutSeconds=0.02)
    run = execute(definition, tasks=Tasks({"fn": _forever}))
    assert (run.status, run.error) == ("TIMED_OUT", "States.Timeout")


def test_machine_timeout_cannot_be_caught_by_a_state() -> None:
    definition = machine(
        {
            "T": task(End=True, Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]),
            "Caught": {"Type": "Succeed"},
        },
        TimeoutSeconds=0.02,
    )
    assert execute(definition, tasks=Tasks({"fn": _forever})).status == "TIMED_OUT"


def test_an_execution_within_its_timeout_succeeds() -> None:
    definition = machine({"W": {"Type": "Wait", "Seconds": 5, "End": True}}, TimeoutSeconds=10)
    assert execute(definition).status == "SUCCEEDED"


# -- Stopping ---------------------------------------------------------------------------------------------


def _hanging_machine() -> Interpreter:
    started = asyncio.Event()

    async def invoke(call: TaskCall) -> Any:
        started.set()
        await asyncio.Event().wait()

    interpreter = Interpreter(parse_definition(single(task())), invoke=invoke, clock=FakeClock())
    interpreter.started = started  # type: ignore[attr-defined]
    return interpreter


def test_stop_aborts_the_execution_and_run_returns_aborted() -> None:
    async def scenario() -> Any:
        interpreter = _hanging_machine()
        running = asyncio.create_task(interpreter.run({}))
        await interpreter.started.wait()  # type: ignore[attr-defined]
        interpreter.stop("Stopped", "by the operator")
        return await running

    result = asyncio.run(scenario())
    assert (result.status, result.error, result.cause) == ("ABORTED", "Stopped", "by the operator")


def test_cancelling_the_run_returns_aborted_and_emits_execution_aborted() -> None:
    events: list[str] = []

    async def scenario() -> Any:
        started = asyncio.Event()

        async def invoke(call: TaskCall) -> Any:
            started.set()
            await asyncio.Event().wait()

        interpreter = Interpreter(
            parse_definition(single(task())), invoke=invoke, on_event=lambda e: events.append(e.type)
        )
        running = asyncio.create_task(interpreter.run({}))
        await started.wait()
        running.cancel()
        result = await running
        assert not running.cancelled()
        return result

    assert asyncio.run(scenario()).status == "ABORTED"
    assert events[-1] == "ExecutionAborted"
