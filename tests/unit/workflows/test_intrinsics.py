"""Conformance: intrinsic functions, from the examples of
https://docs.aws.amazon.com/step-functions/latest/dg/intrinsic-functions.html
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from mlgate.errors import InvalidInput
from mlgate.workflows.spec import parse_definition
from tests.unit.workflows.support import execute, single


def evaluate(expression: str, state_input: Any = None) -> Any:
    """Run ``{"value.$": expression}`` as a Pass state's Parameters and return the value."""
    run = execute(single({"Type": "Pass", "Parameters": {"value.$": expression}}), state_input or {})
    assert run.status == "SUCCEEDED", (run.error, run.cause)
    return run.output["value"]


def failure(expression: str, state_input: Any = None) -> tuple[str | None, str | None]:
    run = execute(single({"Type": "Pass", "Parameters": {"value.$": expression}}), state_input or {})
    assert run.status == "FAILED"
    return run.error, run.cause


NUMBERS = {"inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9]}

DOC_EXAMPLES = [
    # Intrinsics for arrays
    ("States.Array($.Id)", {"Id": 123456}, [123456]),
    ("States.ArrayPartition($.inputArray,4)", NUMBERS, [[1, 2, 3, 4], [5, 6, 7, 8], [9]]),
    ("States.ArrayContains($.inputArray, $.lookingFor)", {**NUMBERS, "lookingFor": 5}, True),
    ("States.ArrayRange(1, 9, 2)", {}, [1, 3, 5, 7, 9]),
    ("States.ArrayGetItem($.inputArray, $.index)", {**NUMBERS, "index": 5}, 6),
    ("States.ArrayLength($.inputArray)", NUMBERS, 9),
    ("States.ArrayUnique($.inputArray)", {"inputArray": [1, 2, 3, 3, 3, 3, 3, 3, 4]}, [1, 2, 3, 4]),
    # Intrinsics for data encoding and decoding
    ("States.Base64Encode($.input)", {"input": "Data to encode"}, "RGF0YSB0byBlbmNvZGU="),
    ("States.Base64Decode($.base64)", {"base64": "RGF0YSB0byBlbmNvZGU="}, "Data to encode"),
    # Intrinsic for hash calculation
    (
        "States.Hash($.Data, $.Algorithm)",
        {"Data": "input data", "Algorithm": "SHA-1"},
        "aaff4a450a104cd177d28d18d74485e8cae074b7",
    ),
    # Intrinsics for JSON data manipulation
    (
        "States.JsonMerge($.json1, $.json2, false)",
        {"json1": {"a": {"a1": 1, "a2": 2}, "b": 2}, "json2": {"a": {"a3": 1, "a4": 2}, "c": 3}},
        {"a": {"a3": 1, "a4": 2}, "b": 2, "c": 3},
    ),
    ("States.StringToJson($.escapedJsonString)", {"escapedJsonString": '{"foo": "bar"}'}, {"foo": "bar"}),
    ("States.JsonToString($.unescapedJson)", {"unescapedJson": {"foo": "bar"}}, '{"foo":"bar"}'),
    # Intrinsics for math operations
    ("States.MathAdd($.value1, $.step)", {"value1": 111, "step": -1}, 110),
    # Intrinsic for string operations
    (
        "States.StringSplit($.inputString, $.splitter)",
        {"inputString": "1,2,3,4,5", "splitter": ","},
        list("12345"),
    ),
    (
        "States.StringSplit($.inputString, $.splitter)",
        {"inputString": "This.is+a,test=string", "splitter": ".+,="},
        ["This", "is", "a", "test", "string"],
    ),
    # Intrinsics for generic operations
    ("States.Format('Hello, my name is {}.', $.name)", {"name": "Arnav"}, "Hello, my name is Arnav."),
    (
        "States.Format($.template, $.name)",
        {"name": "Arnav", "template": "Hello, my name is {}."},
        "Hello, my name is Arnav.",
    ),
]


@pytest.mark.parametrize(("expression", "state_input", "expected"), DOC_EXAMPLES)
def test_documented_examples(expression: str, state_input: Any, expected: Any) -> None:
    assert evaluate(expression, state_input) == expected


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        ("MD5", "812f45842bc6d66ee14572ce20db8e86"),
        ("SHA-256", "b4a697a057313163aee33cd8d40c66e9f0f177e00cac2de32475ffff6169c3e3"),
        (
            "SHA-384",
            "d28a7d5cf25a74f11a50a18452b75e04bb3d70c9dd0510d6123aa008c756511b87525bdc835ebb27e1fb9e9374a15562",
        ),
        (
            "SHA-512",
            "6ce4adb348546d4f449c4d25aad9a7c9cb711d9e91982d3f0b29ca2f3f47d4ce"
            "2deba23bf2954f0f1d593fc50283731a533d30d425402d4f91316d871303aac4",
        ),
    ],
)
def test_hash_algorithms(algorithm: str, digest: str) -> None:
    assert evaluate(f"States.Hash($.d, '{algorithm}')", {"d": "input data"}) == digest


def test_array_of_literals_and_nested_calls() -> None:
    assert evaluate("States.Array('a', 1, 2.5, true, false, null, States.Array())") == [
        "a",
        1,
        2.5,
        True,
        False,
        None,
        [],
    ]


def test_nested_intrinsics_with_paths() -> None:
    # From the guide: nested calls pull the parts of a version out of an ARN (9 deep in all).
    split = "States.StringSplit(States.ArrayGetItem(States.StringSplit($.ImageRecipe.Arn, '/'), 2), '.')"
    parts = ", ".join(f"States.ArrayGetItem({split}, {i})" for i in range(3))
    expression = f"States.Format('{{}}.{{}}.{{}}', {parts})"
    state_input = {
        "ImageRecipe": {"Arn": "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/recipe/1.0.0"}
    }
    assert evaluate(expression, state_input) == "1.0.0"


def test_format_escapes_reserved_characters() -> None:
    # In JSON, \\' is ', \\{ is {, \\} is } and \\\\ is a backslash.
    assert evaluate("States.Format('It\\'s \\{literal\\} {} \\\\ done', $.x)", {"x": "here"}) == (
        "It's {literal} here \\ done"
    )


def test_format_renders_numbers_booleans_null_and_json() -> None:
    rendered = evaluate("States.Format('{} {} {} {} {}', 1, 2.5, true, null, $.obj)", {"obj": {"a": [1]}})
    assert rendered == '1 2.5 true null {"a":[1]}'


def test_format_with_the_context_object() -> None:
    assert evaluate("States.Format('state {}', $$.State.Name)") == "state S"


def test_uuid_is_a_random_version_4_uuid() -> None:
    first, second = evaluate("States.UUID()"), evaluate("States.UUID()")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first)
    assert first != second


def test_math_random_is_within_the_range_and_repeatable_with_a_seed() -> None:
    assert 1 <= evaluate("States.MathRandom($.start, $.end)", {"start": 1, "end": 999}) <= 999
    seeded = "States.MathRandom(1, 1000, 1234)"
    assert evaluate(seeded) == evaluate(seeded)


def test_math_add_rounds_non_integers() -> None:
    assert evaluate("States.MathAdd(1.5, 1)") == 3


def test_array_range_descending_and_limit() -> None:
    assert evaluate("States.ArrayRange(5, 1, -2)") == [5, 3, 1]
    assert failure("States.ArrayRange(1, 2000, 1)")[0] == "States.IntrinsicFailure"


def test_array_unique_and_contains_use_json_equality() -> None:
    assert evaluate("States.ArrayUnique($.a)", {"a": [1, 1.0, True, {"k": 1}, {"k": 1}]}) == [
        1,
        True,
        {"k": 1},
    ]
    assert evaluate("States.ArrayContains($.a, 1)", {"a": [True]}) is False


def test_a_path_argument_can_select_several_values() -> None:
    assert evaluate("States.ArrayLength($.items[*].id)", {"items": [{"id": 1}, {"id": 2}]}) == 2


def test_intrinsics_work_in_result_selector() -> None:
    definition = single(
        {"Type": "Task", "Resource": "fn", "ResultSelector": {"b64.$": "States.Base64Encode($.text)"}}
    )
    assert execute(definition, {"text": "Data to encode"}).output == {"b64": "RGF0YSB0byBlbmNvZGU="}


@pytest.mark.parametrize(
    ("expression", "state_input"),
    [
        ("States.ArrayGetItem($.a, 5)", {"a": [1]}),
        ("States.ArrayLength($.a)", {"a": "not an array"}),
        ("States.ArrayPartition($.a, 0)", {"a": [1]}),
        ("States.Base64Decode($.s)", {"s": "***"}),
        ("States.StringToJson($.s)", {"s": "{not json"}),
        ("States.Hash($.s, 'CRC32')", {"s": "x"}),
        ("States.JsonMerge($.a, $.b, true)", {"a": {}, "b": {}}),
        ("States.Format($.t, 1)", {"t": "no placeholder"}),
        ("States.MathAdd($.a, 1)", {"a": "one"}),
        ("States.Array($.missing)", {}),
    ],
)
def test_runtime_failures_are_states_intrinsic_failure(expression: str, state_input: Any) -> None:
    error, cause = failure(expression, state_input)
    assert error == "States.IntrinsicFailure"
    assert cause


@pytest.mark.parametrize(
    "expression",
    [
        "States.Nope($.a)",
        "States.Format('{} {}', $.a)",
        "States.ArrayLength()",
        "States.Format('open \\x escape')",
        "States.Array('unterminated)",
        "States.Array($.a",
        "States.Array(nonsense)",
        "States.Array(" * 11 + ")" * 11,
    ],
)
def test_malformed_intrinsics_are_definition_errors(expression: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_definition(single({"Type": "Pass", "Parameters": {"v.$": expression}}))
    [message] = caught.value.details["errors"]
    assert message.startswith("States.S.Parameters.v.$: ")
