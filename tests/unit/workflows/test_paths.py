"""Unit tests of the JSONPath module and the fake clock.

Paths follow https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-paths.html
(reference paths name one node; other paths yield an array of matches).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from mlgate.workflows.clock import FakeClock, SystemClock
from mlgate.workflows.paths import PathNotFound, PathSyntaxError, compile_path

DATA = {"foo": 123, "bar": ["a", "b", "c"], "car": {"cdr": True}}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.foo", 123),
        ("$.bar", ["a", "b", "c"]),
        ("$.car.cdr", True),
        ("$", DATA),
        ("$.bar[1]", "b"),
        ("$.bar[-1]", "c"),
    ],
)
def test_reference_paths(path: str, expected: object) -> None:
    compiled = compile_path(path)
    assert compiled.is_reference
    assert compiled.find(DATA) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$.bar[*]", ["a", "b", "c"]),
        ("$.bar[0:2]", ["a", "b"]),
        ("$..cdr", [True]),
        ("$.items[?(@.n > 1)].n", [2, 3]),
        ("$.items[*].missing", []),
    ],
)
def test_other_paths_yield_an_array_of_matches(path: str, expected: object) -> None:
    compiled = compile_path(path)
    assert not compiled.is_reference
    assert compiled.find({**DATA, "items": [{"n": 1}, {"n": 2}, {"n": 3}]}) == expected


@pytest.mark.parametrize("path", ["$.nope", "$.foo.bar", "$.bar[3]", "$.bar.x", "$.car[0]"])
def test_a_reference_path_that_names_nothing_raises(path: str) -> None:
    with pytest.raises(PathNotFound, match="could not be found"):
        compile_path(path).find(DATA)


def test_null_values_are_found() -> None:
    assert compile_path("$.x").find({"x": None}) is None


def test_context_paths_read_the_context_object() -> None:
    path = compile_path("$$.Execution.Id")
    assert path.context and path.is_reference
    assert path.find({"Execution": "data"}, {"Execution": {"Id": "e-1"}}) == "e-1"
    assert compile_path("$$").find(1, {"all": True}) == {"all": True}


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("$.where", {"where": 1}),
        ("$.a.wherenot", {"a": {"wherenot": 1}}),
        ("$.caf\u00e9", {"caf\u00e9": 1}),
        ("$['with space']", {"with space": 1}),
        ("$.a-b", {"a-b": 1}),
    ],
)
def test_names_the_parser_reserves_or_refuses_still_work(path: str, data: object) -> None:
    assert compile_path(path).find(data) == 1


@pytest.mark.parametrize("text", ["", "a.b", "$.", "$a", "$.a[", "$$$", 5])
def test_syntax_errors(text: object) -> None:
    with pytest.raises(PathSyntaxError):
        compile_path(text)  # type: ignore[arg-type]


def test_assign_copies_only_the_objects_on_the_path() -> None:
    data = {"keep": {"big": "x" * 10}, "strings": {"a": 1}}
    result = compile_path("$.strings.b").assign(data, 2)
    assert result == {"keep": {"big": "x" * 10}, "strings": {"a": 1, "b": 2}}
    assert data == {"keep": {"big": "x" * 10}, "strings": {"a": 1}}
    assert result["keep"] is data["keep"]


def test_assign_creates_missing_objects_and_replaces_array_items() -> None:
    assert compile_path("$.a.b").assign({}, 1) == {"a": {"b": 1}}
    assert compile_path("$.l[0].x").assign({"l": [{"x": 0, "y": 1}]}, 5) == {"l": [{"x": 5, "y": 1}]}
    assert compile_path("$").assign({"old": 1}, "new") == "new"


@pytest.mark.parametrize(("path", "data"), [("$.a.b", {"a": "text"}), ("$.l[5]", {"l": []}), ("$.x", [1])])
def test_assign_into_something_that_is_not_an_object_raises(path: str, data: object) -> None:
    with pytest.raises(PathNotFound):
        compile_path(path).assign(data, 1)


def test_paths_are_compiled_once() -> None:
    assert compile_path("$.same.path") is compile_path("$.same.path")


def test_fake_clock_records_sleeps_and_moves_time() -> None:
    clock = FakeClock(datetime(2020, 5, 1, tzinfo=UTC))
    asyncio.run(clock.sleep(1.5))
    clock.advance(10)
    assert clock.sleeps == [1.5]
    assert clock.now() == datetime(2020, 5, 1, 0, 0, 11, 500000, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2020, 5, 1))


def test_system_clock_is_utc_real_time() -> None:
    clock = SystemClock()
    assert clock.now().tzinfo is UTC
    asyncio.run(clock.sleep(0))
