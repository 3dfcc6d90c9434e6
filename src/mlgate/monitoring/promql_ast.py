"""The PromQL subset's expression tree: label sets, matchers, the node types, operator sets.

:func:`mlgate.monitoring.promql_parse.parse` builds it, :func:`mlgate.monitoring.promql.evaluate`
evaluates it; :mod:`mlgate.monitoring.promql` re-exports the public names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ARITHMETIC",
    "COMPARISON",
    "SET_OPERATORS",
    "Aggregate",
    "Binary",
    "Call",
    "Expr",
    "Labels",
    "Matcher",
    "Number",
    "PromQLError",
    "Selector",
    "compile_regex",
    "is_scalar",
    "labels_of",
    "metric_names",
]

#: a label set: sorted (name, value) pairs, ``__name__`` included while a series keeps its name
Labels = tuple[tuple[str, str], ...]


class PromQLError(ValueError):
    """An expression outside the supported subset, or not PromQL at all."""


def labels_of(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted((k, v) for k, v in mapping.items() if v != ""))


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = compile_regex(self.value).fullmatch(value) is not None
        return hit if self.op == "=~" else not hit


_REGEXES: dict[str, re.Pattern[str]] = {}


def compile_regex(pattern: str) -> re.Pattern[str]:
    compiled = _REGEXES.get(pattern)
    if compiled is None:
        try:
            compiled = _REGEXES[pattern] = re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise PromQLError(f"invalid regular expression {pattern!r}: {exc}") from None
    return compiled


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class Selector:
    name: str | None
    matchers: tuple[Matcher, ...]
    range_s: float | None = None  # a range selector: [5m]


@dataclass(frozen=True)
class Call:
    func: str  # rate | increase | histogram_quantile
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Aggregate:
    op: str  # sum | max | min | avg | count
    expr: Expr
    grouping: tuple[str, ...] = ()
    without: bool = False


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / > < >= <= == != and or unless
    lhs: Expr
    rhs: Expr
    on: tuple[str, ...] | None = None  # on(...)
    ignoring: tuple[str, ...] | None = None  # ignoring(...)


Expr = Number | Selector | Call | Aggregate | Binary

ARITHMETIC = {"+", "-", "*", "/"}
COMPARISON = {">", "<", ">=", "<=", "==", "!="}
SET_OPERATORS = {"and", "or", "unless"}


def is_scalar(expr: Expr) -> bool:
    if isinstance(expr, Number):
        return True
    if isinstance(expr, Binary) and expr.op in ARITHMETIC:
        return is_scalar(expr.lhs) and is_scalar(expr.rhs)
    return False


def metric_names(expr: Expr) -> set[str] | None:
    """The metric names an expression reads (None: a selector without a fixed name reads any)."""
    names: set[str] = set()

    def walk(e: Expr) -> bool:
        if isinstance(e, Selector):
            if e.name is None:
                return False
            names.add(e.name)
            return True
        if isinstance(e, Binary):
            return walk(e.lhs) and walk(e.rhs)
        if isinstance(e, Aggregate):
            return walk(e.expr)
        if isinstance(e, Call):
            return all(walk(a) for a in e.args)
        return True

    return names if walk(expr) else None
