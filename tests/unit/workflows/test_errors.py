"""Conformance: Retry (back-off timing on a fake clock) and Catch (error output, ResultPath).

https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html and the
"Errors" chapter of the Amazon States Language (amazon-states-language-errors.html).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from mlgate.workflows.engine import TaskFailure
from tests.unit.workflows.support import Tasks, execute, machine, single, task


async def _forever(_input: Any) -> Any:
    await asyncio.Event().wait()


def failing(*errors: str) -> list[Any]:
    """A task outcome list: fail with each error in turn, then succeed with "ok"."""
    return [TaskFailure(error, f"{error} happened") for error in errors] + ["ok"]


def retry_state(retry: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return single(task(Retry=retry, **fields))


# -- Retry timing ----------------------------------------------------------------------------------


def test_retry_makes_two_attempts_after_3_and_4_5_seconds() -> None:
    retry = [{"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 3, "MaxAttempts": 2, "BackoffRate": 1.5}]
    run = execute(retry_state(retry, TimeoutSeconds=0.01), tasks=Tasks({"fn": _forever}))
    assert run.clock.sleeps == [3, 4.5]
    assert (run.status, run.error) == ("FAILED", "States.Timeout")
    assert len(run.tasks.calls) == 3


def test_retry_four_attempts_wait_3_4_5_6_75_and_10_125_seconds() -> None:
    retry = [{"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 3, "MaxAttempts": 4, "BackoffRate": 1.5}]
    run = execute(retry_state(retry, TimeoutSeconds=0.01), tasks=Tasks({"fn": _forever}))
    assert run.clock.sleeps == [3, 4.5, 6.75, 10.125]


def test_retrier_defaults_are_interval_1_max_attempts_3_backoff_2() -> None:
    run = execute(retry_state([{"ErrorEquals": ["States.ALL"]}]), tasks=Tasks({"fn": ValueError("boom")}))
    assert run.clock.sleeps == [1, 2, 4]
    assert (run.error, len(run.tasks.calls)) == ("States.TaskFailed", 4)


def test_retry_succeeds_when_the_task_recovers() -> None:
    run = execute(retry_state([{"ErrorEquals": ["Flaky"]}]), tasks=Tasks({"fn": failing("Flaky", "Flaky")}))
    assert (run.status, run.output, run.clock.sleeps) == ("SUCCEEDED", "ok", [1, 2])


def test_max_delay_seconds_caps_the_backoff() -> None:
    retry = [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 5, "MaxDelaySeconds": 5}]
    run = execute(retry_state(retry), tasks=Tasks({"fn": ValueError()}))
    assert run.clock.sleeps == [1, 2, 4, 5, 5]


def test_backoff_rate_1_keeps_the_interval() -> None:
    retry = [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "BackoffRate": 1}]
    run = execute(retry_state(retry), tasks=Tasks({"fn": ValueError()}))
    assert run.clock.sleeps == [2, 2, 2]


def test_full_jitter_draws_each_wait_between_zero_and_the_backoff() -> None:
    # The guide's example: MaxAttempts 3, IntervalSeconds 2, BackoffRate 2 waits 2, 4 and 8
    # seconds; with JitterStrategy FULL each wait is random in [0, 2], [0, 4] and [0, 8].
    retry = [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 3, "IntervalSeconds": 2, "BackoffRate": 2}]
    plain = execute(retry_state(retry), tasks=Tasks({"fn": ValueError()}))
    assert plain.clock.sleeps == [2, 4, 8]
    jittered = execute(
        retry_state([{**retry[0], "JitterStrategy": "FULL"}]),
        tasks=Tasks({"fn": ValueError()}),
        rng=random.Random(7),
    )
    assert len(jittered.clock.sleeps) == 3
    for wait, cap in zip(jittered.clock.sleeps, [2, 4, 8], strict=True):
        assert 0 <= wait <= cap
    assert jittered.clock.sleeps != [2, 4, 8]


def test_max_attempts_0_never_retries() -> None:
    # Retry any error except States.Timeout.
    retry = [{"ErrorEquals": ["States.Timeout"], "MaxAttempts": 0}, {"ErrorEquals": ["States.ALL"]}]
    timed_out = execute(retry_state(retry, TimeoutSeconds=0.01), tasks=Tasks({"fn": _forever}))
    assert (timed_out.error, timed_out.clock.sleeps) == ("States.Timeout", [])
    other = execute(retry_state(retry), tasks=Tasks({"fn": failing("Other")}))
    assert (other.status, other.clock.sleeps) == ("SUCCEEDED", [1])


def test_complex_retry_scenario_counts_attempts_per_retrier() -> None:
    # ErrorA, ErrorB: first retrier, waits 1 and 2 s; ErrorC: second retrier, waits 5 s; ErrorB
    # again: the first retrier's MaxAttempts (2) is used up, so the catcher sends it to Z.
    definition = machine(
        {
            "X": task(
                "arn:aws:states:us-east-1:123456789012:task:X",
                Next="Y",
                Retry=[
                    {
                        "ErrorEquals": ["ErrorA", "ErrorB"],
                        "IntervalSeconds": 1,
                        "BackoffRate": 2.0,
                        "MaxAttempts": 2,
                    },
                    {"ErrorEquals": ["ErrorC"], "IntervalSeconds": 5},
                ],
                Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Z"}],
            ),
            "Y": {"Type": "Pass", "Result": "Y", "End": True},
            "Z": {"Type": "Pass", "End": True},
        }
    )
    tasks = Tasks(
        {"arn:aws:states:us-east-1:123456789012:task:X": failing("ErrorA", "ErrorB", "ErrorC", "ErrorB")}
    )
    run = execute(definition, tasks=tasks)
    assert run.clock.sleeps == [1, 2, 5]
    assert run.output == {"Error": "ErrorB", "Cause": "ErrorB happened"}
    assert [e.details["attempt"] for e in run.of_type("RetryScheduled")] == [1, 2, 3]


def test_only_the_first_matching_retrier_applies() -> None:
    retry = [{"ErrorEquals": ["E"], "MaxAttempts": 1}, {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5}]
    run = execute(retry_state(retry), tasks=Tasks({"fn": failing("E", "E")}))
    assert (run.status, run.error, run.clock.sleeps) == ("FAILED", "E", [1])


def test_states_task_failed_matches_any_error_but_timeout() -> None:
    retry = [{"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 1}]
    custom = execute(retry_state(retry), tasks=Tasks({"fn": failing("HandledError")}))
    assert (custom.status, custom.clock.sleeps) == ("SUCCEEDED", [1])
    timeout = execute(retry_state(retry, TimeoutSeconds=0.01), tasks=Tasks({"fn": _forever}))
    assert (timeout.error, timeout.clock.sleeps) == ("States.Timeout", [])


def test_retry_count_is_in_the_context_object() -> None:
    state = task(Parameters={"n.$": "$$.State.RetryCount"}, Retry=[{"ErrorEquals": ["States.ALL"]}])
    tasks = Tasks({"fn": failing("A", "B")})
    execute(single(state), tasks=tasks)
    assert tasks.inputs("fn") == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_runtime_errors_are_never_retried() -> None:
    run = execute(retry_state([{"ErrorEquals": ["States.ALL"]}], OutputPath="$.missing"))
    assert (run.error, run.clock.sleeps) == ("States.Runtime", [])


def test_retry_events_carry_error_attempt_and_delay() -> None:
    run = execute(retry_state([{"ErrorEquals": ["Flaky"]}]), tasks=Tasks({"fn": failing("Flaky")}))
    [event] = run.of_type("RetryScheduled")
    assert event.state == "S"
    assert event.details == {
        "error": "Flaky",
        "cause": "Flaky happened",
        "attempt": 1,
        "retrier": 0,
        "delay_seconds": 1.0,
    }


# -- Catch ---------------------------------------------------------------------------------------------

HELLO_CATCH = {
    "Comment": "A Hello World example of the Amazon States Language using an AWS Lambda function",
    "StartAt": "HelloWorld",
    "States": {
        "HelloWorld": {
            "Type": "Task",
            "Resource": "arn:aws:lambda:us-east-1:123456789012:function:FailFunction",
            "Catch": [{"ErrorEquals": ["HandledError"], "Next": "fallback"}],
            "End": True,
        },
        "fallback": {"Type": "Pass", "Result": "Hello, AWS Step Functions!", "End": True},
    },
}
FAIL_FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:FailFunction"


def test_catch_transitions_to_the_fallback_state() -> None:
    run = execute(HELLO_CATCH, tasks=Tasks({FAIL_FUNCTION: TaskFailure("HandledError", "error")}))
    assert (run.status, run.output) == ("SUCCEEDED", "Hello, AWS Step Functions!")


def test_catch_states_task_failed_catches_any_task_error() -> None:
    definition = {**HELLO_CATCH}
    definition["States"] = {
        **HELLO_CATCH["States"],
        "HelloWorld": {
            **HELLO_CATCH["States"]["HelloWorld"],
            "Catch": [{"ErrorEquals": ["States.TaskFailed"], "Next": "fallback"}],
        },
    }
    run = execute(definition, tasks=Tasks({FAIL_FUNCTION: RuntimeError("error")}))
    assert run.output == "Hello, AWS Step Functions!"


def test_an_error_no_catcher_matches_fails_the_execution() -> None:
    run = execute(HELLO_CATCH, tasks=Tasks({FAIL_FUNCTION: TaskFailure("OtherError", "no")}))
    assert (run.status, run.error, run.cause) == ("FAILED", "OtherError", "no")


def test_catch_a_timeout() -> None:
    definition = machine(
        {
            "HelloWorld": task(
                TimeoutSeconds=0.01, Catch=[{"ErrorEquals": ["States.Timeout"], "Next": "fallback"}], End=True
            ),
            "fallback": {"Type": "Pass", "Result": "Hello, AWS Step Functions!", "End": True},
        }
    )
    assert execute(definition, tasks=Tasks({"fn": _forever})).output == "Hello, AWS Step Functions!"


CATCHERS = [
    {"ErrorEquals": ["java.lang.Exception"], "ResultPath": "$.error-info", "Next": "RecoveryState"},
    {"ErrorEquals": ["States.ALL"], "Next": "EndState"},
]


def _catching() -> dict[str, Any]:
    return machine(
        {
            "T": task(Catch=CATCHERS, End=True),
            "RecoveryState": {"Type": "Pass", "End": True},
            "EndState": {"Type": "Pass", "End": True},
        }
    )


def test_catcher_resultpath_adds_the_error_output_to_the_input() -> None:
    failure = TaskFailure("java.lang.Exception", "NullPointerException")
    run = execute(_catching(), {"order": 1}, tasks=Tasks({"fn": failure}))
    assert run.output == {
        "order": 1,
        "error-info": {"Error": "java.lang.Exception", "Cause": "NullPointerException"},
    }
    assert [e.state for e in run.of_type("PassStateEntered")] == ["RecoveryState"]


def test_catcher_without_resultpath_replaces_the_input_with_the_error_output() -> None:
    run = execute(_catching(), {"order": 1}, tasks=Tasks({"fn": TaskFailure("Other", "why")}))
    assert run.output == {"Error": "Other", "Cause": "why"}
    assert [e.state for e in run.of_type("PassStateEntered")] == ["EndState"]


def test_catcher_resultpath_null_keeps_the_input() -> None:
    definition = machine(
        {
            "T": task(Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": "N"}], End=True),
            "N": {"Type": "Pass", "End": True},
        }
    )
    assert execute(definition, {"a": 1}, tasks=Tasks({"fn": ValueError()})).output == {"a": 1}


def test_catch_applies_to_the_raw_input_not_the_inputpath_selection_and_skips_outputpath() -> None:
    definition = machine(
        {
            "T": task(
                InputPath="$.sub",
                OutputPath="$.sub",
                Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.err", "Next": "N"}],
                End=True,
            ),
            "N": {"Type": "Pass", "End": True},
        }
    )
    run = execute(definition, {"sub": {"x": 1}, "top": 2}, tasks=Tasks({"fn": TaskFailure("E")}))
    assert run.output == {"sub": {"x": 1}, "top": 2, "err": {"Error": "E"}}


def test_retry_runs_before_catch() -> None:
    definition = machine(
        {
            "T": task(
                Retry=[{"ErrorEquals": ["E"], "MaxAttempts": 2}],
                Catch=[{"ErrorEquals": ["E"], "Next": "N"}],
                End=True,
            ),
            "N": {"Type": "Pass", "End": True},
        }
    )
    run = execute(definition, tasks=Tasks({"fn": TaskFailure("E", "always")}))
    assert (run.clock.sleeps, len(run.tasks.calls), run.output) == (
        [1, 2],
        3,
        {"Error": "E", "Cause": "always"},
    )


@pytest.mark.parametrize("error", ["States.Runtime", "States.ALL"])
def test_runtime_errors_cannot_be_caught(error: str) -> None:
    definition = machine(
        {
            "T": task(OutputPath="$.missing", Catch=[{"ErrorEquals": [error], "Next": "N"}], End=True),
            "N": {"Type": "Pass", "End": True},
        }
    )
    assert execute(definition).error == "States.Runtime"


def test_a_resultpath_match_failure_is_caught() -> None:
    definition = machine(
        {
            "T": task(
                ResultPath="$.r",
                Catch=[{"ErrorEquals": ["States.ResultPathMatchFailure"], "Next": "N"}],
                End=True,
            ),
            "N": {"Type": "Pass", "End": True},
        }
    )
    assert execute(definition, [1, 2]).output["Error"] == "States.ResultPathMatchFailure"
