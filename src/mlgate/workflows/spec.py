"""State machine definitions: parse and validate Amazon States Language into frozen objects.

:func:`parse_definition` checks a whole definition at once and reports *every* problem in one
:class:`mlgate.errors.InvalidInput` (``details["errors"]``, one sentence each, located like
``States.Validate: Next 'X' is not a state``). Paths, payload templates, intrinsic functions
and choice rules are compiled here, once, so running a state does no parsing.

Supported: Task, Choice, Pass, Wait, Succeed, Fail, Parallel and Map (INLINE processing; the
``DISTRIBUTED`` mode is accepted and run inline, without ItemReader/ResultWriter), in both
query languages: JSONPath (the default) and JSONata (``"QueryLanguage": "JSONata"`` on the
state machine or on a state: ``Arguments``, ``Output``, ``Assign`` and variables, ``Condition``,
``Items``, ``{% … %}`` expressions; a JSONata state refuses the JSONPath fields, as AWS does, and
a JSONata state machine cannot have JSONPath states). Variables (``Assign``) exist in JSONata
states only; in a JSONPath state they are refused, as are Map runs over S3 (``ItemReader``).
Numbers that AWS wants as integers (``TimeoutSeconds``, ``IntervalSeconds``)
may be fractional here. ``Credentials`` and ``HeartbeatSeconds`` are validated and ignored.
State names must be unique across the whole machine, branches and processors included.

Example::

    machine = parse_definition({"StartAt": "Hi", "States": {"Hi": {"Type": "Pass", "End": True}}})
    machine.states["Hi"].type     # -> "Pass"
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from mlgate.errors import InvalidInput
from mlgate.workflows.choice import ChoiceRule, compile_choice_rule
from mlgate.workflows.failures import ALL
from mlgate.workflows.intrinsics import IntrinsicSyntaxError
from mlgate.workflows.jsonata import JsonataFields, JsonataRule, JsonataValue, compile_value, is_jsonata
from mlgate.workflows.model import (
    Catcher,
    ChoiceState,
    FailState,
    MapState,
    ParallelState,
    PassState,
    Retrier,
    State,
    StateMachine,
    SucceedState,
    TaskState,
    WaitState,
)
from mlgate.workflows.paths import ROOT, JsonPath, PathError, compile_path
from mlgate.workflows.template import Expression, Template, compile_expression, compile_template
from mlgate.workflows.values import is_number, parse_timestamp

__all__ = [
    "Catcher",
    "ChoiceState",
    "FailState",
    "MapState",
    "ParallelState",
    "PassState",
    "Retrier",
    "State",
    "StateMachine",
    "SucceedState",
    "TaskState",
    "WaitState",
    "parse_definition",
]

_MAX_NAME = 80
_MAX_DELAY = 31_622_400
_COMMON = frozenset({"Type", "Comment", "QueryLanguage"})
_FLOW = frozenset({"Next", "End"})
_IO = frozenset({"InputPath", "OutputPath"})
_RESULT = frozenset({"ResultSelector", "ResultPath", "Retry", "Catch"})
_FIELDS: dict[str, frozenset[str]] = {
    "Pass": _COMMON | _FLOW | _IO | {"Parameters", "Result", "ResultPath"},
    "Task": _COMMON
    | _FLOW
    | _IO
    | _RESULT
    | {"Resource", "Parameters", "TimeoutSeconds", "TimeoutSecondsPath", "HeartbeatSeconds"}
    | {"HeartbeatSecondsPath", "Credentials"},
    "Choice": _COMMON | _IO | {"Choices", "Default"},
    "Wait": _COMMON | _FLOW | _IO | {"Seconds", "Timestamp", "SecondsPath", "TimestampPath"},
    "Succeed": _COMMON | _IO,
    "Fail": _COMMON | {"Error", "Cause", "ErrorPath", "CausePath"},
    "Parallel": _COMMON | _FLOW | _IO | _RESULT | {"Branches", "Parameters"},
    "Map": _COMMON
    | _FLOW
    | _IO
    | _RESULT
    | {"ItemsPath", "ItemSelector", "Parameters", "ItemProcessor", "Iterator", "MaxConcurrency"}
    | {"MaxConcurrencyPath", "Label"},
}
_JSONATA_ONLY = {
    "Assign": "variables ('Assign') are supported in JSONata states only here "
    '(set "QueryLanguage": "JSONata"); pass data with ResultPath',
    "Arguments": '\'Arguments\' is a JSONata field: set "QueryLanguage": "JSONata" (or use Parameters)',
    "Output": '\'Output\' is a JSONata field: set "QueryLanguage": "JSONata" (or use OutputPath)',
    "Items": '\'Items\' is a JSONata field: set "QueryLanguage": "JSONata" (or use ItemsPath)',
}
_UNSUPPORTED = {
    "ItemReader": "'ItemReader' (Map runs over S3) is not supported; pass the items in the input",
    "ItemBatcher": "'ItemBatcher' is not supported",
    "ResultWriter": "'ResultWriter' is not supported",
    **dict.fromkeys(
        [
            "ToleratedFailureCount",
            "ToleratedFailurePercentage",
            "ToleratedFailureCountPath",
            "ToleratedFailurePercentagePath",
        ],
        "tolerated failures are not supported (any failed iteration fails the Map)",
    ),
}


_JA_FLOW_STATE = _COMMON | _FLOW | {"Output", "Assign"}
_JA_RETRIED = frozenset({"Retry", "Catch"})
_JA_FIELDS: dict[str, frozenset[str]] = {
    "Pass": _JA_FLOW_STATE,
    "Task": _JA_FLOW_STATE
    | _JA_RETRIED
    | {"Resource", "Arguments", "TimeoutSeconds", "HeartbeatSeconds", "Credentials"},
    "Choice": _COMMON | {"Choices", "Default", "Output", "Assign"},
    "Wait": _JA_FLOW_STATE | {"Seconds", "Timestamp"},
    "Succeed": _COMMON | {"Output"},
    "Fail": _COMMON | {"Error", "Cause"},
    "Parallel": _JA_FLOW_STATE | _JA_RETRIED | {"Branches", "Arguments"},
    "Map": _JA_FLOW_STATE
    | _JA_RETRIED
    | {"ItemProcessor", "Iterator", "Items", "ItemSelector", "MaxConcurrency", "Label"},
}
#: fields of the JSONPath query language, which a JSONata state refuses (as AWS does)
_JSONPATH_ONLY = frozenset(
    {
        "InputPath",
        "Parameters",
        "ResultSelector",
        "ResultPath",
        "OutputPath",
        "ItemsPath",
        "SecondsPath",
        "TimestampPath",
        "TimeoutSecondsPath",
        "HeartbeatSecondsPath",
        "ErrorPath",
        "CausePath",
        "MaxConcurrencyPath",
        "Result",
    }
)
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_definition(doc: dict[str, Any] | str) -> StateMachine:
    """Validate and compile a definition (a dict, or its JSON text).

    Raises ``InvalidInput("invalid state machine definition", details={"errors": [...]})``
    listing every problem found.
    """
    if isinstance(doc, str | bytes):
        try:
            doc = json.loads(doc)
        except ValueError as exc:
            raise _invalid([f"definition: not valid JSON: {exc}"]) from None
    parser = _Parser()
    machine = parser.machine(doc, "", top=True)
    if parser.errors:
        raise _invalid(parser.errors)
    return machine


def _invalid(errors: list[str]) -> InvalidInput:
    return InvalidInput("invalid state machine definition", details={"errors": errors})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Parser:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.names: dict[str, str] = {}
        #: the state machine's QueryLanguage, which its states inherit
        self.language = "JSONPath"

    def report(self, message: str) -> None:
        self.errors.append(message)

    # -- machines -------------------------------------------------------------------------

    def machine(self, raw: Any, where: str, *, top: bool = False, processor: bool = False) -> StateMachine:
        label = where or "definition"
        if not isinstance(raw, dict):
            self.report(f"{label}: a state machine must be a JSON object")
            return StateMachine("", {}, None, "", {})
        allowed = {"StartAt", "States", "Comment"}
        allowed |= {"TimeoutSeconds", "Version", "QueryLanguage"} if top else set()
        allowed |= {"ProcessorConfig"} if processor else set()
        for key in raw:
            if key not in allowed:
                self.report(f"{label}: unknown field '{key}'")
        if top:
            self.language = self.query_language(raw, label)
        elif "QueryLanguage" in raw:
            self.report(f"{label}: QueryLanguage is set on the state machine or on a state")
        if processor and "ProcessorConfig" in raw:
            config = raw["ProcessorConfig"]
            mode = config.get("Mode", "INLINE") if isinstance(config, dict) else None
            if mode not in ("INLINE", "DISTRIBUTED"):
                self.report(f"{label}.ProcessorConfig: Mode must be INLINE or DISTRIBUTED")
        timeout = raw.get("TimeoutSeconds")
        if timeout is not None and not (is_number(timeout) and timeout > 0):
            self.report(f"{label}.TimeoutSeconds: must be a positive number")
            timeout = None
        comment = raw.get("Comment", "")
        prefix = f"{where}." if where else ""
        start_at = raw.get("StartAt")
        states_raw = raw.get("States")
        if "StartAt" not in raw:
            self.report(f"{prefix}StartAt: missing")
        elif not isinstance(start_at, str):
            self.report(f"{prefix}StartAt: must be a state name")
        if "States" not in raw:
            self.report(f"{prefix}States: missing")
            states_raw = {}
        elif not isinstance(states_raw, dict) or not states_raw:
            self.report(f"{prefix}States: must be a non-empty object of states")
            states_raw = {}
        states: dict[str, State] = {}
        for name, state_raw in states_raw.items():
            state = self.state(name, state_raw, f"{prefix}States.{name}")
            if state is not None:
                states[name] = state
        if isinstance(start_at, str) and states_raw and start_at not in states_raw:
            self.report(f"{prefix}StartAt: '{start_at}' is not a state")
        self.check_graph(states, start_at if isinstance(start_at, str) else None, prefix, set(states_raw))
        return StateMachine(
            start_at=start_at if isinstance(start_at, str) else "",
            states=states,
            timeout_seconds=float(timeout) if timeout is not None else None,
            comment=comment if isinstance(comment, str) else "",
            raw=raw,
        )

    def query_language(self, raw: Mapping[str, Any], where: str, default: str = "JSONPath") -> str:
        language = raw.get("QueryLanguage", default)
        if language not in ("JSONPath", "JSONata"):
            self.report(f"{where}.QueryLanguage: must be JSONPath or JSONata (got {language!r})")
            return default
        return str(language)

    def check_graph(
        self, states: Mapping[str, State], start_at: str | None, prefix: str, names: set[str]
    ) -> None:
        for state in states.values():
            where = f"{prefix}States.{state.name}"
            for target in state.transitions():
                if target not in names:
                    field_name = (
                        "Default" if isinstance(state, ChoiceState) and target == state.default else "Next"
                    )
                    self.report(f"{where}: {field_name} '{target}' is not a state")
        if start_at is None or start_at not in states:
            return
        seen = {start_at}
        todo = [start_at]
        while todo:
            current = states.get(todo.pop())
            for target in current.transitions() if current is not None else []:
                if target in names and target not in seen:
                    seen.add(target)
                    todo.append(target)
        for name in states:
            if name not in seen:
                self.report(f"{prefix}States.{name}: unreachable from StartAt '{start_at}'")

    # -- states ---------------------------------------------------------------------------

    def state(self, name: str, raw: Any, where: str) -> State | None:
        if not name or len(name) > _MAX_NAME:
            self.report(f"{where}: a state name must have 1 to {_MAX_NAME} characters")
        if name in self.names:
            self.report(f"{where}: state name '{name}' is already used at {self.names[name]}")
        self.names.setdefault(name, where)
        if not isinstance(raw, dict):
            self.report(f"{where}: a state must be a JSON object")
            return None
        kind = raw.get("Type")
        if kind not in _FIELDS:
            self.report(f"{where}: unknown Type {kind!r} (use one of {', '.join(_FIELDS)})")
            return None
        language = self.query_language(raw, where, self.language)
        if language == "JSONPath" and self.language == "JSONata":
            self.report(f"{where}.QueryLanguage: a state cannot use JSONPath in a JSONata state machine")
        jsonata = language == "JSONata"
        for key in raw:
            if key in _UNSUPPORTED:
                self.report(f"{where}: {_UNSUPPORTED[key]}")
            elif jsonata and key in _JSONPATH_ONLY:
                self.report(
                    f"{where}: '{key}' is a JSONPath field; a JSONata state uses Arguments and Output"
                )
            elif not jsonata and key in _JSONATA_ONLY:
                self.report(f"{where}: {_JSONATA_ONLY[key]}")
            elif key not in (_JA_FIELDS if jsonata else _FIELDS)[kind] and key not in _FLOW:
                self.report(f"{where}: unknown field '{key}' for a {kind} state")  # Next/End: flow()
        if jsonata:
            return self.jsonata_state(name, raw, where, kind)
        common: dict[str, Any] = {
            "name": name,
            "type": kind,
            "comment": self.text(raw, "Comment", where) or "",
        }
        common.update(self.flow(raw, where, kind))
        if "InputPath" in _FIELDS[kind]:
            common["input_path"] = self.nullable_path(raw, "InputPath", where)
            common["output_path"] = self.nullable_path(raw, "OutputPath", where)
        builder: Callable[[dict[str, Any], str, dict[str, Any]], State] = getattr(
            self, f"state_{kind.lower()}"
        )
        return builder(raw, where, common)

    def flow(self, raw: Mapping[str, Any], where: str, kind: str) -> dict[str, Any]:
        has_next, end = "Next" in raw, raw.get("End")
        if kind in ("Choice", "Succeed", "Fail"):
            if has_next or "End" in raw:
                self.report(f"{where}: a {kind} state cannot have Next or End")
            return {}
        if has_next and end is True:
            self.report(f"{where}: has both Next and End (use one)")
        elif not has_next and end is not True:
            self.report(f'{where}: needs Next or "End": true')
        if "End" in raw and not isinstance(end, bool):
            self.report(f"{where}.End: must be true or false")
        next_state = raw.get("Next")
        if has_next and not isinstance(next_state, str):
            self.report(f"{where}.Next: must be a state name")
            next_state = None
        return {"next": next_state, "end": end is True and not has_next}

    def state_pass(self, raw: dict[str, Any], where: str, common: dict[str, Any]) -> State:
        return PassState(
            **common,
            parameters=self.template(raw, "Parameters", where),
            has_result="Result" in raw,
            result=raw.get("Result"),
            result_path=self.result_path(raw, "ResultPath", where),
        )

    def state_task(self, raw: dict[str, Any], where: str, common: dict[str, Any]) -> State:
        resource = raw.get("Resource")
        if not isinstance(resource, str) or not resource:
            self.report(f"{where}.Resource: missing (a Task needs a Resource string)")
            resource = ""
        timeout = raw.get("TimeoutSeconds")
        if timeout is not None and not (is_number(timeout) and timeout > 0):
            self.report(f"{where}.TimeoutSeconds: must be a positive number")
            timeout = None
        if "TimeoutSeconds" in raw and "TimeoutSecondsPath" in raw:
            self.report(f"{where}: use TimeoutSeconds or TimeoutSecondsPath, not both")
        heartbeat = raw.get("HeartbeatSeconds")
        if heartbeat is not None and not (is_number(heartbeat) and heartbeat > 0):
            self.report(f"{where}.HeartbeatSeconds: must be a positive number")
        self.reference_path(raw, "HeartbeatSecondsPath", where)  # heartbeats do not apply: validated only
        return TaskState(
            **common,
            **self.resulting(raw, where),
            resource=resource,
            timeout_seconds=float(timeout) if timeout is not None else None,
            timeout_seconds_path=self.reference_path(raw, "TimeoutSecondsPath", where),
        )

    def state_choice(self, raw: dict[str, Any], where: str, common: dict[str, Any]) -> State:
        choices = raw.get("Choices")
        rules: list[ChoiceRule] = []
        if not isinstance(choices, list) or not choices:
            self.report(f"{where}.Choices: a Choice state needs a non-empty array of Choices")
        else:
            for i, rule_raw in enumerate(choices):
                rule = compile_choice_rule(rule_raw, self.report, f"{where}.Choices[{i}]")
                if rule is not None:
                    rules.append(rule)
        default = raw.get("Default")
        if default is not None and not isinstance(default, str):
            self.report(f"{where}.Default: must be a state name")
            default = None
        return ChoiceState(**common, choices=tuple(rules), default=default)

    def state_wait(self, raw: dict[str, Any], where: str, common: dict[str, Any]) -> State:
        given = [key for key in ("Seconds", "Timestamp", "SecondsPath", "TimestampPath") if key in raw]
        if len(given) != 1:
            self.report(
                f"{where}: a Wait state needs exactly one of Seconds, Timestamp, SecondsPath, TimestampPath"
            )
        seconds = raw.get("Seconds")
        if seconds is not None and not (is_number(seconds) and seconds >= 0):
            self.report(f"{where}.Seconds: must be a non-negative number")
            seconds = None
        timestamp = None
        if "Timestamp" in raw:
            timestamp = parse_timestamp(raw["Timestamp"])
            if timestamp is None:
                self.report(f"{where}.Timestamp: must be a timestamp like 2016-03-14T01:59:00Z")
        return WaitState(
            **common,
            seconds=float(seconds) if seconds is not None else None,
            timestamp=timestamp,
            seconds_path=self.reference_path(raw, "SecondsPath", where),
            timestamp_path=self.reference_path(raw, "TimestampPath", where),
        )

    def state_succeed(self, raw: dict[str, Any], where: str, common: dict[str, Any]) -> State:
        return SucceedState(**common)

    def state_fail(self, raw: dict[str, Any], where: str, common: dict[str, Any]) -> State:
        for plain, path in (("Error", "ErrorPath"), ("Cause", "CausePath")):
            if plain in raw and path in raw:
                self.report(f"{where}: use {plain} or {path}, not both")
        return FailState(
            **common,
            error=self.text(raw, "Error", where),
            cause=self.text(raw, "Cause", where),
            error_path=self.expression(raw, "ErrorPath", where),
            cause_path=self.expression(raw, "CausePath", where),
        )

    def state_parallel(self, raw: dict[str, Any], where: str, common: dict[str, Any]) -> State:
        branches_raw = raw.get("Branches")
        branches: list[StateMachine] = []
        if not isinstance(branches_raw, list) or not branches_raw:
            self.report(f"{where}.Branches: a Parallel state needs a non-empty array of Branches")
        else:
            branches = [self.machine(b, f"{where}.Branches[{i}]") for i, b in enumerate(branches_raw)]
        return ParallelState(**common, **self.resulting(raw, where), branches=tuple(branches))

    def state_map(self, raw: dict[str, Any], where: str, common: dict[str, Any]) -> State:
        if "ItemProcessor" in raw and "Iterator" in raw:
            self.report(f"{where}: use ItemProcessor or the legacy Iterator, not both")
        key = "ItemProcessor" if "ItemProcessor" in raw else "Iterator"
        processor = None
        if key not in raw:
            self.report(f"{where}: a Map state needs an ItemProcessor (or the legacy Iterator)")
        else:
            processor = self.machine(raw[key], f"{where}.{key}", processor=key == "ItemProcessor")
        if "ItemSelector" in raw and "Parameters" in raw:
            self.report(f"{where}: use ItemSelector or the legacy Parameters, not both")
        concurrency = raw.get("MaxConcurrency", 0)
        if not (_is_int(concurrency) and concurrency >= 0):
            self.report(f"{where}.MaxConcurrency: must be a non-negative integer (0 = no limit)")
            concurrency = 0
        if "MaxConcurrency" in raw and "MaxConcurrencyPath" in raw:
            self.report(f"{where}: use MaxConcurrency or MaxConcurrencyPath, not both")
        resulting = self.resulting(
            raw, where, parameters="ItemSelector" if "ItemSelector" in raw else "Parameters"
        )
        return MapState(
            **common,
            **resulting,
            processor=processor,
            items_path=self.reference_path(raw, "ItemsPath", where) or ROOT,
            max_concurrency=concurrency,
            max_concurrency_path=self.reference_path(raw, "MaxConcurrencyPath", where),
        )

    # -- JSONata states -------------------------------------------------------------------

    def jsonata_state(self, name: str, raw: dict[str, Any], where: str, kind: str) -> State:
        """A ``QueryLanguage: "JSONata"`` state: its JSONata fields, compiled, in ``state.ja``."""
        common: dict[str, Any] = {
            "name": name,
            "type": kind,
            "comment": self.text(raw, "Comment", where) or "",
        }
        common.update(self.flow(raw, where, kind))
        value = functools.partial(self.ja_value, raw, where=where)
        fields: dict[str, Any] = {"output": value("Output"), "assign": self.ja_assign(raw, where)}
        retried: dict[str, Any] = {}
        if kind in ("Task", "Parallel", "Map"):
            retried = {
                "retry": self.retriers(raw.get("Retry", []), f"{where}.Retry"),
                "catch": self.catchers(raw.get("Catch", []), f"{where}.Catch", jsonata=True),
            }
        if kind in ("Task", "Parallel"):
            fields["arguments"] = value("Arguments")
        if kind == "Pass":
            return PassState(**common, ja=JsonataFields(**fields))
        if kind == "Succeed":
            return SucceedState(**common, ja=JsonataFields(**fields))
        if kind == "Fail":
            for key in ("Error", "Cause"):
                if key in raw and not isinstance(raw[key], str):
                    self.report(f"{where}.{key}: must be a string (or a JSONata expression)")
            return FailState(**common, ja=JsonataFields(error=value("Error"), cause=value("Cause")))
        if kind == "Task":
            resource = raw.get("Resource")
            if not isinstance(resource, str) or not resource:
                self.report(f"{where}.Resource: missing (a Task needs a Resource string)")
                resource = ""
            fields["timeout_seconds"] = self.ja_number(raw, "TimeoutSeconds", where, positive=True)
            self.ja_number(raw, "HeartbeatSeconds", where, positive=True)
            return TaskState(**common, **retried, resource=resource, ja=JsonataFields(**fields))
        if kind == "Choice":
            return self.ja_choice(raw, where, common, fields)
        if kind == "Wait":
            given = [key for key in ("Seconds", "Timestamp") if key in raw]
            if len(given) != 1:
                self.report(f"{where}: a Wait state needs exactly one of Seconds, Timestamp")
            fields["seconds"] = self.ja_number(raw, "Seconds", where, positive=False)
            timestamp = raw.get("Timestamp")
            if "Timestamp" in raw and not is_jsonata(timestamp) and parse_timestamp(timestamp) is None:
                self.report(f"{where}.Timestamp: must be an RFC 3339 timestamp (or a JSONata expression)")
            fields["timestamp"] = value("Timestamp")
            return WaitState(**common, ja=JsonataFields(**fields))
        if kind == "Parallel":
            branches_raw = raw.get("Branches")
            branches: list[StateMachine] = []
            if not isinstance(branches_raw, list) or not branches_raw:
                self.report(f"{where}.Branches: a Parallel state needs a non-empty array of Branches")
            else:
                branches = [self.machine(b, f"{where}.Branches[{i}]") for i, b in enumerate(branches_raw)]
            return ParallelState(**common, **retried, branches=tuple(branches), ja=JsonataFields(**fields))
        # Map
        if "ItemProcessor" in raw and "Iterator" in raw:
            self.report(f"{where}: use ItemProcessor or the legacy Iterator, not both")
        key = "ItemProcessor" if "ItemProcessor" in raw else "Iterator"
        processor = None
        if key not in raw:
            self.report(f"{where}: a Map state needs an ItemProcessor (or the legacy Iterator)")
        else:
            processor = self.machine(raw[key], f"{where}.{key}", processor=key == "ItemProcessor")
        items = raw.get("Items")
        if "Items" in raw and not (is_jsonata(items) or isinstance(items, list)):
            self.report(f"{where}.Items: must be an array or a JSONata expression")
        fields["items"] = value("Items")
        fields["item_selector"] = value("ItemSelector")
        concurrency = raw.get("MaxConcurrency")
        if (
            "MaxConcurrency" in raw
            and not is_jsonata(concurrency)
            and not (isinstance(concurrency, int) and not isinstance(concurrency, bool) and concurrency >= 0)
        ):
            self.report(f"{where}.MaxConcurrency: must be a non-negative integer (or a JSONata expression)")
        fields["max_concurrency"] = value("MaxConcurrency")
        return MapState(**common, **retried, processor=processor, ja=JsonataFields(**fields))

    def ja_choice(
        self, raw: dict[str, Any], where: str, common: dict[str, Any], fields: dict[str, Any]
    ) -> State:
        choices = raw.get("Choices")
        rules: list[JsonataRule] = []
        if not isinstance(choices, list) or not choices:
            self.report(f"{where}.Choices: a Choice state needs a non-empty array of Choices")
            choices = []
        for i, rule in enumerate(choices):
            here = f"{where}.Choices[{i}]"
            if not isinstance(rule, dict):
                self.report(f"{here}: a choice rule must be an object")
                continue
            for key in rule:
                if key not in ("Condition", "Next", "Assign", "Output", "Comment"):
                    hint = (
                        " (a JSONata rule has a Condition)"
                        if key not in ("Variable", "And", "Or", "Not")
                        else ""
                    )
                    if key in ("Variable", "And", "Or", "Not"):
                        hint = "; a JSONata rule has a Condition expression instead"
                    self.report(f"{here}: unknown field '{key}' in a JSONata choice rule{hint}")
            condition = rule.get("Condition")
            target = rule.get("Next")
            if not is_jsonata(condition) and not isinstance(condition, bool):
                self.report(f"{here}.Condition: must be a JSONata expression '{{% … %}}' (or true/false)")
                continue
            if not isinstance(target, str):
                self.report(f"{here}: a choice rule needs a 'Next' state name")
                continue
            rules.append(
                JsonataRule(
                    condition=compile_value(condition, self.report, f"{here}.Condition"),
                    next=target,
                    assign=self.ja_assign(rule, here),
                    output=self.ja_value(rule, "Output", where=here),
                )
            )
        default = raw.get("Default")
        if default is not None and not isinstance(default, str):
            self.report(f"{where}.Default: must be a state name")
            default = None
        return ChoiceState(**common, default=default, ja=JsonataFields(**fields, rules=tuple(rules)))

    def ja_value(self, raw: Mapping[str, Any], key: str, where: str) -> JsonataValue | None:
        if key not in raw:
            return None
        return compile_value(raw[key], self.report, f"{where}.{key}")

    def ja_number(
        self, raw: Mapping[str, Any], key: str, where: str, *, positive: bool
    ) -> JsonataValue | None:
        if key not in raw:
            return None
        value = raw[key]
        if not is_jsonata(value) and not (is_number(value) and (value > 0 if positive else value >= 0)):
            kind = "a positive" if positive else "a non-negative"
            self.report(f"{where}.{key}: must be {kind} number (or a JSONata expression)")
            return None
        return compile_value(value, self.report, f"{where}.{key}")

    def ja_assign(self, raw: Mapping[str, Any], where: str) -> JsonataValue | None:
        if "Assign" not in raw:
            return None
        assign = raw["Assign"]
        if not isinstance(assign, dict):
            self.report(f"{where}.Assign: must be an object of variable names to values")
            return None
        for name in assign:
            if (
                not isinstance(name, str)
                or not _VARIABLE.match(name)
                or name == "states"
                or name.startswith("__")
            ):
                self.report(
                    f"{where}.Assign: '{name}' is not a variable name (letters, digits and _, "
                    "not starting with a digit or '__'; 'states' is reserved)"
                )
        return compile_value(assign, self.report, f"{where}.Assign")

    # -- fields ---------------------------------------------------------------------------

    def resulting(self, raw: dict[str, Any], where: str, parameters: str = "Parameters") -> dict[str, Any]:
        return {
            "parameters": self.template(raw, parameters, where),
            "result_selector": self.template(raw, "ResultSelector", where),
            "result_path": self.result_path(raw, "ResultPath", where),
            "retry": self.retriers(raw.get("Retry", []), f"{where}.Retry"),
            "catch": self.catchers(raw.get("Catch", []), f"{where}.Catch"),
        }

    def text(self, raw: Mapping[str, Any], key: str, where: str) -> str | None:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            self.report(f"{where}.{key}: must be a string")
            return None
        return value

    def template(self, raw: Mapping[str, Any], key: str, where: str) -> Template | None:
        if key not in raw:
            return None
        return compile_template(raw[key], self.report, f"{where}.{key}")

    def path(self, value: Any, where: str) -> JsonPath | None:
        try:
            return compile_path(value)
        except PathError as exc:
            self.report(f"{where}: {exc}")
            return None

    def nullable_path(self, raw: Mapping[str, Any], key: str, where: str) -> JsonPath | None:
        """``InputPath``/``OutputPath``: absent means ``$``, ``null`` means an empty object."""
        if key not in raw:
            return ROOT
        if raw[key] is None:
            return None
        return self.path(raw[key], f"{where}.{key}") or ROOT

    def reference_path(self, raw: Mapping[str, Any], key: str, where: str) -> JsonPath | None:
        if key not in raw:
            return None
        path = self.path(raw[key], f"{where}.{key}")
        if path is not None and not path.is_reference:
            self.report(f"{where}.{key}: '{path.text}' must be a reference path (only .name and [n] steps)")
        return path

    def result_path(self, raw: Mapping[str, Any], key: str, where: str) -> JsonPath | None:
        """``ResultPath``: absent means ``$``, ``null`` discards the result."""
        if key not in raw:
            return ROOT
        if raw[key] is None:
            return None
        path = self.reference_path(raw, key, where)
        if path is not None and path.context:
            self.report(f"{where}.{key}: cannot write into the context object ($$)")
        return path or ROOT

    def expression(self, raw: Mapping[str, Any], key: str, where: str) -> Expression | None:
        if key not in raw:
            return None
        try:
            return compile_expression(raw[key])
        except (PathError, IntrinsicSyntaxError) as exc:
            self.report(f"{where}.{key}: {exc}")
            return None

    def error_equals(self, raw: Mapping[str, Any], where: str, last: bool) -> tuple[str, ...]:
        names = raw.get("ErrorEquals")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            self.report(f"{where}.ErrorEquals: must be a non-empty array of error names")
            return ()
        if ALL in names and (len(names) > 1 or not last):
            self.report(f"{where}.ErrorEquals: {ALL} must appear alone, in the last element")
        return tuple(names)

    def retriers(self, raw: Any, where: str) -> tuple[Retrier, ...]:
        if not isinstance(raw, list):
            self.report(f"{where}: must be an array of retriers")
            return ()
        found: list[Retrier] = []
        known = {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds"}
        known |= {"JitterStrategy", "Comment"}
        for i, item in enumerate(raw):
            here = f"{where}[{i}]"
            if not isinstance(item, dict):
                self.report(f"{here}: a retrier must be an object")
                continue
            for key in item:
                if key not in known:
                    self.report(f"{here}: unknown field '{key}' in a retrier")
            errors = self.error_equals(item, here, last=i == len(raw) - 1)
            interval = item.get("IntervalSeconds", 1)
            if not (is_number(interval) and interval > 0):
                self.report(f"{here}.IntervalSeconds: must be a positive number")
                interval = 1
            attempts = item.get("MaxAttempts", 3)
            if not (_is_int(attempts) and attempts >= 0):
                self.report(f"{here}.MaxAttempts: must be a non-negative integer")
                attempts = 3
            backoff = item.get("BackoffRate", 2.0)
            if not (is_number(backoff) and backoff >= 1.0):
                self.report(f"{here}.BackoffRate: must be a number >= 1.0")
                backoff = 2.0
            max_delay = item.get("MaxDelaySeconds")
            if max_delay is not None and not (is_number(max_delay) and 0 < max_delay <= _MAX_DELAY):
                self.report(f"{here}.MaxDelaySeconds: must be a positive number up to {_MAX_DELAY}")
                max_delay = None
            jitter = item.get("JitterStrategy", "NONE")
            if jitter not in ("FULL", "NONE"):
                self.report(f"{here}.JitterStrategy: must be FULL or NONE")
            found.append(
                Retrier(
                    error_equals=errors,
                    interval_seconds=float(interval),
                    max_attempts=attempts,
                    backoff_rate=float(backoff),
                    max_delay_seconds=float(max_delay) if max_delay is not None else None,
                    jitter=jitter == "FULL",
                )
            )
        return tuple(found)

    def catchers(self, raw: Any, where: str, *, jsonata: bool = False) -> tuple[Catcher, ...]:
        if not isinstance(raw, list):
            self.report(f"{where}: must be an array of catchers")
            return ()
        found: list[Catcher] = []
        for i, item in enumerate(raw):
            here = f"{where}[{i}]"
            if not isinstance(item, dict):
                self.report(f"{here}: a catcher must be an object")
                continue
            known = (
                "ErrorEquals",
                "Next",
                "Comment",
                *(("Output", "Assign") if jsonata else ("ResultPath",)),
            )
            for key in item:
                if not jsonata and key in _JSONATA_ONLY:
                    self.report(f"{here}: {_JSONATA_ONLY[key]}")
                elif jsonata and key in _JSONPATH_ONLY:
                    self.report(f"{here}: '{key}' is a JSONPath field; a JSONata catcher uses Output")
                elif key not in known:
                    self.report(f"{here}: unknown field '{key}' in a catcher")
            errors = self.error_equals(item, here, last=i == len(raw) - 1)
            target = item.get("Next")
            if not isinstance(target, str):
                self.report(f"{here}.Next: a catcher needs a Next state name")
                continue
            if jsonata:
                fields = JsonataFields(
                    output=self.ja_value(item, "Output", here), assign=self.ja_assign(item, here)
                )
                found.append(Catcher(errors, target, ROOT, fields))
            else:
                found.append(Catcher(errors, target, self.result_path(item, "ResultPath", here)))
        return tuple(found)
