"""Conformance: Choice states and every choice-rule operator.

https://docs.aws.amazon.com/step-functions/latest/dg/state-choice.html (Choice state, choice
rules, the comparison operators and their ``...Path`` forms, ``StringMatches`` wildcards, the
``Is*`` tests, And/Or/Not and Default).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.workflows.support import execute, machine


def choose(rule: dict[str, Any], state_input: Any) -> bool:
    """Whether ``rule`` (without Next) matches ``state_input``."""
    definition = machine(
        {
            "C": {"Type": "Choice", "Choices": [{**rule, "Next": "Yes"}], "Default": "No"},
            "Yes": {"Type": "Pass", "Result": True, "End": True},
            "No": {"Type": "Pass", "Result": False, "End": True},
        }
    )
    run = execute(definition, state_input)
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    return bool(run.output)


# The Choice state example of the guide.
CHOICE_STATE_X = machine(
    {
        "ChoiceStateX": {
            "Type": "Choice",
            "Choices": [
                {"Not": {"Variable": "$.type", "StringEquals": "Private"}, "Next": "Public"},
                {"Variable": "$.value", "NumericEquals": 0, "Next": "ValueIsZero"},
                {
                    "And": [
                        {"Variable": "$.value", "NumericGreaterThanEquals": 20},
                        {"Variable": "$.value", "NumericLessThan": 30},
                    ],
                    "Next": "ValueInTwenties",
                },
            ],
            "Default": "DefaultState",
        },
        "Public": {"Type": "Pass", "Result": "Public", "End": True},
        "ValueIsZero": {"Type": "Pass", "Result": "ValueIsZero", "End": True},
        "ValueInTwenties": {"Type": "Pass", "Result": "ValueInTwenties", "End": True},
        "DefaultState": {"Type": "Fail", "Cause": "No Matches!"},
    }
)


@pytest.mark.parametrize(
    ("state_input", "expected"),
    [
        ({"type": "Private", "value": 22}, "ValueInTwenties"),
        ({"type": "Public", "value": 22}, "Public"),
        ({"type": "Private", "value": 0}, "ValueIsZero"),
    ],
)
def test_choice_state_example(state_input: dict[str, Any], expected: str) -> None:
    run = execute(CHOICE_STATE_X, state_input)
    assert run.output == expected


def test_choice_state_example_default_is_a_fail_state() -> None:
    run = execute(CHOICE_STATE_X, {"type": "Private", "value": 50})
    assert (run.status, run.error, run.cause) == ("FAILED", None, "No Matches!")


def test_a_missing_variable_fails_the_execution_with_states_runtime() -> None:
    run = execute(CHOICE_STATE_X, {"value": 22})
    assert (run.status, run.error) == ("FAILED", "States.Runtime")


def test_no_match_without_default_is_states_no_choice_matched() -> None:
    definition = machine(
        {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": 1, "Next": "Done"}]},
            "Done": {"Type": "Succeed"},
        }
    )
    run = execute(definition, {"x": 2})
    assert (run.status, run.error) == ("FAILED", "States.NoChoiceMatched")


def test_choice_output_is_its_input_filtered_by_input_and_output_path() -> None:
    definition = machine(
        {
            "C": {
                "Type": "Choice",
                "InputPath": "$.payload",
                "OutputPath": "$.keep",
                "Choices": [{"Variable": "$.n", "NumericEquals": 1, "Next": "Done"}],
            },
            "Done": {"Type": "Succeed"},
        }
    )
    assert execute(definition, {"payload": {"n": 1, "keep": "me"}, "other": 0}).output == "me"


def test_rules_are_examined_in_order_first_match_wins() -> None:
    definition = machine(
        {
            "C": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.n", "NumericGreaterThan": 0, "Next": "First"},
                    {"Variable": "$.n", "NumericGreaterThan": 5, "Next": "Second"},
                ],
            },
            "First": {"Type": "Pass", "Result": 1, "End": True},
            "Second": {"Type": "Pass", "Result": 2, "End": True},
        }
    )
    assert execute(definition, {"n": 9}).output == 1


# The guide's examples of single rules, and every operator with a matching and a failing value.
COMPARISONS = [
    ({"Variable": "$.foo", "NumericEquals": 1}, {"foo": 1}, True),
    ({"Variable": "$.foo", "NumericEquals": 1}, {"foo": 1.0}, True),
    ({"Variable": "$.foo", "NumericEquals": 1}, {"foo": 2}, False),
    ({"Variable": "$.foo", "NumericEquals": 1}, {"foo": "1"}, False),  # never a number against a string
    ({"Variable": "$.foo", "NumericEquals": 1}, {"foo": True}, False),
    ({"Variable": "$.foo", "NumericLessThan": 1}, {"foo": 0.5}, True),
    ({"Variable": "$.foo", "NumericLessThan": 1}, {"foo": 1}, False),
    ({"Variable": "$.foo", "NumericGreaterThan": 1}, {"foo": 2}, True),
    ({"Variable": "$.foo", "NumericGreaterThan": 1}, {"foo": 1}, False),
    ({"Variable": "$.foo", "NumericLessThanEquals": 1}, {"foo": 1}, True),
    ({"Variable": "$.foo", "NumericLessThanEquals": 1}, {"foo": 2}, False),
    ({"Variable": "$.foo", "NumericGreaterThanEquals": 1}, {"foo": 1}, True),
    ({"Variable": "$.foo", "NumericGreaterThanEquals": 1}, {"foo": 0}, False),
    ({"Variable": "$.foo", "StringEquals": "MyString"}, {"foo": "MyString"}, True),
    ({"Variable": "$.foo", "StringEquals": "MyString"}, {"foo": "mystring"}, False),
    ({"Variable": "$.foo", "StringEquals": "1"}, {"foo": 1}, False),
    ({"Variable": "$.foo", "StringGreaterThan": "MyStringABC"}, {"foo": "MyStringABD"}, True),
    ({"Variable": "$.foo", "StringGreaterThan": "MyStringABC"}, {"foo": "MyStringAB"}, False),
    ({"Variable": "$.foo", "StringLessThan": "b"}, {"foo": "a"}, True),
    ({"Variable": "$.foo", "StringLessThan": "b"}, {"foo": "b"}, False),
    ({"Variable": "$.foo", "StringLessThanEquals": "b"}, {"foo": "b"}, True),
    ({"Variable": "$.foo", "StringGreaterThanEquals": "b"}, {"foo": "a"}, False),
    # Java's compareTo compares UTF-16 code units: U+FF61 sorts after U+1F600 (a surrogate pair)
    ({"Variable": "$.foo", "StringGreaterThan": "\U0001f600"}, {"foo": "\uff61"}, True),
    ({"Variable": "$.foo", "BooleanEquals": True}, {"foo": True}, True),
    ({"Variable": "$.foo", "BooleanEquals": True}, {"foo": 1}, False),
    ({"Variable": "$.foo", "TimestampEquals": "2001-01-01T12:00:00Z"}, {"foo": "2001-01-01T12:00:00Z"}, True),
    (
        {"Variable": "$.foo", "TimestampEquals": "2001-01-01T12:00:00Z"},
        {"foo": "2001-01-01T13:00:00+01:00"},
        True,
    ),
    (
        {"Variable": "$.foo", "TimestampEquals": "2001-01-01T12:00:00Z"},
        {"foo": "2001-01-01T12:00:01Z"},
        False,
    ),
    ({"Variable": "$.foo", "TimestampEquals": "2001-01-01T12:00:00Z"}, {"foo": "not a time"}, False),
    (
        {"Variable": "$.foo", "TimestampLessThan": "2016-08-18T17:33:00Z"},
        {"foo": "2016-08-18T17:32:59.5Z"},
        True,
    ),
    (
        {"Variable": "$.foo", "TimestampGreaterThan": "2016-08-18T17:33:00Z"},
        {"foo": "2016-08-18T17:33:00Z"},
        False,
    ),
    (
        {"Variable": "$.foo", "TimestampLessThanEquals": "2016-08-18T17:33:00Z"},
        {"foo": "2016-08-18T17:33:00Z"},
        True,
    ),
    (
        {"Variable": "$.foo", "TimestampGreaterThanEquals": "2016-08-18T17:33:00Z"},
        {"foo": "2017-01-01T00:00:00Z"},
        True,
    ),
    # a timestamp is a string too
    ({"Variable": "$.foo", "StringEquals": "2001-01-01T12:00:00Z"}, {"foo": "2001-01-01T12:00:00Z"}, True),
]


@pytest.mark.parametrize(("rule", "state_input", "expected"), COMPARISONS)
def test_comparison_operators(rule: dict[str, Any], state_input: Any, expected: bool) -> None:
    assert choose(rule, state_input) is expected


PATH_COMPARISONS = [
    ({"Variable": "$.a", "NumericEqualsPath": "$.b"}, {"a": 3, "b": 3}, True),
    ({"Variable": "$.a", "NumericLessThanPath": "$.b"}, {"a": 3, "b": 4}, True),
    ({"Variable": "$.a", "NumericGreaterThanPath": "$.b"}, {"a": 3, "b": 4}, False),
    ({"Variable": "$.a", "NumericLessThanEqualsPath": "$.b"}, {"a": 4, "b": 4}, True),
    ({"Variable": "$.a", "NumericGreaterThanEqualsPath": "$.b"}, {"a": 3, "b": 4}, False),
    ({"Variable": "$.a", "StringEqualsPath": "$.b"}, {"a": "x", "b": "x"}, True),
    ({"Variable": "$.a", "StringLessThanPath": "$.b"}, {"a": "x", "b": "y"}, True),
    ({"Variable": "$.a", "StringGreaterThanPath": "$.b"}, {"a": "x", "b": "y"}, False),
    ({"Variable": "$.a", "StringLessThanEqualsPath": "$.b"}, {"a": "y", "b": "y"}, True),
    ({"Variable": "$.a", "StringGreaterThanEqualsPath": "$.b"}, {"a": "z", "b": "y"}, True),
    ({"Variable": "$.a", "BooleanEqualsPath": "$.b"}, {"a": False, "b": False}, True),
    (
        {"Variable": "$.a", "TimestampEqualsPath": "$.b"},
        {"a": "2020-01-01T00:00:00Z", "b": "2020-01-01T00:00:00Z"},
        True,
    ),
    (
        {"Variable": "$.a", "TimestampLessThanPath": "$.b"},
        {"a": "2020-01-01T00:00:00Z", "b": "2021-01-01T00:00:00Z"},
        True,
    ),
    (
        {"Variable": "$.a", "TimestampGreaterThanPath": "$.b"},
        {"a": "2020-01-01T00:00:00Z", "b": "2021-01-01T00:00:00Z"},
        False,
    ),
    (
        {"Variable": "$.a", "TimestampLessThanEqualsPath": "$.b"},
        {"a": "2021-01-01T00:00:00Z", "b": "2021-01-01T00:00:00Z"},
        True,
    ),
    (
        {"Variable": "$.a", "TimestampGreaterThanEqualsPath": "$.b"},
        {"a": "2020-01-01T00:00:00Z", "b": "2021-01-01T00:00:00Z"},
        False,
    ),
    ({"Variable": "$.a", "NumericEqualsPath": "$.b"}, {"a": 3, "b": "3"}, False),
    ({"Variable": "$.a", "NumericLessThanPath": "$$.State.RetryCount"}, {"a": -1}, True),
]


@pytest.mark.parametrize(("rule", "state_input", "expected"), PATH_COMPARISONS)
def test_path_comparison_operators(rule: dict[str, Any], state_input: Any, expected: bool) -> None:
    assert choose(rule, state_input) is expected


def test_a_path_operand_that_is_missing_is_a_runtime_error() -> None:
    definition = machine(
        {
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.a", "NumericEqualsPath": "$.b", "Next": "D"}],
            },
            "D": {"Type": "Succeed"},
        }
    )
    assert execute(definition, {"a": 1}).error == "States.Runtime"


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("log-*.txt", "log-2021-05-01.txt", True),
        ("log-*.txt", "log-.txt", True),
        ("log-*.txt", "log-2021.csv", False),
        ("*", "", True),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "acb", False),
        ("literal\\*star", "literal*star", True),
        ("literal\\*star", "literalXstar", False),
        ("back\\\\slash*", "back\\slash and more", True),
        ("dot.plus+", "dot.plus+", True),
        ("dot.plus+", "dotXplus", False),
    ],
)
def test_string_matches_wildcards_and_escapes(pattern: str, value: str, expected: bool) -> None:
    assert choose({"Variable": "$.v", "StringMatches": pattern}, {"v": value}) is expected


def test_string_matches_a_number_is_false() -> None:
    assert choose({"Variable": "$.v", "StringMatches": "*"}, {"v": 1}) is False


TESTS = [
    ("IsPresent", True, {"v": None}, True),
    ("IsPresent", True, {}, False),
    ("IsPresent", False, {}, True),
    ("IsPresent", False, {"v": 1}, False),
    ("IsNull", True, {"v": None}, True),
    ("IsNull", True, {"v": 0}, False),
    ("IsNull", False, {"v": 0}, True),
    ("IsNumeric", True, {"v": 1.5}, True),
    ("IsNumeric", True, {"v": "1.5"}, False),
    ("IsNumeric", True, {"v": False}, False),
    ("IsNumeric", False, {"v": "x"}, True),
    ("IsString", True, {"v": "x"}, True),
    ("IsString", True, {"v": 1}, False),
    ("IsBoolean", True, {"v": False}, True),
    ("IsBoolean", True, {"v": 0}, False),
    ("IsTimestamp", True, {"v": "2016-08-18T17:33:00Z"}, True),
    ("IsTimestamp", True, {"v": "2016-08-18T17:33:00.123+02:00"}, True),
    ("IsTimestamp", True, {"v": "2016-08-18 17:33:00"}, False),
    ("IsTimestamp", True, {"v": "2016-08-18t17:33:00z"}, False),
    ("IsTimestamp", False, {"v": 12}, True),
]


@pytest.mark.parametrize(("operator", "value", "state_input", "expected"), TESTS)
def test_type_tests(operator: str, value: bool, state_input: Any, expected: bool) -> None:
    assert choose({"Variable": "$.v", operator: value}, state_input) is expected


def test_type_tests_other_than_is_present_need_the_variable() -> None:
    definition = machine(
        {
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.v", "IsNull": True, "Next": "D"}],
                "Default": "D",
            },
            "D": {"Type": "Succeed"},
        }
    )
    assert execute(definition, {}).error == "States.Runtime"


def test_and_or_not_nest() -> None:
    rule = {
        "Or": [
            {
                "And": [
                    {"Variable": "$.a", "IsPresent": True},
                    {"Not": {"Variable": "$.a", "NumericEquals": 0}},
                ]
            },
            {"Variable": "$.b", "BooleanEquals": True},
        ]
    }
    assert choose(rule, {"a": 1, "b": False}) is True
    assert choose(rule, {"a": 0, "b": False}) is False
    assert choose(rule, {"b": True}) is True
    assert choose(rule, {"b": False}) is False


def test_and_short_circuits_so_is_present_guards_a_comparison() -> None:
    rule = {"And": [{"Variable": "$.a", "IsPresent": True}, {"Variable": "$.a", "NumericEquals": 1}]}
    assert choose(rule, {}) is False
