"""Conformance: InputPath → Parameters → task → ResultSelector → ResultPath → OutputPath.

Every case is an example of the AWS Step Functions Developer Guide, cited per group, run with a
fake task in place of the Lambda function of the example.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mlgate.workflows.engine import Interpreter, TaskFailure
from mlgate.workflows.spec import parse_definition
from tests.unit.workflows.support import Tasks, execute, machine, returning, single, task

HELLO = "Hello, AWS Step Functions!"


# -- InputPath and Parameters --------------------------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/input-output-inputpath-params.html


def test_inputpath_selects_part_of_the_input() -> None:
    state_input = {
        "comment": "Example for InputPath.",
        "dataset1": {"val1": 1, "val2": 2, "val3": 3},
        "dataset2": {"val1": "a", "val2": "b", "val3": "c"},
    }
    run = execute(single(task(InputPath="$.dataset2")), state_input)
    assert run.tasks.inputs("fn") == [{"val1": "a", "val2": "b", "val3": "c"}]


def test_a_path_can_yield_a_selection_of_values() -> None:
    run = execute(single(task(InputPath="$.a[0:2]")), {"a": [1, 2, 3, 4]})
    assert run.tasks.inputs("fn") == [[1, 2]]


def test_parameters_mix_static_values_and_paths() -> None:
    state_input = {
        "comment": "Example for Parameters.",
        "product": {
            "details": {"color": "blue", "size": "small", "material": "cotton"},
            "availability": "in stock",
            "sku": "2317",
            "cost": "$23",
        },
    }
    parameters = {
        "comment": "Selecting what I care about.",
        "MyDetails": {
            "size.$": "$.product.details.size",
            "exists.$": "$.product.availability",
            "StaticValue": "foo",
        },
    }
    run = execute(single(task(Parameters=parameters)), state_input)
    assert run.tasks.inputs("fn") == [
        {
            "comment": "Selecting what I care about.",
            "MyDetails": {"size": "small", "exists": "in stock", "StaticValue": "foo"},
        }
    ]


def test_parameters_apply_after_inputpath() -> None:
    run = execute(
        single(task(InputPath="$.product", Parameters={"sku.$": "$.sku"})),
        {"product": {"sku": "2317"}},
    )
    assert run.tasks.inputs("fn") == [{"sku": "2317"}]


def test_parameters_reach_into_arrays_of_objects() -> None:
    run = execute(single(task(Parameters={"list": [{"v.$": "$.a"}, 2]})), {"a": 1})
    assert run.tasks.inputs("fn") == [{"list": [{"v": 1}, 2]}]


def test_inputpath_null_sends_an_empty_object() -> None:
    # https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-input-output-processing.html
    run = execute(single(task(InputPath=None)), {"secret": 1})
    assert run.tasks.inputs("fn") == [{}]


def test_inputpath_to_a_missing_field_is_a_runtime_error_nothing_catches() -> None:
    definition = machine(
        {
            "T": task(
                InputPath="$.missing",
                End=True,
                Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
            ),
            "Caught": {"Type": "Succeed"},
        }
    )
    run = execute(definition, {"present": 1})
    assert (run.status, run.error) == ("FAILED", "States.Runtime")
    assert "$.missing" in (run.cause or "")
    assert run.tasks.calls == []


def test_a_parameter_path_to_a_missing_field_is_a_runtime_error_as_on_aws() -> None:
    # AWS's recorded executions (and moto's executing parser) fail with States.Runtime, which
    # nothing catches, although the error docs list States.ParameterPathFailure
    definition = machine(
        {
            "T": task(
                Parameters={"x.$": "$.missing"},
                End=True,
                Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
            ),
            "Caught": {"Type": "Pass", "End": True},
        }
    )
    run = execute(definition, {"present": 1})
    assert (run.status, run.error) == ("FAILED", "States.Runtime")
    assert run.cause == (
        "An error occurred while executing the state 'T'. The JSONPath '$.missing' specified for "
        """the field 'x.$' could not be found in the input '{"present":1}'"""
    )


# -- The context object -----------------------------------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/input-output-contextobject.html


def test_parameters_read_the_context_object() -> None:
    parameters = {
        "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/flight-purchase",
        "MessageBody": {"From": "YVR", "To": "SEA", "Execution.$": "$$.Execution.Id"},
    }
    run = execute(
        single(task("arn:aws:states:::sqs:sendMessage", Parameters=parameters), "Order Flight Ticket Queue"),
        {"key": "value"},
        execution_id="arn:aws:states:us-east-1:123456789012:execution:stateMachineName:executionName",
    )
    body = run.tasks.calls[0].input["MessageBody"]
    assert body == {
        "From": "YVR",
        "To": "SEA",
        "Execution": "arn:aws:states:us-east-1:123456789012:execution:stateMachineName:executionName",
    }


def test_the_context_object_has_execution_state_and_state_machine() -> None:
    parameters = {"ctx.$": "$$"}
    run = execute(
        single(task(Parameters=parameters), "Test"),
        {"key": "value"},
        execution_id="exec-1",
        execution_name="executionName",
        state_machine_name="stateMachineName",
    )
    context = run.tasks.calls[0].input["ctx"]
    # as AWS shapes it: ids are ARNs, and the execution has a role
    assert context == {
        "Execution": {
            "Id": "arn:aws:states:us-east-1:123456789012:execution:stateMachineName:executionName",
            "Input": {"key": "value"},
            "Name": "executionName",
            "RoleArn": "arn:aws:iam::123456789012:role/mlgate-workflows",
            "StartTime": "2024-01-01T00:00:00.000Z",
            "RedriveCount": 0,
        },
        "State": {"EnteredTime": "2024-01-01T00:00:00.000Z", "Name": "Test", "RetryCount": 0},
        "StateMachine": {
            "Id": "arn:aws:states:us-east-1:123456789012:stateMachine:stateMachineName",
            "Name": "stateMachineName",
        },
    }
    assert run.tasks.calls[0].execution_id == "exec-1"  # mlgate's own id, for the invoker
    assert "Task" not in context  # no callback tokens here
    assert run.tasks.calls[0].context["State"]["Name"] == "Test"


def test_map_item_index_and_value_are_in_the_context_object() -> None:
    definition = machine(
        {
            "ExampleMapState": {
                "Type": "Map",
                "Parameters": {"ContextIndex.$": "$$.Map.Item.Index", "ContextValue.$": "$$.Map.Item.Value"},
                "Iterator": {"StartAt": "TestPass", "States": {"TestPass": {"Type": "Pass", "End": True}}},
                "End": True,
            }
        }
    )
    run = execute(definition, [{"who": "bob"}, {"who": "meg"}, {"who": "joe"}])
    assert run.output == [
        {"ContextValue": {"who": "bob"}, "ContextIndex": 0},
        {"ContextValue": {"who": "meg"}, "ContextIndex": 1},
        {"ContextValue": {"who": "joe"}, "ContextIndex": 2},
    ]


# -- ResultSelector ---------------------------------------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/input-output-inputpath-params.html#input-output-resultselector

EMR_RESULT = {
    "resourceType": "elasticmapreduce",
    "resource": "createCluster.sync",
    "output": {
        "SdkHttpMetadata": {"HttpHeaders": {"Content-Length": "1112"}, "HttpStatusCode": 200},
        "SdkResponseMetadata": {"RequestId": "1234-5678-9012"},
        "ClusterId": "AKIAIOSFODNN7EXAMPLE",
    },
}


def test_resultselector_picks_from_the_raw_result_before_resultpath() -> None:
    state = task(
        "arn:aws:states:::elasticmapreduce:createCluster.sync",
        ResultSelector={"ClusterId.$": "$.output.ClusterId", "ResourceType.$": "$.resourceType"},
        ResultPath="$.EMROutput",
    )
    run = execute(
        single(state),
        {"Name": "MyWorkflowCluster"},
        tasks=Tasks({"arn:aws:states:::elasticmapreduce:createCluster.sync": returning(EMR_RESULT)}),
    )
    assert run.output == {
        "Name": "MyWorkflowCluster",
        "EMROutput": {"ClusterId": "AKIAIOSFODNN7EXAMPLE", "ResourceType": "elasticmapreduce"},
    }


def test_resultselector_flattens_an_array_of_arrays() -> None:
    definition = single(
        {
            "Type": "Parallel",
            "Branches": [
                {
                    "StartAt": "P1",
                    "States": {"P1": {"Type": "Pass", "Result": [{"a": 1}, {"a": 2}], "End": True}},
                },
                {"StartAt": "P2", "States": {"P2": {"Type": "Pass", "Result": [{"a": 3}], "End": True}}},
            ],
            "ResultSelector": {"flattened.$": "$[*][*]"},
        }
    )
    assert execute(definition).output == {"flattened": [{"a": 1}, {"a": 2}, {"a": 3}]}


# -- ResultPath ------------------------------------------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/input-output-resultpath.html

RESULTPATH_INPUT = {
    "comment": "This is a test of the input and output of a Task state.",
    "details": "Default example",
    "who": "AWS Step Functions",
}


@pytest.mark.parametrize("fields", [{}, {"ResultPath": "$"}])
def test_resultpath_default_replaces_the_input_with_the_result(fields: dict[str, Any]) -> None:
    run = execute(single(task(**fields)), RESULTPATH_INPUT, tasks=Tasks({"fn": HELLO}))
    assert run.output == HELLO


def test_resultpath_null_discards_the_result_and_keeps_the_input() -> None:
    run = execute(single(task(ResultPath=None)), RESULTPATH_INPUT, tasks=Tasks({"fn": HELLO}))
    assert run.output == RESULTPATH_INPUT


def test_resultpath_includes_the_result_with_the_input() -> None:
    run = execute(single(task(ResultPath="$.taskresult")), RESULTPATH_INPUT, tasks=Tasks({"fn": HELLO}))
    assert run.output == {**RESULTPATH_INPUT, "taskresult": HELLO}


def test_resultpath_inserts_the_result_into_a_child_node() -> None:
    state_input = {
        "comment": "An input comment.",
        "strings": {"string1": "foo", "string2": "bar", "string3": "baz"},
        "who": "AWS Step Functions",
    }
    run = execute(single(task(ResultPath="$.strings.lambdaresult")), state_input, tasks=Tasks({"fn": HELLO}))
    assert run.output == {
        "comment": "An input comment.",
        "strings": {"string1": "foo", "string2": "bar", "string3": "baz", "lambdaresult": HELLO},
        "who": "AWS Step Functions",
    }
    assert "lambdaresult" not in state_input["strings"]  # the input was not changed in place


def test_resultpath_updates_an_existing_node() -> None:
    run = execute(single(task(ResultPath="$.comment")), RESULTPATH_INPUT, tasks=Tasks({"fn": HELLO}))
    assert run.output == {**RESULTPATH_INPUT, "comment": HELLO}


def test_resultpath_creates_missing_objects_along_the_path() -> None:
    run = execute(single(task(ResultPath="$.a.b.c")), {"x": 1}, tasks=Tasks({"fn": 7}))
    assert run.output == {"x": 1, "a": {"b": {"c": 7}}}


def test_resultpath_can_replace_an_array_element() -> None:
    run = execute(single(task(ResultPath="$.list[1]")), {"list": [1, 2, 3]}, tasks=Tasks({"fn": "two"}))
    assert run.output == {"list": [1, "two", 3]}


def test_resultpath_into_a_non_object_is_a_resultpath_match_failure() -> None:
    run = execute(single(task(ResultPath="$.result")), "just a string", tasks=Tasks({"fn": 1}))
    assert (run.status, run.error) == ("FAILED", "States.ResultPathMatchFailure")


def test_resultpath_includes_the_error_and_the_input_in_a_catch() -> None:
    definition = machine(
        {
            "T": task(
                End=True, Catch=[{"ErrorEquals": ["States.ALL"], "Next": "NextTask", "ResultPath": "$.error"}]
            ),
            "NextTask": {"Type": "Pass", "End": True},
        }
    )
    run = execute(definition, {"foo": "bar"}, tasks=Tasks({"fn": TaskFailure("Error here")}))
    assert run.output == {"foo": "bar", "error": {"Error": "Error here"}}


# -- InputPath, ResultPath and OutputPath together ----------------------------------------------------
# https://docs.aws.amazon.com/step-functions/latest/dg/input-output-example.html


def test_inputpath_resultpath_and_outputpath_example() -> None:
    definition = {
        "Comment": "A Hello World example of the Amazon States Language using an AWS Lambda function",
        "StartAt": "HelloWorld",
        "States": {
            "HelloWorld": {
                "Type": "Task",
                "Resource": "arn:aws:lambda:us-east-1:123456789012:function:HelloFunction",
                "InputPath": "$.lambda",
                "ResultPath": "$.data.lambdaresult",
                "OutputPath": "$.data",
                "End": True,
            }
        },
    }
    state_input = {
        "comment": "An input comment.",
        "data": {"val1": 23, "val2": 17},
        "extra": "foo",
        "lambda": {"who": "AWS Step Functions"},
    }
    tasks = Tasks(
        {"arn:aws:lambda:us-east-1:123456789012:function:HelloFunction": lambda i: f"Hello, {i['who']}!"}
    )
    run = execute(definition, state_input, tasks=tasks)
    assert tasks.calls[0].input == {"who": "AWS Step Functions"}
    assert run.output == {"val1": 23, "val2": 17, "lambdaresult": HELLO}


# https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-input-output-processing.html


def test_outputpath_dollar_passes_the_combined_input() -> None:
    fields = {"InputPath": "$.numbers", "ResultPath": "$.sum", "OutputPath": "$"}
    adder = Tasks({"fn": lambda n: n["val1"] + n["val2"]})
    run = execute(
        single(task(**fields)), {"title": "Numbers to add", "numbers": {"val1": 3, "val2": 4}}, tasks=adder
    )
    assert run.output == {"title": "Numbers to add", "numbers": {"val1": 3, "val2": 4}, "sum": 7}


def test_outputpath_selects_the_result() -> None:
    fields = {"InputPath": "$.numbers", "ResultPath": "$.sum", "OutputPath": "$.sum"}
    adder = Tasks({"fn": lambda n: n["val1"] + n["val2"]})
    assert execute(single(task(**fields)), {"numbers": {"val1": 3, "val2": 4}}, tasks=adder).output == 7


def test_outputpath_null_sends_an_empty_object() -> None:
    assert execute(single(task(OutputPath=None)), {"a": 1}).output == {}


def test_outputpath_to_a_missing_field_is_a_runtime_error() -> None:
    run = execute(single(task(OutputPath="$.nope")), {"a": 1})
    assert (run.status, run.error) == ("FAILED", "States.Runtime")


# -- Data is never shared between states by mutation ----------------------------------------------------


def test_a_task_that_mutates_its_input_cannot_change_the_state_data() -> None:
    def vandal(payload: dict[str, Any]) -> str:
        payload["nested"]["x"] = "changed"
        payload["added"] = True
        return "done"

    state_input = {"nested": {"x": "original"}}
    run = execute(single(task(ResultPath="$.r")), state_input, tasks=Tasks({"fn": vandal}))
    assert run.output == {"nested": {"x": "original"}, "r": "done"}
    assert state_input == {"nested": {"x": "original"}}


def test_results_from_the_definition_are_copied_each_time() -> None:
    definition = single({"Type": "Pass", "Result": {"list": [1]}})
    compiled = parse_definition(definition)
    first = asyncio.run(Interpreter(compiled, invoke=Tasks()).run({})).output
    first["list"].append(2)
    second = asyncio.run(Interpreter(compiled, invoke=Tasks()).run({})).output
    assert second == {"list": [1]}
