"""Payload templates: ``Parameters``, ``ResultSelector`` and ``ItemSelector``.

A template is any JSON value; inside it (however deeply nested, in objects and arrays) a key
ending in ``.$`` takes its value from a path (``"size.$": "$.product.details.size"``), the
context object (``"id.$": "$$.Execution.Id"``) or an intrinsic function
(``"msg.$": "States.Format('Hi {}', $.name)"``), and loses its ``.$`` suffix. Templates are
compiled once; static parts are copied on each use so no execution can change the definition.

Example::

    template = compile_template({"comment": "static", "who.$": "$.name"}, errors.append, "Parameters")
    template.evaluate({"name": "Ana"})    # -> {"comment": "static", "who": "Ana"}
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlgate.workflows.intrinsics import Intrinsic, IntrinsicSyntaxError, compile_intrinsic, is_intrinsic
from mlgate.workflows.paths import JsonPath, PathNotFound, PathSyntaxError, compile_path
from mlgate.workflows.values import copy_json

__all__ = ["Expression", "Template", "compile_expression", "compile_template", "evaluate_expression"]

#: A path or an intrinsic invocation: what a ``".$"`` key (or ``ErrorPath``) may hold.
Expression = JsonPath | Intrinsic


def compile_expression(text: Any, *, intrinsics: bool = True) -> Expression:
    """Compile a path or (if allowed) an intrinsic; raises ``ValueError`` with a readable message."""
    if intrinsics and is_intrinsic(text):
        return compile_intrinsic(text.strip())
    if not isinstance(text, str):
        raise PathSyntaxError(f"{text!r} is not a path: a path is a string starting with '$' or '$$'")
    return compile_path(text)


def evaluate_expression(
    expression: Expression, data: Any, context: Any, rng: random.Random | None = None
) -> Any:
    """Evaluate a compiled path or intrinsic (raises ``PathNotFound`` or ``IntrinsicError``)."""
    if isinstance(expression, JsonPath):
        return expression.find(data, context)
    return expression.evaluate(data, context, rng=rng)


@dataclass(frozen=True, slots=True)
class _Static:
    value: Any


@dataclass(frozen=True, slots=True)
class _Dynamic:
    expression: Expression


@dataclass(frozen=True, slots=True)
class _Object:
    fields: tuple[tuple[str, _Node], ...]


@dataclass(frozen=True, slots=True)
class _Array:
    items: tuple[_Node, ...]


_Node = _Static | _Dynamic | _Object | _Array


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled payload template."""

    root: _Node

    def evaluate(self, data: Any, context: Any = None, *, rng: random.Random | None = None) -> Any:
        """Build the payload (raises ``PathNotFound`` or ``IntrinsicError``)."""
        return _build(self.root, data, context, rng)


def _build(node: _Node, data: Any, context: Any, rng: random.Random | None) -> Any:
    if isinstance(node, _Static):
        return copy_json(node.value)
    if isinstance(node, _Dynamic):
        return evaluate_expression(node.expression, data, context, rng)
    if isinstance(node, _Object):
        built = {}
        for key, child in node.fields:
            try:
                built[key] = _build(child, data, context, rng)
            except PathNotFound as exc:
                if exc.field is None and isinstance(child, _Dynamic):
                    exc.field = f"{key}.$"
                raise
        return built
    return [_build(child, data, context, rng) for child in node.items]


def compile_template(raw: Any, report: Callable[[str], None], where: str) -> Template:
    """Compile ``raw``; every problem is passed to ``report`` (prefixed by ``where``)."""
    return Template(_compile(raw, report, where))


def _compile(raw: Any, report: Callable[[str], None], where: str) -> _Node:
    if isinstance(raw, dict):
        fields: list[tuple[str, _Node]] = []
        dynamic = False
        for key, value in raw.items():
            if isinstance(key, str) and key.endswith(".$"):
                dynamic = True
                try:
                    fields.append((key[:-2], _Dynamic(compile_expression(value))))
                except (PathSyntaxError, IntrinsicSyntaxError) as exc:
                    report(f"{where}.{key}: {exc}")
            else:
                child = _compile(value, report, f"{where}.{key}")
                dynamic = dynamic or not isinstance(child, _Static)
                fields.append((key, child))
        return _Object(tuple(fields)) if dynamic else _Static(raw)
    if isinstance(raw, list):
        items = [_compile(value, report, f"{where}[{i}]") for i, value in enumerate(raw)]
        if all(isinstance(item, _Static) for item in items):
            return _Static(raw)
        return _Array(tuple(items))
    return _Static(raw)
