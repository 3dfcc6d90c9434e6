"""JSONata states (``QueryLanguage: "JSONata"``): Arguments, Output, Assign/variables, Condition, Items.

https://docs.aws.amazon.com/step-functions/latest/dg/transforming-data.html and
https://docs.aws.amazon.com/step-functions/latest/dg/workflow-variables.html
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from mlgate.errors import InvalidInput
from mlgate.workflows import jsonata
from mlgate.workflows.engine import TaskFailure
from mlgate.workflows.spec import parse_definition

from .support import Tasks, execute, machine, single

JA = {"QueryLanguage": "JSONata"}


def ja_machine(states: dict[str, Any], **top: Any) -> dict[str, Any]:
    return machine(states, QueryLanguage="JSONata", **top)


def errors_of(definition: Any) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        parse_definition(definition)
    errors = caught.value.details["errors"]
    assert isinstance(errors, list)
    return errors


# -- data flow ---------------------------------------------------------------------------------------


def test_pass_output_reads_input_and_context_and_literals_stay_literal() -> None:
    run = execute(
        ja_machine(
            {
                "P": {
                    "Type": "Pass",
                    "Output": {
                        "total": "{% $sum($states.input.items.price) %}",
                        "state": "{% $states.context.State.Name %}",
                        "literal": "$states.input",
                        "nested": ["{% $uppercase($states.input.who) %}", 1],
                    },
                    "End": True,
                }
            }
        ),
        {"items": [{"price": 2}, {"price": 3.5}], "who": "ana"},
    )
    assert run.status == "SUCCEEDED", run.cause
    assert run.output == {"total": 5.5, "state": "P", "literal": "$states.input", "nested": ["ANA", 1]}


def test_a_state_without_output_passes_its_input() -> None:
    run = execute(ja_machine({"P": {"Type": "Pass", "End": True}}), {"a": 1})
    assert run.output == {"a": 1}


def test_task_arguments_result_and_output() -> None:
    tasks = Tasks({"fn": lambda event: {"doubled": event["n"] * 2}})
    run = execute(
        ja_machine(
            {
                "T": {
                    "Type": "Task",
                    "Resource": "fn",
                    "Arguments": {"n": "{% $states.input.value + 1 %}"},
                    "Output": {"in": "{% $states.input.value %}", "out": "{% $states.result.doubled %}"},
                    "TimeoutSeconds": "{% 5 * 2 %}",
                    "End": True,
                }
            }
        ),
        {"value": 4},
        tasks=tasks,
    )
    assert run.status == "SUCCEEDED", run.cause
    assert tasks.inputs("fn") == [{"n": 5}]
    assert run.output == {"in": 4, "out": 10}
    assert run.of_type("TaskScheduled")[0].details["timeout_seconds"] == 10.0


def test_a_task_without_output_returns_its_result() -> None:
    run = execute(ja_machine({"T": {"Type": "Task", "Resource": "fn", "End": True}}), {"a": 1})
    assert run.output == {"a": 1}  # the fake task echoes its arguments (default: the input)


# -- variables -----------------------------------------------------------------------------------------


def test_assign_sets_variables_later_states_read() -> None:
    run = execute(
        ja_machine(
            {
                "First": {
                    "Type": "Pass",
                    "Assign": {"customer": "{% $states.input.name %}", "count": 1},
                    "Output": {"seen": "{% $exists($customer) %}"},  # Output never sees this state's Assign
                    "Next": "Second",
                },
                "Second": {
                    "Type": "Pass",
                    "Assign": {"count": "{% $count + 1 %}"},
                    "Next": "Third",
                },
                "Third": {
                    "Type": "Pass",
                    "Output": {
                        "who": "{% $customer %}",
                        "count": "{% $count %}",
                        "before": "{% $states.input %}",
                    },
                    "End": True,
                },
            }
        ),
        {"name": "María"},
    )
    assert run.status == "SUCCEEDED", run.cause
    assert run.output == {"who": "María", "count": 2, "before": {"seen": False}}


def test_assign_values_are_all_evaluated_before_any_is_assigned() -> None:
    run = execute(
        ja_machine(
            {
                "Init": {"Type": "Pass", "Assign": {"a": 1, "b": 2}, "Next": "Swap"},
                "Swap": {"Type": "Pass", "Assign": {"a": "{% $b %}", "b": "{% $a %}"}, "Next": "Show"},
                "Show": {"Type": "Pass", "Output": "{% [$a, $b] %}", "End": True},
            }
        )
    )
    assert run.output == [2, 1]


def test_branches_read_outer_variables_and_keep_their_own() -> None:
    run = execute(
        ja_machine(
            {
                "Init": {"Type": "Pass", "Assign": {"rate": 10}, "Next": "Each"},
                "Each": {
                    "Type": "Map",
                    "Items": "{% $states.input.xs %}",
                    "ItemProcessor": {
                        "StartAt": "Scale",
                        "States": {
                            "Scale": {
                                "Type": "Pass",
                                "Assign": {"rate": 0, "local": "{% $states.input %}"},
                                "Output": "{% $states.input * $rate %}",
                                "End": True,
                            }
                        },
                    },
                    "Next": "After",
                },
                "After": {
                    "Type": "Pass",
                    "Output": {
                        "scaled": "{% $states.input %}",
                        "rate": "{% $rate %}",
                        "local": "{% $exists($local) %}",
                    },
                    "End": True,
                },
            }
        ),
        {"xs": [1, 2, 3]},
    )
    assert run.status == "SUCCEEDED", run.cause
    assert run.output == {"scaled": [10, 20, 30], "rate": 10, "local": False}


# -- Choice, Wait, Fail, Succeed ---------------------------------------------------------------------


def _choice(**extra: Any) -> dict[str, Any]:
    return ja_machine(
        {
            "Pick": {
                "Type": "Choice",
                "Choices": [
                    {
                        "Condition": "{% $states.input.n > 2 and $contains($states.input.s, 'go') %}",
                        "Assign": {"picked": "big"},
                        "Output": {"n": "{% $states.input.n %}"},
                        "Next": "Done",
                    }
                ],
                "Default": "Done",
                "Assign": {"visited": True},
                **extra,
            },
            "Done": {"Type": "Succeed", "Output": {"in": "{% $states.input %}", "picked": "{% $picked %}"}},
        }
    )


def test_choice_conditions_with_rule_assign_and_output() -> None:
    run = execute(_choice(), {"n": 3, "s": "let's go"})
    assert run.output == {"in": {"n": 3}, "picked": "big"}
    missed = execute(_choice(), {"n": 1, "s": "go"})
    assert (missed.status, missed.error) == ("FAILED", "States.QueryEvaluationError")  # $picked undefined


def test_a_condition_must_be_a_boolean() -> None:
    definition = ja_machine(
        {
            "Pick": {"Type": "Choice", "Choices": [{"Condition": "{% $states.input.n %}", "Next": "Done"}]},
            "Done": {"Type": "Succeed"},
        }
    )
    run = execute(definition, {"n": 1})
    assert (run.status, run.error) == ("FAILED", "States.QueryEvaluationError")


def test_wait_fail_and_their_expressions() -> None:
    run = execute(
        ja_machine(
            {
                "W": {"Type": "Wait", "Seconds": "{% $states.input.delay %}", "Next": "F"},
                "F": {
                    "Type": "Fail",
                    "Error": "{% 'Order.' & $states.input.kind %}",
                    "Cause": "{% 'waited ' & $string($states.input.delay) %}",
                },
            }
        ),
        {"delay": 30, "kind": "Invalid"},
    )
    assert (run.status, run.error, run.cause) == ("FAILED", "Order.Invalid", "waited 30")
    assert run.clock.now().timestamp() - run.events[0].timestamp.timestamp() == 30


# -- Parallel, Map, Catch ------------------------------------------------------------------------------


def test_parallel_arguments_and_result() -> None:
    branch = single({"Type": "Pass", "Output": "{% $states.input.x * 2 %}"}, "Twice")
    other = single({"Type": "Pass", "Output": "{% $states.input.x + 1 %}"}, "Inc")
    run = execute(
        ja_machine(
            {
                "P": {
                    "Type": "Parallel",
                    "Arguments": {"x": "{% $states.input.value %}"},
                    "Branches": [branch, other],
                    "Output": {"sum": "{% $sum($states.result) %}"},
                    "End": True,
                }
            }
        ),
        {"value": 5},
    )
    assert run.status == "SUCCEEDED", run.cause
    assert run.output == {"sum": 16}


def test_map_items_item_selector_and_max_concurrency() -> None:
    run = execute(
        ja_machine(
            {
                "M": {
                    "Type": "Map",
                    "Items": "{% $states.input.orders %}",
                    "ItemSelector": {
                        "index": "{% $states.context.Map.Item.Index %}",
                        "sku": "{% $states.context.Map.Item.Value.sku %}",
                        "shop": "{% $states.input.shop %}",
                    },
                    "MaxConcurrency": "{% 1 %}",
                    "ItemProcessor": single({"Type": "Pass"}, "Each"),
                    "End": True,
                }
            }
        ),
        {"shop": "s1", "orders": [{"sku": "a"}, {"sku": "b"}]},
    )
    assert run.status == "SUCCEEDED", run.cause
    assert run.output == [{"index": 0, "sku": "a", "shop": "s1"}, {"index": 1, "sku": "b", "shop": "s1"}]


def test_map_items_must_be_an_array() -> None:
    definition = ja_machine(
        {
            "M": {
                "Type": "Map",
                "Items": "{% 'x' %}",
                "ItemProcessor": single({"Type": "Pass"}, "E"),
                "End": True,
            }
        }
    )
    run = execute(definition)
    assert (run.status, run.error) == ("FAILED", "States.QueryEvaluationError")


def test_catch_output_and_assign_see_the_error_output() -> None:
    tasks = Tasks({"fn": TaskFailure("Custom.Error", "it broke")})
    run = execute(
        ja_machine(
            {
                "T": {
                    "Type": "Task",
                    "Resource": "fn",
                    "Catch": [
                        {
                            "ErrorEquals": ["States.ALL"],
                            "Assign": {"lastError": "{% $states.errorOutput.Error %}"},
                            "Output": {
                                "was": "{% $states.input %}",
                                "cause": "{% $states.errorOutput.Cause %}",
                            },
                            "Next": "Report",
                        }
                    ],
                    "End": True,
                },
                "Report": {
                    "Type": "Pass",
                    "Output": {"error": "{% $lastError %}", "from": "{% $states.input %}"},
                    "End": True,
                },
            }
        ),
        {"k": 1},
        tasks=tasks,
    )
    assert run.status == "SUCCEEDED", run.cause
    assert run.output == {"error": "Custom.Error", "from": {"was": {"k": 1}, "cause": "it broke"}}


def test_a_catcher_without_output_passes_the_error_output() -> None:
    run = execute(
        ja_machine(
            {
                "T": {
                    "Type": "Pass",
                    "Output": "{% $states.input.missing %}",
                    "End": True,
                },
            }
        )
    )
    assert (run.status, run.error) == ("FAILED", "States.QueryEvaluationError")
    assert "returned nothing (undefined)" in (run.cause or "")
    caught = execute(
        ja_machine(
            {
                "T": {
                    "Type": "Task",
                    "Resource": "fn",
                    "Arguments": "{% $error('no') %}",
                    "Catch": [{"ErrorEquals": ["States.QueryEvaluationError"], "Next": "Done"}],
                    "End": True,
                },
                "Done": {"Type": "Succeed"},
            }
        )
    )
    assert caught.status == "SUCCEEDED", caught.cause
    assert caught.output["Error"] == "States.QueryEvaluationError"


def test_a_jsonata_state_in_a_jsonpath_machine() -> None:
    run = execute(
        machine(
            {
                "Path": {"Type": "Pass", "Parameters": {"n.$": "$.value"}, "Next": "Ata"},
                "Ata": {"Type": "Pass", **JA, "Output": "{% $states.input.n * 3 %}", "End": True},
            }
        ),
        {"value": 2},
    )
    assert run.output == 6


# -- Step Functions' functions and the bounds --------------------------------------------------------------


def _eval(text: str) -> Any:
    return jsonata.compile_expression(text).evaluate({"states": {}})


def test_step_functions_functions() -> None:
    assert _eval("{% $partition([1, 2, 3, 4, 5], 2) %}") == [[1, 2], [3, 4], [5]]
    assert _eval("{% $range(0, 10, 2) %}") == [0, 2, 4, 6, 8, 10]
    assert _eval("{% $range(5, 1, -2) %}") == [5, 3, 1]
    assert _eval("{% $hash('mlgate', 'SHA-256') %}") == (
        "57d1a7a2f23374f56664ba67054cfc6048d1e7befcf63a4ed6af7f643b369ddd"
    )
    assert _eval("{% $random(7) %}") == _eval("{% $random(7) %}")
    assert 0 <= _eval("{% $random() %}") < 1
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", _eval("{% $uuid() %}")
    )
    assert _eval("""{% $parse('{"a": [1, null]}') %}""") == {"a": [1, None]}
    assert _eval("{% null %}") is None  # null is a value; undefined is an error
    with pytest.raises(jsonata.JsonataError, match=r"\$eval is not supported"):
        _eval("{% $eval('1 + 1') %}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{% ($f := function($n){ $f($n + 1) }; $f(1)) %}", "ran longer|nested deeper"),
        ("{% $pad('', 100000000, 'x') %}", "string of over"),
        ("{% $reduce([1..40], function($a, $v){ $a & $a }, 'x') %}", "string of over"),
        ("{% $join($map([1..100], function($v){ $pad('', 8000000, 'x') })) %}", "in all|string of over"),
        ("{% ($s := $pad('', 4000000, 'x'); $string([$s, $s, $s])) %}", "characters as JSON"),
        ("{% ($s := $pad('', 4000000, 'x'); [$s, $s, $s] & '') %}", "characters as JSON"),
        ("{% $replace($pad('', 1000000, 'a'), 'a', 'bbbbbbbbbbbb') %}", "string of over"),
        ("{% $count([1..10000000]) %}", "array of over"),
        ("{% $range(0, 100000000, 1) %}", "array of over"),
        ("{% 1 / 0 %}", "ZeroDivisionError"),
        (
            "{% $reduce([1..40], function($a, $v){ {'l': $a, 'r': $a} }, 1) %}",
            "over 8388608 characters as JSON",
        ),
    ],
)
def test_hostile_expressions_fail_fast(text: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonata, "TIMEOUT_MS", 200)
    started = time.monotonic()
    with pytest.raises(jsonata.JsonataError, match=message):
        _eval(text)
    assert time.monotonic() - started < 2


def test_a_runaway_expression_fails_the_state_not_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonata, "TIMEOUT_MS", 100)
    run = execute(
        ja_machine(
            {"P": {"Type": "Pass", "Output": "{% ($f := function($n){ $f($n + 1) }; $f(1)) %}", "End": True}}
        )
    )
    assert (run.status, run.error) == ("FAILED", "States.QueryEvaluationError")


def test_a_variable_is_at_most_256_kib() -> None:
    run = execute(
        ja_machine({"P": {"Type": "Pass", "Assign": {"big": "{% $pad('', 300000, 'x') %}"}, "End": True}})
    )
    assert (run.status, run.error) == ("FAILED", "States.DataLimitExceeded")
    assert "variable 'big'" in (run.cause or "")


# -- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"Type": "Pass", "Parameters": {}, "End": True}, "'Parameters' is a JSONPath field"),
        ({"Type": "Pass", "InputPath": "$", "End": True}, "'InputPath' is a JSONPath field"),
        ({"Type": "Pass", "OutputPath": "$", "End": True}, "'OutputPath' is a JSONPath field"),
        (
            {"Type": "Task", "Resource": "r", "ResultPath": "$.x", "End": True},
            "'ResultPath' is a JSONPath field",
        ),
        ({"Type": "Wait", "SecondsPath": "$.s", "End": True}, "'SecondsPath' is a JSONPath field"),
        ({"Type": "Pass", "Output": "{% $states.input. %}", "End": True}, "not a valid JSONata expression"),
        ({"Type": "Pass", "Assign": {"1bad": 1}, "End": True}, "'1bad' is not a variable name"),
        ({"Type": "Pass", "Assign": {"states": 1}, "End": True}, "'states' is reserved"),
        ({"Type": "Pass", "Assign": {"__evaluate_entry": 1}, "End": True}, "or '__'"),
        ({"Type": "Wait", "Seconds": -1, "End": True}, "Seconds: must be a non-negative number"),
        (
            {"Type": "Map", "Items": "x", "ItemProcessor": single({"Type": "Pass"}, "E"), "End": True},
            "Items: must be",
        ),
        ({"Type": "Succeed", "Assign": {"a": 1}}, "unknown field 'Assign' for a Succeed state"),
    ],
)
def test_jsonata_states_refuse_jsonpath_fields_and_bad_expressions(
    state: dict[str, Any], message: str
) -> None:
    errors = errors_of(ja_machine({"A": state}))
    assert any(message in e for e in errors), errors


def test_jsonata_choice_rules_need_a_condition() -> None:
    errors = errors_of(
        ja_machine(
            {
                "C": {"Type": "Choice", "Choices": [{"Variable": "$.a", "IsPresent": True, "Next": "D"}]},
                "D": {"Type": "Succeed"},
            }
        )
    )
    assert any("a JSONata rule has a Condition expression instead" in e for e in errors), errors
    assert any("Condition: must be a JSONata expression" in e for e in errors), errors


def test_a_jsonata_machine_cannot_have_jsonpath_states() -> None:
    errors = errors_of(ja_machine({"A": {"Type": "Pass", "QueryLanguage": "JSONPath", "End": True}}))
    assert errors == ["States.A.QueryLanguage: a state cannot use JSONPath in a JSONata state machine"]


def test_jsonata_fields_in_a_jsonpath_state_name_the_query_language() -> None:
    errors = errors_of(machine({"A": {"Type": "Pass", "Output": {"a": 1}, "End": True}}))
    assert errors == [
        """States.A: 'Output' is a JSONata field: set "QueryLanguage": "JSONata" (or use OutputPath)"""
    ]


def test_an_unknown_query_language_is_refused() -> None:
    errors = errors_of(machine({"A": {"Type": "Pass", "End": True}}, QueryLanguage="JMESPath"))
    assert errors == ["definition.QueryLanguage: must be JSONPath or JSONata (got 'JMESPath')"]


def test_a_jsonata_lambda_invoke_runs_through_the_mapping() -> None:
    import asyncio

    from mlgate.workflows.actions import Actions
    from mlgate.workflows.engine import FakeClock, Interpreter
    from mlgate.workflows.mapping import parse_mapping

    fn = "arn:aws:lambda:us-east-1:123456789012:function:score"
    definition = ja_machine(
        {
            "Score": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Arguments": {"FunctionName": f"{fn}:$LATEST", "Payload": "{% $states.input %}"},
                "Output": "{% $states.result.Payload %}",
                "End": True,
            }
        }
    )
    actions = Actions(
        dataplane=None, buckets=None, functions={"score": lambda event: {"score": len(event["text"])}}
    )
    mapping = parse_mapping({"resources": {fn: {"action": "python", "function": "score"}}})
    assert actions.check(definition, mapping) == []
    interpreter = Interpreter(
        parse_definition(definition), invoke=actions.invoker(mapping), clock=FakeClock()
    )
    result = asyncio.run(interpreter.run({"text": "hola"}))
    assert (result.status, result.output) == ("SUCCEEDED", {"score": 4})


# -- hardening: reserved names, regexes, $distinct, deep results ------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "($__evaluate_entry := $nope; 1)",
        "$__evaluate_exit",
        "(function($__x){$__x})(1)",
        "[1, 2]#$__i.$__i",
        "[1, 2]@$__v.$__v",
    ],
)
def test_variable_names_starting_with_two_underscores_are_refused(text: str) -> None:
    with pytest.raises(jsonata.JsonataSyntaxError, match="reserved"):
        jsonata.compile_expression("{% " + text + " %}")


def test_a_variable_assigned_under_a_hook_name_cannot_lift_the_bounds() -> None:
    expr = jsonata.compile_expression("{% ($f := function($n){$f($n + 1)}; $f(0)) %}")
    started = time.monotonic()
    with pytest.raises(jsonata.JsonataError, match="ran longer"):
        expr.evaluate({"__evaluate_entry": None, "__evaluate_exit": "x", "states": {}})
    assert time.monotonic() - started < 10


def test_a_backtracking_regex_stops_at_the_evaluation_bound() -> None:
    expr = jsonata.compile_expression("{% $contains($states.input, /^(a|a)*$/) %}")
    assert expr.evaluate({"states": {"input": "aaaa"}}) is True
    started = time.monotonic()
    with pytest.raises(jsonata.JsonataError, match=r"regular expression|ran longer"):
        expr.evaluate({"states": {"input": "a" * 40 + "!"}})
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$match('abcAB', /a(b)/i).groups", ["b", "B"]),
        ("$replace('hello world', /o/, 'X')", "hellX wXrld"),
        ("$replace('a.b.c', '.', '-', 1)", "a-b.c"),
        ("$replace('a.b.c', '.', '[$0]')", "a[.]b[.]c"),
        ("$replace('aXbXc', 'X', '_', 0)", "aXbXc"),
        ("$split('a1b2c', /[0-9]/)", ["a", "b", "c"]),
        ("$contains('line1\nline2', /^line2$/m)", True),
        ("$distinct([1, 1.0, true, 'x', 'x', null, null])", [1, True, "x", None]),
        (
            "$distinct([{'a': 1, 'b': [1]}, {'b': [1.0], 'a': 1}, [1, 2], [1, 2], [2, 1]])",
            [{"a": 1, "b": [1]}, [1, 2], [2, 1]],
        ),
    ],
)
def test_regexes_replace_and_distinct_keep_jsonata_semantics(text: str, expected: Any) -> None:
    assert jsonata.compile_expression("{% " + text + " %}").evaluate({}) == expected


def test_distinct_and_a_literal_replace_are_linear() -> None:
    started = time.monotonic()
    expr = jsonata.compile_expression("{% $count($distinct($states.input)) %}")
    assert expr.evaluate({"states": {"input": list(range(100_000))}}) == 100_000
    expr = jsonata.compile_expression("{% $length($replace($pad('', 4000000, 'a'), 'a', 'b')) %}")
    assert expr.evaluate({}) == 4_000_000
    assert time.monotonic() - started < 10


def test_a_result_nested_too_deep_is_an_evaluation_error() -> None:
    expr = jsonata.compile_expression("{% $reduce($range(1, 30000, 1), function($a, $b){{'a': $a}}, 1) %}")
    with pytest.raises(jsonata.JsonataError):
        expr.evaluate({})


def test_a_jsonata_map_refuses_more_items_than_the_history_could_record() -> None:
    inner = {"StartAt": "p", "States": {"p": {"Type": "Pass", "End": True}}}
    state = {"Type": "Map", "Items": "{% $range(1, 25001, 1) %}", "ItemProcessor": inner, "End": True}
    run = execute(ja_machine({"M": state}))
    assert (run.status, run.error) == ("FAILED", "States.QueryEvaluationError")
    assert "25000" in (run.cause or "")


def test_one_assign_holds_at_most_256_kib_in_all() -> None:
    many = {f"v{i}": "{% $pad('', 100000, 'z') %}" for i in range(3)}
    run = execute(ja_machine({"P": {"Type": "Pass", "Assign": many, "End": True}}))
    assert (run.status, run.error) == ("FAILED", "States.DataLimitExceeded")
    two = {f"v{i}": "{% $pad('', 100000, 'z') %}" for i in range(2)}
    run = execute(ja_machine({"P": {"Type": "Pass", "Assign": two, "Output": "{% 'ok' %}", "End": True}}))
    assert (run.status, run.output) == ("SUCCEEDED", "ok"), run.cause
