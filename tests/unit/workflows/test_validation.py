"""Definitions are validated on upload: one test per kind of error, every error reported at once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlgate.errors import InvalidInput
from mlgate.workflows.spec import MapState, ParallelState, TaskState, parse_definition
from tests.unit.workflows.support import machine


def errors_of(definition: Any) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        parse_definition(definition)
    assert caught.value.message == "invalid state machine definition"
    assert caught.value.status == 400
    errors: list[str] = caught.value.details["errors"]
    return errors


def only_error(definition: Any) -> str:
    errors = errors_of(definition)
    assert len(errors) == 1, errors
    return errors[0]


def end(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "End": True}


PASS = {"Type": "Pass", "End": True}


def test_a_valid_definition_parses() -> None:
    parsed = parse_definition(
        {"Comment": "c", "StartAt": "A", "TimeoutSeconds": 30, "Version": "1.0", "States": {"A": PASS}}
    )
    assert (parsed.start_at, parsed.timeout_seconds, parsed.comment) == ("A", 30.0, "c")
    assert parsed.raw["Version"] == "1.0"


def test_json_text_is_accepted() -> None:
    assert parse_definition(json.dumps(machine({"A": PASS}))).start_at == "A"


def test_json_syntax_error() -> None:
    assert only_error('{"StartAt": "A",').startswith("definition: not valid JSON")


def test_not_an_object() -> None:
    assert only_error([1, 2]) == "definition: a state machine must be a JSON object"


def test_missing_start_at() -> None:
    assert only_error({"States": {"A": PASS}}) == "StartAt: missing"


def test_missing_states() -> None:
    assert "States: missing" in errors_of({"StartAt": "A"})


def test_empty_states() -> None:
    assert "States: must be a non-empty object of states" in errors_of({"StartAt": "A", "States": {}})


def test_start_at_is_not_a_state() -> None:
    errors = errors_of({"StartAt": "B", "States": {"A": PASS}})
    assert "StartAt: 'B' is not a state" in errors


def test_unknown_type() -> None:
    assert only_error(machine({"A": {"Type": "Sleep", "End": True}})).startswith(
        "States.A: unknown Type 'Sleep'"
    )


def test_missing_next_or_end() -> None:
    assert only_error(machine({"A": {"Type": "Pass"}})) == 'States.A: needs Next or "End": true'


def test_both_next_and_end() -> None:
    definition = machine({"A": {"Type": "Pass", "Next": "B", "End": True}, "B": PASS})
    assert only_error(definition) == "States.A: has both Next and End (use one)"


def test_next_to_an_unknown_state() -> None:
    assert (
        only_error(machine({"Foo": {"Type": "Pass", "Next": "X"}})) == "States.Foo: Next 'X' is not a state"
    )


def test_unreachable_state() -> None:
    definition = machine({"A": PASS, "Orphan": PASS})
    assert only_error(definition) == "States.Orphan: unreachable from StartAt 'A'"


def test_states_reached_only_by_choice_default_or_catch_are_reachable() -> None:
    definition = machine(
        {
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.a", "IsPresent": True, "Next": "T"}],
                "Default": "D",
            },
            "T": {
                "Type": "Task",
                "Resource": "r",
                "End": True,
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "K"}],
            },
            "D": PASS,
            "K": PASS,
        }
    )
    assert set(parse_definition(definition).states) == {"C", "T", "D", "K"}


def test_choice_without_choices() -> None:
    definition = machine({"C": {"Type": "Choice", "Default": "D"}, "D": PASS})
    assert only_error(definition) == "States.C.Choices: a Choice state needs a non-empty array of Choices"


def test_choice_default_to_an_unknown_state() -> None:
    definition = machine(
        {
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.a", "IsNull": True, "Next": "D"}],
                "Default": "Z",
            },
            "D": PASS,
        }
    )
    assert only_error(definition) == "States.C: Default 'Z' is not a state"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"Variable": "$.a", "Next": "D"}, "needs one comparison operator"),
        (
            {"Variable": "$.a", "StringEquals": "x", "NumericEquals": 1, "Next": "D"},
            "needs one comparison operator",
        ),
        ({"Variable": "$.a", "NumericEquals": "1", "Next": "D"}, "NumericEquals: must be a number"),
        ({"Variable": "$.a", "BooleanEquals": "true", "Next": "D"}, "BooleanEquals: must be true or false"),
        (
            {"Variable": "$.a", "TimestampEquals": "yesterday", "Next": "D"},
            "TimestampEquals: must be a timestamp",
        ),
        ({"Variable": "$.a", "IsNull": "yes", "Next": "D"}, "IsNull: must be true or false"),
        ({"Variable": "a", "IsNull": True, "Next": "D"}, "Variable: 'a' is not a path"),
        ({"Variable": "$.a", "StringEqualsPath": "b", "Next": "D"}, "StringEqualsPath: 'b' is not a path"),
        (
            {"Variable": "$.a", "StringMatches": "open\\", "Next": "D"},
            "StringMatches: ends with an open escape",
        ),
        ({"Variable": "$.a", "IsNull": True}, "needs a 'Next' state name"),
        ({"And": [], "Next": "D"}, "And: must be a non-empty array"),
        (
            {"Not": {"Variable": "$.a", "IsNull": True, "Next": "D"}, "Next": "D"},
            "'Next' is only allowed in a top-level",
        ),
        ({"Variable": "$.a", "IsNull": True, "Next": "D", "Extra": 1}, "unexpected field 'Extra'"),
    ],
)
def test_malformed_choice_rules(rule: dict[str, Any], message: str) -> None:
    definition = machine({"C": {"Type": "Choice", "Choices": [rule], "Default": "D"}, "D": PASS})
    error = only_error(definition)
    assert error.startswith("States.C.Choices[0]"), error
    assert message in error


@pytest.mark.parametrize("kind", ["Fail", "Succeed"])
def test_terminal_states_cannot_have_next_or_end(kind: str) -> None:
    definition = machine({"A": {"Type": kind, "Next": "B"}, "B": PASS})
    assert errors_of(definition) == [
        f"States.A: a {kind} state cannot have Next or End",
        "States.B: unreachable from StartAt 'A'",
    ]


def test_choice_cannot_end() -> None:
    definition = machine(
        {
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.a", "IsNull": True, "Next": "D"}],
                "End": True,
            },
            "D": PASS,
        }
    )
    assert only_error(definition) == "States.C: a Choice state cannot have Next or End"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "InputPath",
            "dataset2",
            "States.A.InputPath: 'dataset2' is not a path: a path starts with '$' or '$$'",
        ),
        ("OutputPath", "$.a[", "States.A.OutputPath: '$.a[' is not a valid JSONPath"),
        ("ResultPath", "$.a[*]", "States.A.ResultPath: '$.a[*]' must be a reference path"),
        ("ResultPath", "$$.Execution", "States.A.ResultPath: cannot write into the context object"),
        ("Parameters", {"x.$": "nope"}, "States.A.Parameters.x.$: 'nope' is not a path"),
        ("Parameters", {"x.$": 1}, "States.A.Parameters.x.$: 1 is not a path"),
    ],
)
def test_bad_paths(field: str, value: Any, message: str) -> None:
    assert only_error(machine({"A": {**PASS, field: value}})).startswith(message)


def test_valid_path_syntaxes() -> None:
    paths = [
        "$",
        "$.a",
        "$.a.b",
        "$.a[0]",
        "$.a[*].b",
        "$['a b']",
        "$.detail.delivery-partner",
        "$.where",
        "$..x",
    ]
    for path in paths:
        parse_definition(machine({"A": {**PASS, "InputPath": path}}))
    parse_definition(machine({"A": {**PASS, "Parameters": {"id.$": "$$.Execution.Id"}}}))


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        ("nope", "States.T.Retry: must be an array of retriers"),
        ([{"ErrorEquals": []}], "States.T.Retry[0].ErrorEquals: must be a non-empty array of error names"),
        (
            [{"ErrorEquals": ["States.ALL", "X"]}],
            "States.T.Retry[0].ErrorEquals: States.ALL must appear alone",
        ),
        (
            [{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["X"]}],
            "States.T.Retry[0].ErrorEquals: States.ALL must appear alone, in the last element",
        ),
        (
            [{"ErrorEquals": ["X"], "MaxAttempts": -1}],
            "States.T.Retry[0].MaxAttempts: must be a non-negative integer",
        ),
        (
            [{"ErrorEquals": ["X"], "BackoffRate": 0.5}],
            "States.T.Retry[0].BackoffRate: must be a number >= 1.0",
        ),
        (
            [{"ErrorEquals": ["X"], "IntervalSeconds": 0}],
            "States.T.Retry[0].IntervalSeconds: must be a positive number",
        ),
        (
            [{"ErrorEquals": ["X"], "MaxDelaySeconds": 0}],
            "States.T.Retry[0].MaxDelaySeconds: must be a positive number",
        ),
        (
            [{"ErrorEquals": ["X"], "JitterStrategy": "SOME"}],
            "States.T.Retry[0].JitterStrategy: must be FULL or NONE",
        ),
        ([{"ErrorEquals": ["X"], "Backoff": 2}], "States.T.Retry[0]: unknown field 'Backoff' in a retrier"),
    ],
)
def test_bad_retriers(retry: Any, message: str) -> None:
    definition = machine({"T": {"Type": "Task", "Resource": "r", "End": True, "Retry": retry}})
    assert only_error(definition).startswith(message)


@pytest.mark.parametrize(
    ("catch", "message"),
    [
        ([{"ErrorEquals": ["X"]}], "States.T.Catch[0].Next: a catcher needs a Next state name"),
        ([{"ErrorEquals": ["X"], "Next": "Nowhere"}], "States.T: Next 'Nowhere' is not a state"),
        ([{"ErrorEquals": "X", "Next": "N"}], "States.T.Catch[0].ErrorEquals: must be a non-empty array"),
        (
            [{"ErrorEquals": ["X"], "Next": "N", "ResultPath": "x"}],
            "States.T.Catch[0].ResultPath: 'x' is not a path",
        ),
        ({"ErrorEquals": ["X"], "Next": "N"}, "States.T.Catch: must be an array of catchers"),
    ],
)
def test_bad_catchers(catch: Any, message: str) -> None:
    definition = machine({"T": {"Type": "Task", "Resource": "r", "End": True, "Catch": catch}, "N": PASS})
    errors = errors_of(definition)
    assert any(error.startswith(message) for error in errors), errors


def test_task_without_resource() -> None:
    assert only_error(machine({"T": {"Type": "Task", "End": True}})).startswith("States.T.Resource: missing")


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            {"Type": "Pass", "Resource": "r", "End": True},
            "States.A: unknown field 'Resource' for a Pass state",
        ),
        (
            {"Type": "Wait", "Seconds": 1, "Result": 1, "End": True},
            "States.A: unknown field 'Result' for a Wait state",
        ),
        ({"Type": "Fail", "InputPath": "$"}, "States.A: unknown field 'InputPath' for a Fail state"),
        (
            {"Type": "Task", "Resource": "r", "Assign": {}, "End": True},
            "States.A: variables ('Assign') are supported in JSONata states only here",
        ),
        (
            {"Type": "Task", "Resource": "r", "Arguments": {}, "End": True},
            "States.A: 'Arguments' is a JSONata field",
        ),
        (
            {"Type": "Pass", "QueryLanguage": "JSONata", "Result": 1, "End": True},
            "States.A: 'Result' is a JSONPath field; a JSONata state uses Arguments and Output",
        ),
        ({"Type": "Wait", "End": True}, "States.A: a Wait state needs exactly one of"),
        (
            {"Type": "Wait", "Seconds": 1, "SecondsPath": "$.s", "End": True},
            "States.A: a Wait state needs exactly one of",
        ),
        ({"Type": "Wait", "Timestamp": "soon", "End": True}, "States.A.Timestamp: must be a timestamp"),
        ({"Type": "Fail", "Error": "E", "ErrorPath": "$.e"}, "States.A: use Error or ErrorPath, not both"),
        (
            {"Type": "Task", "Resource": "r", "TimeoutSeconds": 0, "End": True},
            "States.A.TimeoutSeconds: must be a positive number",
        ),
    ],
)
def test_bad_state_fields(state: dict[str, Any], message: str) -> None:
    assert only_error(machine({"A": state})).startswith(message)


def test_unknown_top_level_field() -> None:
    assert (
        only_error({"StartAt": "A", "States": {"A": PASS}, "Timeout": 3})
        == "definition: unknown field 'Timeout'"
    )


def test_map_without_item_processor() -> None:
    definition = machine({"M": {"Type": "Map", "End": True}})
    assert only_error(definition) == "States.M: a Map state needs an ItemProcessor (or the legacy Iterator)"


def test_map_refuses_item_reader_and_both_selectors() -> None:
    processor = {"StartAt": "P", "States": {"P": PASS}}
    definition = machine(
        {
            "M": {
                "Type": "Map",
                "ItemProcessor": processor,
                "ItemReader": {},
                "ItemSelector": {},
                "Parameters": {},
                "End": True,
            }
        }
    )
    errors = errors_of(definition)
    assert any("'ItemReader' (Map runs over S3) is not supported" in e for e in errors)
    assert "States.M: use ItemSelector or the legacy Parameters, not both" in errors


def test_map_bad_max_concurrency() -> None:
    definition = machine(
        {
            "M": {
                "Type": "Map",
                "Iterator": {"StartAt": "P", "States": {"P": PASS}},
                "MaxConcurrency": -1,
                "End": True,
            }
        }
    )
    assert only_error(definition) == "States.M.MaxConcurrency: must be a non-negative integer (0 = no limit)"


def test_parallel_without_branches() -> None:
    definition = machine({"P": {"Type": "Parallel", "End": True}})
    assert only_error(definition) == "States.P.Branches: a Parallel state needs a non-empty array of Branches"


def test_branches_and_processors_are_validated_recursively() -> None:
    definition = machine(
        {
            "P": {
                "Type": "Parallel",
                "Branches": [{"StartAt": "B1", "States": {"B1": {"Type": "Pass", "Next": "Outside"}}}],
                "Next": "M",
            },
            "M": {
                "Type": "Map",
                "ItemProcessor": {"StartAt": "Nope", "States": {"I": {"Type": "Pass"}}},
                "End": True,
            },
            "Outside": PASS,
        }
    )
    errors = errors_of(definition)
    assert "States.P.Branches[0].States.B1: Next 'Outside' is not a state" in errors
    assert "States.M.ItemProcessor.StartAt: 'Nope' is not a state" in errors
    assert 'States.M.ItemProcessor.States.I: needs Next or "End": true' in errors
    assert "States.Outside: unreachable from StartAt 'P'" in errors


def test_state_names_are_unique_across_the_whole_machine() -> None:
    definition = machine(
        {"A": {"Type": "Parallel", "Branches": [{"StartAt": "A", "States": {"A": PASS}}], "End": True}}
    )
    assert (
        only_error(definition) == "States.A.Branches[0].States.A: state name 'A' is already used at States.A"
    )


def test_every_problem_is_reported_at_once() -> None:
    definition = {
        "StartAt": "Missing",
        "States": {
            "A": {"Type": "Pass", "Next": "X"},
            "B": {"Type": "Bogus"},
            "C": {"Type": "Task", "End": True, "InputPath": "nope"},
        },
    }
    errors = errors_of(definition)
    assert len(errors) >= 4
    assert "StartAt: 'Missing' is not a state" in errors
    assert "States.A: Next 'X' is not a state" in errors


def test_task_resources_include_branches_and_processors() -> None:
    definition = machine(
        {
            "T": {"Type": "Task", "Resource": "top", "Next": "P"},
            "P": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "B", "States": {"B": {"Type": "Task", "Resource": "branch", "End": True}}}
                ],
                "Next": "M",
            },
            "M": {
                "Type": "Map",
                "Iterator": {
                    "StartAt": "I",
                    "States": {"I": {"Type": "Task", "Resource": "item", "End": True}},
                },
                "End": True,
            },
        }
    )
    parsed = parse_definition(definition)
    assert parsed.task_resources() == {"top", "branch", "item"}
    assert isinstance(parsed.states["T"], TaskState)
    assert isinstance(parsed.states["P"], ParallelState)
    assert isinstance(parsed.states["M"], MapState)
