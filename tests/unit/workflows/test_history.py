"""The event history of an execution: exact event sequences, like an AWS execution history."""

from __future__ import annotations

from datetime import UTC, datetime

from mlgate.workflows.engine import TaskFailure
from tests.unit.workflows.support import Tasks, execute, machine

SMALL = machine(
    {
        "Prepare": {"Type": "Pass", "Result": {"threshold": 0.75}, "ResultPath": "$.config", "Next": "Infer"},
        "Infer": {"Type": "Task", "Resource": "model", "ResultPath": "$.inferences", "Next": "Confident?"},
        "Confident?": {
            "Type": "Choice",
            "Choices": [
                {
                    "Variable": "$.inferences.p",
                    "NumericGreaterThanEqualsPath": "$.config.threshold",
                    "Next": "Done",
                }
            ],
            "Default": "TooUnsure",
        },
        "Done": {"Type": "Succeed"},
        "TooUnsure": {"Type": "Fail", "Error": "THRESHOLD_CONFIDENCE_NOT_MET", "Cause": "below threshold"},
    }
)


def test_a_succeeding_execution() -> None:
    run = execute(SMALL, {"image": "..."}, tasks=Tasks({"model": {"p": 0.9}}), execution_id="x-1")
    assert run.types() == [
        "ExecutionStarted",
        "PassStateEntered",
        "PassStateExited",
        "TaskStateEntered",
        "TaskScheduled",
        "TaskStarted",
        "TaskSucceeded",
        "TaskStateExited",
        "ChoiceStateEntered",
        "ChoiceStateExited",
        "SucceedStateEntered",
        "SucceedStateExited",
        "ExecutionSucceeded",
    ]
    assert [e.id for e in run.events] == list(range(1, 14))
    assert [e.state for e in run.events] == [
        None,
        "Prepare",
        "Prepare",
        "Infer",
        "Infer",
        "Infer",
        "Infer",
        "Infer",
        "Confident?",
        "Confident?",
        "Done",
        "Done",
        None,
    ]
    started, succeeded = run.events[0], run.events[-1]
    assert started.details == {"input": {"image": "..."}}
    assert succeeded.details == {"output": run.output}
    assert run.events[4].details == {
        "resource": "model",
        "parameters": {"image": "...", "config": {"threshold": 0.75}},
        "timeout_seconds": None,
    }
    assert run.events[6].details == {"resource": "model", "output": {"p": 0.9}}
    assert run.events[9].details["next"] == "Done"
    assert all(e.timestamp == datetime(2024, 1, 1, tzinfo=UTC) for e in run.events)


def test_a_failing_execution_ends_at_the_fail_state() -> None:
    run = execute(SMALL, {}, tasks=Tasks({"model": {"p": 0.2}}))
    assert run.types()[-4:] == [
        "ChoiceStateEntered",
        "ChoiceStateExited",
        "FailStateEntered",
        "ExecutionFailed",
    ]
    assert run.events[-1].details == {"error": "THRESHOLD_CONFIDENCE_NOT_MET", "cause": "below threshold"}


def test_retries_and_a_catch_in_the_history() -> None:
    definition = machine(
        {
            "T": {
                "Type": "Task",
                "Resource": "flaky",
                "Retry": [{"ErrorEquals": ["Boom"], "MaxAttempts": 1}],
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Recover"}],
                "End": True,
            },
            "Recover": {"Type": "Pass", "End": True},
        }
    )
    run = execute(definition, tasks=Tasks({"flaky": TaskFailure("Boom", "again")}))
    assert run.types() == [
        "ExecutionStarted",
        "TaskStateEntered",
        "TaskScheduled",
        "TaskStarted",
        "TaskFailed",
        "RetryScheduled",
        "TaskScheduled",
        "TaskStarted",
        "TaskFailed",
        "TaskStateExited",
        "PassStateEntered",
        "PassStateExited",
        "ExecutionSucceeded",
    ]
    assert run.events[4].details == {"resource": "flaky", "error": "Boom", "cause": "again"}
    assert run.events[5].timestamp == datetime(2024, 1, 1, tzinfo=UTC)
    assert run.events[6].timestamp == datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)  # after the 1 s back-off


def test_parallel_and_map_events_carry_their_scope() -> None:
    definition = machine(
        {
            "P": {
                "Type": "Parallel",
                "Branches": [{"StartAt": "B", "States": {"B": {"Type": "Pass", "End": True}}}],
                "Next": "M",
            },
            "M": {
                "Type": "Map",
                "ItemsPath": "$[0]",
                "MaxConcurrency": 1,
                "ItemProcessor": {"StartAt": "I", "States": {"I": {"Type": "Pass", "End": True}}},
                "End": True,
            },
        }
    )
    run = execute(definition, [1, 2])
    assert [(e.type, e.state, e.details.get("scope")) for e in run.events] == [
        ("ExecutionStarted", None, None),
        ("ParallelStateEntered", "P", None),
        ("ParallelStateStarted", "P", None),
        ("ParallelBranchStarted", "P", None),
        ("PassStateEntered", "B", "P.branches[0]"),
        ("PassStateExited", "B", "P.branches[0]"),
        ("ParallelBranchSucceeded", "P", None),
        ("ParallelStateSucceeded", "P", None),
        ("ParallelStateExited", "P", None),
        ("MapStateEntered", "M", None),
        ("MapStateStarted", "M", None),
        ("MapIterationStarted", "M", None),
        ("PassStateEntered", "I", "M[0]"),
        ("PassStateExited", "I", "M[0]"),
        ("MapIterationSucceeded", "M", None),
        ("MapIterationStarted", "M", None),
        ("PassStateEntered", "I", "M[1]"),
        ("PassStateExited", "I", "M[1]"),
        ("MapIterationSucceeded", "M", None),
        ("MapStateSucceeded", "M", None),
        ("MapStateExited", "M", None),
        ("ExecutionSucceeded", None, None),
    ]
    assert run.output == [1, 2]
    assert run.of_type("MapStateStarted")[0].details == {"length": 2}
    assert [e.details["index"] for e in run.of_type("MapIterationStarted")] == [0, 1]


def test_a_wait_state_in_the_history_shows_the_clock() -> None:
    run = execute(machine({"W": {"Type": "Wait", "Seconds": 30, "End": True}}))
    entered, exited = run.of_type("WaitStateEntered")[0], run.of_type("WaitStateExited")[0]
    assert (exited.timestamp - entered.timestamp).total_seconds() == 30
