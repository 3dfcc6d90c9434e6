"""Choice rules: comparisons, ``And``/``Or``/``Not``, compiled once and evaluated per visit.

Comparators (each also in a ``...Path`` form that compares with another value of the input):
String{Equals,LessThan,GreaterThan,LessThanEquals,GreaterThanEquals}, StringMatches (``*``
wildcards, ``\\*`` and ``\\\\`` escapes), Numeric*, BooleanEquals, Timestamp*, and the tests
IsPresent, IsNull, IsNumeric, IsString, IsBoolean, IsTimestamp.

A comparison whose variable has the wrong type is simply false (Step Functions never matches
a number against a string). A variable that is not in the input is an error
(``PathNotFound`` → ``States.Runtime``), except for ``IsPresent``. Strings compare by UTF-16
code units, like Java's ``compareTo``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mlgate.workflows.paths import JsonPath, PathError, PathNotFound, compile_path
from mlgate.workflows.values import is_number, parse_timestamp

__all__ = ["And", "ChoiceRule", "Comparison", "Condition", "Not", "Or", "compile_choice_rule"]

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": operator.eq,
    "LessThan": operator.lt,
    "GreaterThan": operator.gt,
    "LessThanEquals": operator.le,
    "GreaterThanEquals": operator.ge,
}
_FAMILIES = ("String", "Numeric", "Timestamp")
#: comparator name -> (family, relation)
_COMPARATORS: dict[str, tuple[str, str]] = {
    f"{family}{relation}": (family, relation) for family in _FAMILIES for relation in _ORDER
}
_COMPARATORS["BooleanEquals"] = ("Boolean", "Equals")
_COMPARATORS["StringMatches"] = ("String", "Matches")
_TESTS = ("IsPresent", "IsNull", "IsNumeric", "IsString", "IsBoolean", "IsTimestamp")
_OPERATORS = frozenset(
    [*_COMPARATORS, *(f"{name}Path" for name in _COMPARATORS if name != "StringMatches"), *_TESTS]
)


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-be", "surrogatepass")


def _coerce(family: str, value: Any) -> Any:
    """The comparable form of ``value`` for ``family``, or None if it has the wrong type."""
    if family == "String":
        return _utf16(value) if isinstance(value, str) else None
    if family == "Numeric":
        return value if is_number(value) else None
    if family == "Boolean":
        return value if isinstance(value, bool) else None
    return parse_timestamp(value)


def _wildcard(pattern: str) -> re.Pattern[str]:
    """``*`` matches any text; ``\\*`` is a literal star and ``\\\\`` a literal backslash."""
    parts: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            parts.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            parts.append(".*")
        else:
            parts.append(re.escape(char))
    if escaped:
        raise ValueError("ends with an open escape '\\'")
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True, slots=True)
class Comparison:
    """``{"Variable": ..., "<Operator>": value}``."""

    variable: JsonPath
    operator: str
    value: Any = None
    value_path: JsonPath | None = None
    pattern: re.Pattern[str] | None = None

    def evaluate(self, data: Any, context: Any) -> bool:
        try:
            actual = self.variable.find(data, context)
        except PathNotFound:
            if self.operator == "IsPresent":
                return self.value is False
            raise
        if self.operator in _TESTS:
            return self._test(actual) is self.value
        name = self.operator.removesuffix("Path") if self.value_path is not None else self.operator
        family, relation = _COMPARATORS[name]
        expected = self.value_path.find(data, context) if self.value_path is not None else self.value
        if relation == "Matches":
            assert self.pattern is not None
            return isinstance(actual, str) and self.pattern.fullmatch(actual) is not None
        left, right = _coerce(family, actual), _coerce(family, expected)
        if left is None or right is None:
            return False
        return _ORDER[relation](left, right)

    def _test(self, actual: Any) -> bool:
        if self.operator == "IsPresent":
            return True
        if self.operator == "IsNull":
            return actual is None
        if self.operator == "IsNumeric":
            return is_number(actual)
        if self.operator == "IsString":
            return isinstance(actual, str)
        if self.operator == "IsBoolean":
            return isinstance(actual, bool)
        return parse_timestamp(actual) is not None


@dataclass(frozen=True, slots=True)
class And:
    rules: tuple[Condition, ...]

    def evaluate(self, data: Any, context: Any) -> bool:
        return all(rule.evaluate(data, context) for rule in self.rules)


@dataclass(frozen=True, slots=True)
class Or:
    rules: tuple[Condition, ...]

    def evaluate(self, data: Any, context: Any) -> bool:
        return any(rule.evaluate(data, context) for rule in self.rules)


@dataclass(frozen=True, slots=True)
class Not:
    rule: Condition

    def evaluate(self, data: Any, context: Any) -> bool:
        return not self.rule.evaluate(data, context)


Condition = Comparison | And | Or | Not


@dataclass(frozen=True, slots=True)
class ChoiceRule:
    """A top-level rule: a condition and the state to go to when it holds."""

    condition: Condition
    next: str


def compile_choice_rule(raw: Any, report: Callable[[str], None], where: str) -> ChoiceRule | None:
    """Compile one element of ``Choices``; problems go to ``report``."""
    if not isinstance(raw, Mapping):
        report(f"{where}: a choice rule must be an object")
        return None
    next_state = raw.get("Next")
    if not isinstance(next_state, str):
        report(f"{where}: a choice rule needs a 'Next' state name")
    condition = _condition(raw, report, where, top=True)
    if condition is None or not isinstance(next_state, str):
        return None
    return ChoiceRule(condition, next_state)


def _condition(raw: Any, report: Callable[[str], None], where: str, *, top: bool) -> Condition | None:
    if not isinstance(raw, Mapping):
        report(f"{where}: a choice rule must be an object")
        return None
    allowed = {"Comment", "Next"}  # a nested Next is reported just below
    if not top and "Next" in raw:
        report(f"{where}: 'Next' is only allowed in a top-level choice rule")
    for combinator, kind in (("And", And), ("Or", Or)):
        if combinator in raw:
            _unknown(raw, allowed | {combinator}, report, where)
            rules = raw[combinator]
            if not isinstance(rules, list) or not rules:
                report(f"{where}.{combinator}: must be a non-empty array of choice rules")
                return None
            compiled = [
                _condition(rule, report, f"{where}.{combinator}[{i}]", top=False)
                for i, rule in enumerate(rules)
            ]
            if any(rule is None for rule in compiled):
                return None
            return kind(tuple(rule for rule in compiled if rule is not None))
    if "Not" in raw:
        _unknown(raw, allowed | {"Not"}, report, where)
        inner = _condition(raw["Not"], report, f"{where}.Not", top=False)
        return Not(inner) if inner is not None else None
    return _comparison(raw, allowed, report, where)


def _unknown(raw: Mapping[str, Any], allowed: set[str], report: Callable[[str], None], where: str) -> None:
    for key in raw:
        if key not in allowed:
            report(f"{where}: unexpected field '{key}' in a choice rule")


def _comparison(
    raw: Mapping[str, Any], allowed: set[str], report: Callable[[str], None], where: str
) -> Comparison | None:
    operators = [key for key in raw if key in _OPERATORS]
    if len(operators) != 1:
        found = ", ".join(operators) or "none"
        report(f"{where}: a choice rule needs one comparison operator, And, Or or Not (found {found})")
        return None
    _unknown(raw, allowed | {"Variable", operators[0]}, report, where)
    name, value = operators[0], raw[operators[0]]
    try:
        variable = compile_path(raw.get("Variable"))
    except PathError as exc:
        report(f"{where}.Variable: {exc}")
        return None
    if name in _TESTS:
        if not isinstance(value, bool):
            report(f"{where}.{name}: must be true or false")
            return None
        return Comparison(variable, name, value)
    if name.endswith("Path"):
        try:
            return Comparison(variable, name, value_path=compile_path(value))
        except PathError as exc:
            report(f"{where}.{name}: {exc}")
            return None
    family, relation = _COMPARATORS[name]
    if _coerce(family, value) is None:
        wanted = {"String": "a string", "Numeric": "a number", "Boolean": "true or false"}
        report(f"{where}.{name}: must be {wanted.get(family, 'a timestamp like 2016-08-18T17:33:00Z')}")
        return None
    if relation == "Matches":
        try:
            return Comparison(variable, name, value, pattern=_wildcard(value))
        except ValueError as exc:
            report(f"{where}.{name}: {exc}")
            return None
    return Comparison(variable, name, value)
