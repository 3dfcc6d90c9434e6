"""Conformance: Parallel and Map states.

https://docs.aws.amazon.com/step-functions/latest/dg/state-parallel.html and
https://docs.aws.amazon.com/step-functions/latest/dg/state-map-inline.html (ItemsPath,
ItemSelector / legacy Parameters, ItemProcessor / legacy Iterator, MaxConcurrency).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mlgate.workflows.engine import TaskFailure
from tests.unit.workflows.support import Tasks, execute, machine, single, task

# -- Parallel -----------------------------------------------------------------------------------------


def _branch(name: str, state: dict[str, Any]) -> dict[str, Any]:
    terminal = state["Type"] in ("Fail", "Succeed")
    return {"StartAt": name, "States": {name: state if terminal else {**state, "End": True}}}


FUN_WITH_MATH = {
    "Comment": "Parallel Example.",
    "StartAt": "FunWithMath",
    "States": {
        "FunWithMath": {
            "Type": "Parallel",
            "End": True,
            "Branches": [
                _branch("Add", task("arn:aws:swf:us-east-1:123456789012:task:Add")),
                _branch("Subtract", task("arn:aws:swf:us-east-1:123456789012:task:Subtract")),
            ],
        }
    },
}
MATH = Tasks(
    {
        "arn:aws:swf:us-east-1:123456789012:task:Add": lambda pair: pair[0] + pair[1],
        "arn:aws:swf:us-east-1:123456789012:task:Subtract": lambda pair: pair[0] - pair[1],
    }
)


def test_parallel_output_is_the_array_of_branch_outputs() -> None:
    run = execute(FUN_WITH_MATH, [3, 2], tasks=MATH)
    assert run.output == [5, 1]
    assert [call.input for call in MATH.calls[-2:]] == [[3, 2], [3, 2]]


def test_parallel_branches_run_concurrently() -> None:
    both_started = asyncio.Event()
    started: list[str] = []

    async def meet(name: str) -> str:
        started.append(name)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 1)
        return name

    definition = single(
        {
            "Type": "Parallel",
            "Branches": [_branch("LookupAddress", task("address")), _branch("LookupPhone", task("phone"))],
        },
        "LookupCustomerInfo",
    )
    tasks = Tasks({"address": lambda _: meet("address"), "phone": lambda _: meet("phone")})
    assert execute(definition, tasks=tasks).output == ["address", "phone"]


def test_parallel_input_path_parameters_resultpath_and_outputpath() -> None:
    definition = single(
        {
            "Type": "Parallel",
            "InputPath": "$.in",
            "Parameters": {"v.$": "$.v"},
            "Branches": [_branch("A", {"Type": "Pass"}), _branch("B", {"Type": "Pass", "Result": "b"})],
            "ResultPath": "$.results",
            "OutputPath": "$.results",
        }
    )
    assert execute(definition, {"in": {"v": 1}}).output == [{"v": 1}, "b"]


def test_a_failing_branch_fails_the_parallel_state_with_its_error_and_stops_the_others() -> None:
    definition = single(
        {
            "Type": "Parallel",
            "Branches": [
                _branch("Slow", task("slow")),
                _branch("Boom", {"Type": "Fail", "Error": "BranchError", "Cause": "bad"}),
            ],
        },
        "P",
    )
    run = execute(definition, tasks=Tasks({"slow": lambda _: asyncio.sleep(10)}))
    assert (run.status, run.error, run.cause) == ("FAILED", "BranchError", "bad")
    assert "ParallelBranchAborted" in run.types()
    assert run.types()[-2:] == ["ParallelStateFailed", "ExecutionFailed"]


@pytest.mark.parametrize("name", ["BranchError", "States.BranchFailed", "States.ALL"])
def test_a_branch_failure_is_caught_by_name_or_as_branch_failed(name: str) -> None:
    definition = machine(
        {
            "P": {
                "Type": "Parallel",
                "Branches": [_branch("Boom", {"Type": "Fail", "Error": "BranchError", "Cause": "bad"})],
                "Catch": [{"ErrorEquals": [name], "ResultPath": "$.error", "Next": "Recovered"}],
                "End": True,
            },
            "Recovered": {"Type": "Pass", "End": True},
        }
    )
    assert execute(definition, {"a": 1}).output == {"a": 1, "error": {"Error": "BranchError", "Cause": "bad"}}


def test_a_task_error_is_not_a_branch_failure() -> None:
    definition = machine(
        {
            "T": task(Catch=[{"ErrorEquals": ["States.BranchFailed"], "Next": "N"}], End=True),
            "N": {"Type": "Pass", "End": True},
        }
    )
    assert execute(definition, tasks=Tasks({"fn": TaskFailure("E")})).error == "E"


def test_parallel_retry_reruns_every_branch() -> None:
    definition = single(
        {
            "Type": "Parallel",
            "Branches": [_branch("Ok", task("ok")), _branch("Flaky", task("flaky"))],
            "Retry": [{"ErrorEquals": ["Flaky"], "MaxAttempts": 1}],
        }
    )
    tasks = Tasks({"ok": "fine", "flaky": [TaskFailure("Flaky"), "recovered"]})
    run = execute(definition, tasks=tasks)
    assert (run.output, run.clock.sleeps, len(tasks.inputs("ok"))) == (["fine", "recovered"], [1], 2)


def test_branches_are_self_contained_state_machines_with_several_states() -> None:
    definition = single(
        {
            "Type": "Parallel",
            "Branches": [
                {
                    "StartAt": "One",
                    "States": {
                        "One": {"Type": "Pass", "Result": 1, "ResultPath": "$.one", "Next": "Two"},
                        "Two": {"Type": "Pass", "Result": 2, "ResultPath": "$.two", "End": True},
                    },
                }
            ],
        }
    )
    assert execute(definition, {}).output == [{"one": 1, "two": 2}]


# -- Map ------------------------------------------------------------------------------------------------

SHIPMENT = {
    "ship-date": "2016-03-14T01:59:00Z",
    "detail": {
        "delivery-partner": "UQS",
        "shipped": [
            {"prod": "R31", "dest-code": 9511, "quantity": 1344},
            {"prod": "S39", "dest-code": 9511, "quantity": 40},
            {"prod": "R31", "dest-code": 9833, "quantity": 12},
            {"prod": "R40", "dest-code": 9860, "quantity": 887},
            {"prod": "R40", "dest-code": 9511, "quantity": 1220},
        ],
    },
}
SHIP_VAL = "arn:aws:lambda:us-east-1:123456789012:function:ship-val"


def _validate_all(**fields: Any) -> dict[str, Any]:
    state = {
        "Type": "Map",
        "InputPath": "$.detail",
        "ItemsPath": "$.shipped",
        "MaxConcurrency": 0,
        "Iterator": {"StartAt": "Validate", "States": {"Validate": {**task(SHIP_VAL), "End": True}}},
        "ResultPath": "$.detail.shipped",
        "End": True,
    }
    state.update(fields)
    return machine({"Validate-All": state})


def test_map_runs_the_iterator_once_per_item_and_collects_the_outputs() -> None:
    tasks = Tasks({SHIP_VAL: lambda item: {"prod": item["prod"], "valid": item["quantity"] < 1000}})
    run = execute(_validate_all(), SHIPMENT, tasks=tasks)
    assert tasks.inputs(SHIP_VAL)[0] == {"prod": "R31", "dest-code": 9511, "quantity": 1344}
    assert run.output == {
        "ship-date": "2016-03-14T01:59:00Z",
        "detail": {
            "delivery-partner": "UQS",
            "shipped": [
                {"prod": "R31", "valid": False},
                {"prod": "S39", "valid": True},
                {"prod": "R31", "valid": True},
                {"prod": "R40", "valid": True},
                {"prod": "R40", "valid": False},
            ],
        },
    }


def test_map_parameters_combine_the_item_and_the_map_input() -> None:
    tasks = Tasks({SHIP_VAL: "ok"})
    execute(
        _validate_all(Parameters={"parcel.$": "$$.Map.Item.Value", "courier.$": "$.delivery-partner"}),
        SHIPMENT,
        tasks=tasks,
    )
    assert tasks.inputs(SHIP_VAL)[0] == {
        "parcel": {"prod": "R31", "dest-code": 9511, "quantity": 1344},
        "courier": "UQS",
    }


def test_item_selector_and_item_processor_are_the_current_names() -> None:
    definition = single(
        {
            "Type": "Map",
            "ItemsPath": "$.shipped",
            "ItemSelector": {
                "parcel.$": "$$.Map.Item.Value",
                "index.$": "$$.Map.Item.Index",
                "courier.$": "$.partner",
            },
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "Validate",
                "States": {"Validate": {"Type": "Pass", "End": True}},
            },
        }
    )
    run = execute(definition, {"partner": "UQS", "shipped": ["a", "b"]})
    assert run.output == [
        {"parcel": "a", "index": 0, "courier": "UQS"},
        {"parcel": "b", "index": 1, "courier": "UQS"},
    ]


def test_map_result_selector() -> None:
    definition = single(
        {
            "Type": "Map",
            "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
            "ResultSelector": {"count.$": "States.ArrayLength($)", "items.$": "$"},
        }
    )
    assert execute(definition, [1, 2, 3]).output == {"count": 3, "items": [1, 2, 3]}


def test_map_over_an_empty_array_outputs_an_empty_array() -> None:
    assert execute(_validate_all(), {"detail": {"shipped": []}}).output == {"detail": {"shipped": []}}


def test_items_path_must_select_an_array() -> None:
    run = execute(_validate_all(), {"detail": {"shipped": {"not": "an array"}}})
    assert (run.status, run.error) == ("FAILED", "States.Runtime")


def _counting(delay: float = 0.002) -> tuple[Tasks, dict[str, int]]:
    stats = {"now": 0, "peak": 0}

    async def work(item: Any) -> Any:
        stats["now"] += 1
        stats["peak"] = max(stats["peak"], stats["now"])
        await asyncio.sleep(delay)
        stats["now"] -= 1
        return item

    return Tasks({"work": work}), stats


def _map_of(limit: int | None, **fields: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "Type": "Map",
        "ItemProcessor": {"StartAt": "W", "States": {"W": {**task("work"), "End": True}}},
        **fields,
    }
    if limit is not None:
        state["MaxConcurrency"] = limit
    return single(state)


@pytest.mark.parametrize(("limit", "peak"), [(1, 1), (2, 2), (3, 3), (0, 8), (None, 8)])
def test_max_concurrency_bounds_the_iterations_running_at_once(limit: int | None, peak: int) -> None:
    tasks, stats = _counting()
    run = execute(_map_of(limit), list(range(8)), tasks=tasks)
    assert run.output == list(range(8))
    assert stats["peak"] == peak


def test_max_concurrency_1_runs_the_items_in_order() -> None:
    tasks, _ = _counting()
    execute(_map_of(1), list(range(5)), tasks=tasks)
    assert tasks.inputs("work") == [0, 1, 2, 3, 4]


def test_max_concurrency_path() -> None:
    tasks, stats = _counting()
    execute(
        _map_of(None, ItemsPath="$.items", MaxConcurrencyPath="$.limit"),
        {"items": list(range(6)), "limit": 2},
        tasks=tasks,
    )
    assert stats["peak"] == 2


def test_a_failing_iteration_fails_the_map_with_its_error() -> None:
    tasks = Tasks(
        {"work": lambda item: (_ for _ in ()).throw(TaskFailure("BadItem", str(item))) if item == 3 else item}
    )
    run = execute(_map_of(2), list(range(6)), tasks=tasks)
    assert (run.status, run.error, run.cause) == ("FAILED", "BadItem", "3")
    assert "MapIterationFailed" in run.types()
    assert run.types()[-2:] == ["MapStateFailed", "ExecutionFailed"]


def test_a_failing_iteration_is_caught_on_the_map_state() -> None:
    definition = machine(
        {
            "M": {
                "Type": "Map",
                "ItemProcessor": {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Nope"}}},
                "Catch": [{"ErrorEquals": ["States.BranchFailed"], "Next": "Done"}],
                "End": True,
            },
            "Done": {"Type": "Pass", "End": True},
        }
    )
    assert execute(definition, [1]).output == {"Error": "Nope"}


def test_nested_maps() -> None:
    inner = {
        "Type": "Map",
        "ItemsPath": "$.row",
        "ItemProcessor": {"StartAt": "Double", "States": {"Double": {**task("double"), "End": True}}},
        "End": True,
    }
    definition = single(
        {
            "Type": "Map",
            "ItemSelector": {"row.$": "$$.Map.Item.Value"},
            "ItemProcessor": {"StartAt": "Inner", "States": {"Inner": inner}},
        }
    )
    run = execute(definition, [[1, 2], [3]], tasks=Tasks({"double": lambda n: n * 2}))
    assert run.output == [[2, 4], [6]]
    scopes = {e.details.get("scope") for e in run.of_type("TaskScheduled")}
    assert scopes == {"S[0]/Inner[0]", "S[0]/Inner[1]", "S[1]/Inner[0]"}
