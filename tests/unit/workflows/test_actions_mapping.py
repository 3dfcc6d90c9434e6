"""ARN mapping: an AWS definition's Lambda resources played by mlgate actions, and the export back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mlgate.errors import InvalidInput
from mlgate.workflows.actions import Actions
from mlgate.workflows.engine import FakeClock, Interpreter, TaskCall, TaskFailure
from mlgate.workflows.export import ACCOUNT, REGION, export_definition
from mlgate.workflows.mapping import (
    PathError,
    apply_template,
    function_name,
    get_path,
    parse_mapping,
    parse_path,
)
from mlgate.workflows.spec import parse_definition
from mlgate_services.vehiculos.service import WORKFLOWS_DIR

RETRIEVE = "arn:aws:lambda:us-east-1:123456789012:function:retrieve-image"
INFER = "arn:aws:lambda:us-east-1:123456789012:function:inference"


def call(resource: str, data: Any) -> TaskCall:
    return TaskCall(resource=resource, input=data, state_name="S", execution_id="x", context={})


class Recorder(Actions):
    """Actions whose leaves record their arguments instead of reading stores or running models."""

    def __init__(self) -> None:
        super().__init__(dataplane=None, buckets=None, functions={"tag": lambda x: {"tagged": x}})
        self.seen: list[tuple[str, Any]] = []

    async def store_get(self, params: Any) -> dict[str, Any]:
        self.seen.append(("store.get", params))
        return {"body": "QUJD", "content_type": "image/jpeg", "size": 3, "s3_bucket": params["s3_bucket"],
                "s3_key": params["s3_key"]}  # fmt: skip

    async def model_invoke(
        self, model: str, payload: Any, *, version: Any = None, as_lambda: bool = False
    ) -> Any:
        self.seen.append(("model.invoke", (model, version, payload, as_lambda)))
        return {"inferences": [0.1, 0.8], "top": [{"clase": "moped"}]}


MAPPING = {
    "resources": {
        RETRIEVE: {
            "action": "store.get",
            "result": {
                "image_data.$": "$.result.body",
                "s3_bucket.$": "$.event.s3_bucket",
                "s3_key.$": "$.event.s3_key",
            },
        },
        INFER: {"action": "model.invoke", "model": "vehiculos", "version": 3, "merge": ["inferences"]},
        "tagger": {"action": "mlgate:python:tag", "input_from": "$.inner"},
    }
}


def run(coro: Any) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


# -- the mapping file -----------------------------------------------------------------------


def test_parse_mapping_reports_every_problem() -> None:
    bad = {
        "resources": {
            "a": {"action": "s3.get"},
            "b": {"action": "model.invoke"},
            "c": {"action": "python", "function": ""},
            "d": {"action": "store.get", "input_from": "payload"},
            "e": {"action": "store.get", "merge": True, "result": {"x.$": "$.result"}},
            "f": {"action": "store.get", "result": {"x.$": "$.other.y"}},
            "g": {"action": "store.get", "colour": "red"},
            "h": "store.get",
            "i": {"action": "model.invoke", "model": "m", "version": True},
        },
        "extra": 1,
    }
    with pytest.raises(InvalidInput) as err:
        parse_mapping(bad)
    errors = err.value.details["errors"]
    assert len(errors) == 11, errors  # "c" has two: an empty function, so none
    joined = "\n".join(errors)
    for needle in ("s3.get", "needs 'model'", "function must be", "input_from", "either 'merge' or 'result'",
                   "$.event or $.result", "colour", "'h'", "version", "extra"):  # fmt: skip
        assert needle in joined, needle
    for doc in ("[1]", "not json", [1]):
        with pytest.raises(InvalidInput):
            parse_mapping(doc)  # type: ignore[arg-type]
    assert not parse_mapping(None)
    assert parse_mapping(json.dumps(MAPPING)).lookup(RETRIEVE) is not None


def test_lookup_exact_unqualified_and_bare_names() -> None:
    mapping = parse_mapping(MAPPING)
    assert mapping.lookup(RETRIEVE) is mapping.lookup(RETRIEVE + ":$LATEST")
    assert mapping.lookup(RETRIEVE + ":prod") is mapping.entries[RETRIEVE]
    # an entry keyed by a bare function name serves every ARN of that function
    assert (
        mapping.lookup("arn:aws:lambda:eu-west-1:999999999999:function:tagger:7") is mapping.entries["tagger"]
    )
    assert mapping.lookup("arn:aws:lambda:us-east-1:123456789012:function:ghost") is None
    assert function_name(RETRIEVE + ":$LATEST") == "retrieve-image"
    assert function_name("arn:aws:states:::lambda:invoke") is None
    native = parse_mapping({"resources": {"x": {"action": "mlgate:model:invoke", "model": "m"}}})
    assert native.entries["x"].action == "model.invoke"


def test_reference_paths_and_templates() -> None:
    doc = {"a": {"b c": [10, {"d": 1}]}, "e": None}
    assert parse_path("$.a['b c'][1].d") == ("a", "b c", 1, "d")
    assert get_path(doc, "$.a['b c'][1].d") == 1
    assert get_path(doc, "$") is doc
    assert get_path(doc, "$.e") is None
    for bad in ("$.a.x", "$.a['b c'][5]", "$.e.f"):
        with pytest.raises(PathError):
            get_path(doc, bad)
    for bad in ("a.b", "$..a", "$.a[*]", "$[?(@.x)]"):
        with pytest.raises(PathError):
            parse_path(bad)
    assert apply_template({"x.$": "$.a['b c'][0]", "k": [{"y.$": "$.e"}], "n": 1}, doc) == {
        "x": 10,
        "k": [{"y": None}],
        "n": 1,
    }


# -- Lambda semantics -----------------------------------------------------------------------


def test_a_lambda_arn_task_gets_the_input_and_returns_the_functions_value() -> None:
    actions = Recorder()
    mapping = parse_mapping(MAPPING)
    event = {"s3_bucket": "imgs", "s3_key": "moto.jpg", "extra": 1}
    out = run(actions.run(call(RETRIEVE, event), mapping))
    assert out == {"image_data": "QUJD", "s3_bucket": "imgs", "s3_key": "moto.jpg"}
    merged = run(actions.run(call(INFER, out), mapping))
    assert merged == {**out, "inferences": [0.1, 0.8]}  # the event plus only the merged key
    assert actions.seen == [("store.get", event), ("model.invoke", ("vehiculos", 3, out, True))]
    tagged = run(actions.run(call("arn:aws:lambda:sa-east-1:1:function:tagger", {"inner": [1]}), mapping))
    assert tagged == {"tagged": [1]}


def test_lambda_invoke_form_wraps_payload() -> None:
    actions = Recorder()
    mapping = parse_mapping(MAPPING)
    params = {"FunctionName": RETRIEVE + ":$LATEST", "Payload": {"s3_bucket": "b", "s3_key": "k.jpg"}}
    out = run(actions.run(call("arn:aws:states:::lambda:invoke", params), mapping))
    assert out == {
        "ExecutedVersion": "$LATEST",
        "Payload": {"image_data": "QUJD", "s3_bucket": "b", "s3_key": "k.jpg"},
        "StatusCode": 200,
    }
    ghost = {"FunctionName": "arn:aws:lambda:us-east-1:1:function:ghost", "Payload": {}}
    with pytest.raises(TaskFailure) as err:
        run(actions.run(call("arn:aws:states:::lambda:invoke", ghost), mapping))
    assert err.value.error == "Lambda.ResourceNotFoundException"
    with pytest.raises(TaskFailure) as err:
        run(actions.run(call("arn:aws:states:::lambda:invoke", {"Payload": {}}), mapping))
    assert err.value.error == "Mlgate.InvalidParameters"


def test_unmapped_resources_and_shape_errors_are_task_failures() -> None:
    actions = Recorder()
    mapping = parse_mapping(MAPPING)
    cases = [
        ("arn:aws:lambda:us-east-1:1:function:ghost", {}, "Mlgate.UnmappedResource"),
        ("mlgate:teleport", {}, "Mlgate.UnmappedResource"),
        (INFER, ["not", "an", "object"], "Mlgate.InvalidParameters"),  # merge needs objects
        ("arn:aws:lambda:us-east-1:1:function:tagger", {"no_inner": 1}, "Mlgate.InvalidParameters"),
    ]
    for resource, data, error in cases:
        with pytest.raises(TaskFailure) as err:
            run(actions.run(call(resource, data), mapping))
        assert err.value.error == error, resource


def test_check_lists_what_could_never_run() -> None:
    doc = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Task", "Resource": RETRIEVE, "Next": "B"},
            "B": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:1:function:ghost", "Next": "C"},
            "C": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "D",
                        "States": {"D": {"Type": "Task", "Resource": "mlgate:python:nope", "End": True}},
                    }
                ],
                "Next": "E",
            },
            "E": {
                "Type": "Map",
                "ItemProcessor": {
                    "StartAt": "F",
                    "States": {
                        "F": {
                            "Type": "Task",
                            "Resource": "arn:aws:states:::lambda:invoke",
                            "Parameters": {"FunctionName": "missing-fn", "Payload.$": "$"},
                            "End": True,
                        }
                    },
                },
                "Next": "G",
            },
            "G": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName.$": "$.fn"},
                "Next": "H",
            },
            "H": {"Type": "Task", "Resource": "mlgate:python:tag", "End": True},
        },
    }
    parse_definition(doc)
    problems = Recorder().check(doc, parse_mapping(MAPPING))
    assert len(problems) == 3, problems
    assert "'B'" in problems[0] and "ghost" in problems[0]
    assert "C/branch[0]/D" in problems[1] and "nope" in problems[1]
    assert "E/F" in problems[2] and "missing-fn" in problems[2]
    unregistered = parse_mapping({"resources": {"x": {"action": "python", "function": "ghost"}}})
    assert Recorder().check({"StartAt": "A", "States": {}}, unregistered) == [
        "mapping 'x': no function 'ghost' is registered"
    ]


# -- the shipped vehiculos definitions run unchanged ----------------------------------------


@pytest.mark.parametrize(("name", "threshold"), [("vehiculos", 0.75), ("vehiculos-estricto", 0.93)])
def test_shipped_definitions_run_with_their_mapping(name: str, threshold: float) -> None:
    machine = parse_definition(json.loads((WORKFLOWS_DIR / f"{name}.asl.json").read_text()))
    mapping = parse_mapping(json.loads((WORKFLOWS_DIR / "mapping.json").read_text()))
    assert Actions(dataplane=None, buckets=None).check(machine.raw, mapping) == []

    def with_scores(scores: list[float]) -> Any:
        actions = Recorder()

        async def model_invoke(
            model: str, payload: Any, *, version: Any = None, as_lambda: bool = False
        ) -> Any:
            return {"inferences": scores, "top": []}

        actions.model_invoke = model_invoke  # type: ignore[method-assign]
        interpreter = Interpreter(machine, invoke=actions.invoker(mapping), clock=FakeClock())
        return run(interpreter.run({"s3_bucket": "imgs", "s3_key": "moto.jpg"}))

    ok = with_scores([0.01, threshold])
    assert ok.status == "SUCCEEDED"
    assert ok.output == {
        "image_data": "QUJD",
        "s3_bucket": "imgs",
        "s3_key": "moto.jpg",
        "inferences": [0.01, threshold],
    }
    assert with_scores([threshold, 0.0]).status == "SUCCEEDED"
    low = with_scores([0.2, threshold - 0.01])
    assert (low.status, low.error) == ("FAILED", "THRESHOLD_CONFIDENCE_NOT_MET")


# -- export -----------------------------------------------------------------------------------


def test_export_keeps_aws_resources_and_replaces_mlgate_ones() -> None:
    doc = json.loads((WORKFLOWS_DIR / "vehiculos.asl.json").read_text())
    same = export_definition(doc)
    assert same.definition == doc and same.functions == [] and same.placeholders == []
    native: dict[str, Any] = {
        "StartAt": "Get",
        "States": {
            "Get": {"Type": "Task", "Resource": "mlgate:store:get", "Next": "Infer"},
            "Infer": {
                "Type": "Task",
                "Resource": "mlgate:model:invoke",
                "Parameters": {"model": "vehiculos", "input.$": "$"},
                "Next": "Each",
            },
            "Each": {
                "Type": "Map",
                "Iterator": {
                    "StartAt": "F",
                    "States": {"F": {"Type": "Task", "Resource": "mlgate:python:f", "End": True}},
                },
                "End": True,
            },
        },
    }
    out = export_definition(native)
    assert native["States"]["Get"]["Resource"] == "mlgate:store:get"  # the input is not changed
    states = out.definition["States"]
    assert states["Get"]["Resource"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:mlgate-store-get"
    assert states["Infer"]["Resource"].endswith(":function:mlgate-model-vehiculos")
    assert states["Infer"]["Parameters"] == {"model": "vehiculos", "input.$": "$"}
    assert states["Each"]["Iterator"]["States"]["F"]["Resource"].endswith(":function:f")
    assert [f["state"] for f in out.functions] == ["Get", "Infer", "Each/F"]
    assert out.placeholders == [REGION, ACCOUNT]
    filled = export_definition(native, region="eu-west-1", account="123456789012")
    assert filled.definition["States"]["Get"]["Resource"] == (
        "arn:aws:lambda:eu-west-1:123456789012:function:mlgate-store-get"
    )
    assert filled.placeholders == []
    parse_definition(filled.definition)  # still a valid definition


def test_shipped_assets_are_package_data() -> None:
    assert sorted(p.name for p in Path(WORKFLOWS_DIR).glob("*.json")) == [
        "mapping.json",
        "vehiculos-estricto.asl.json",
        "vehiculos.asl.json",
    ]
