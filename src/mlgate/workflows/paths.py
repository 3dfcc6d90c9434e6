"""JSONPath as the Amazon States Language uses it — the one module that touches jsonpath-ng.

A path starts with ``$`` (the state's data) or ``$$`` (the context object). Paths are compiled
once, when a definition is parsed. jsonpath-ng parses every path; *reference paths* (only
``.name``, ``['name']`` and ``[n]`` steps, so they name one node) are then evaluated by a plain
walk over their steps, which is what nearly every path in a real definition is, and the only
kind ``ResultPath`` and ``ItemsPath`` accept. Other paths (``[*]``, slices, filters, ``..``)
are evaluated by jsonpath-ng and yield an array of every match, as Step Functions does.

Example::

    path = compile_path("$.detail.shipped[0]")
    path.find({"detail": {"shipped": [1, 2]}})      # -> 1
    compile_path("$.a.b").assign({"x": 1}, "r")      # -> {"x": 1, "a": {"b": "r"}}
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from jsonpath_ng import jsonpath as jp
from jsonpath_ng.ext.parser import parse as _jsonpath_parse

from mlgate.workflows.values import preview

__all__ = [
    "ROOT",
    "JsonPath",
    "PathError",
    "PathNotFound",
    "PathSyntaxError",
    "compile_path",
]

Segment = str | int

#: ``.name`` steps, rewritten as ``['name']`` when jsonpath-ng refuses a name it reserves
#: (``where``) or a non-ASCII one.
_DOT_NAME = re.compile(r"\.([^.\[\]'\"\s()@$,]+)")


class PathError(Exception):
    """Base of the path errors; ``str(error)`` is a human sentence."""


class PathSyntaxError(PathError):
    """The text is not a valid path."""


class PathNotFound(PathError):
    """The path names nothing in the data (or cannot be applied to it).

    ``path`` is the path's text and ``root`` what it was applied to (when known); a payload
    template sets ``field`` to the ``.$`` key whose path failed.
    """

    path: str | None = None
    root: Any = None
    field: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class JsonPath:
    """A compiled path. ``segments`` is set for reference paths (one node), None otherwise."""

    text: str
    context: bool
    segments: tuple[Segment, ...] | None
    expression: jp.JSONPath

    @property
    def is_reference(self) -> bool:
        return self.segments is not None

    @property
    def is_root(self) -> bool:
        return self.segments == () and not self.context

    def find(self, data: Any, context: Any = None) -> Any:
        """The value the path names in ``data`` (or in ``context`` for a ``$$`` path).

        Raises :class:`PathNotFound` when a reference path names nothing; other paths return
        a (possibly empty) array of their matches.
        """
        root = context if self.context else data
        if self.segments is None:
            return [match.value for match in self.expression.find(root)]
        node = root
        for segment in self.segments:
            if isinstance(segment, str):
                if not isinstance(node, dict) or segment not in node:
                    raise self._not_found(root)
                node = node[segment]
            else:
                if not isinstance(node, list) or not -len(node) <= segment < len(node):
                    raise self._not_found(root)
                node = node[segment]
        return node

    def assign(self, data: Any, value: Any) -> Any:
        """A copy of ``data`` with ``value`` placed where this reference path points.

        Missing objects along the way are created; nothing of ``data`` is changed (the
        objects on the path are copied, everything else is shared). Raises
        :class:`PathNotFound` when the path runs into a value that is not an object (or an
        array index out of range).
        """
        if self.segments is None or self.context:
            raise PathNotFound(f"'{self.text}' is not a reference path")
        return self._assign(data, 0, value)

    def _assign(self, node: Any, depth: int, value: Any) -> Any:
        assert self.segments is not None
        if depth == len(self.segments):
            return value
        segment = self.segments[depth]
        if isinstance(segment, str):
            if not isinstance(node, dict):
                raise PathNotFound(
                    f"Unable to apply ResultPath '{self.text}': "
                    f"{self._prefix(depth)} is not an object in {preview(node)}"
                )
            child = node.get(segment, {}) if depth + 1 < len(self.segments) else None
            copied = dict(node)
            copied[segment] = self._assign(child, depth + 1, value)
            return copied
        if not isinstance(node, list) or not -len(node) <= segment < len(node):
            raise PathNotFound(
                f"Unable to apply ResultPath '{self.text}': index {segment} does not exist in "
                f"{self._prefix(depth)}"
            )
        items = list(node)
        items[segment] = self._assign(node[segment], depth + 1, value)
        return items

    def _prefix(self, depth: int) -> str:
        assert self.segments is not None
        text = "$"
        for segment in self.segments[:depth]:
            text += f"[{segment}]" if isinstance(segment, int) else f".{segment}"
        return text

    def _not_found(self, root: Any) -> PathNotFound:
        where = "the context object" if self.context else f"the input {preview(root)}"
        error = PathNotFound(f"The JSONPath '{self.text}' could not be found in {where}")
        error.path, error.root = self.text, root
        return error

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"


@functools.lru_cache(maxsize=4096)
def compile_path(text: str) -> JsonPath:
    """Compile ``text`` (``$...`` or ``$$...``); raises :class:`PathSyntaxError`."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise PathSyntaxError(f"'{text}' is not a path: a path starts with '$' or '$$'")
    context = text.startswith("$$")
    body = text[1:] if context else text
    expression = _parse(body, text)
    return JsonPath(text=text, context=context, segments=_segments(expression), expression=expression)


def _parse(body: str, text: str) -> jp.JSONPath:
    try:
        return _jsonpath_parse(body)
    except Exception as first:  # the parser raises several unrelated exception types
        bracketed = _DOT_NAME.sub(lambda m: "['" + m.group(1) + "']", body)
        if bracketed != body:
            try:
                return _jsonpath_parse(bracketed)
            except Exception:  # noqa: S110 - report the error of the text as written
                pass
        raise PathSyntaxError(f"'{text}' is not a valid JSONPath: {first}") from None


def _segments(expression: jp.JSONPath) -> tuple[Segment, ...] | None:
    """The steps of a reference path, or None when the path can name several nodes."""
    if isinstance(expression, jp.Root):
        return ()
    if isinstance(expression, jp.Child):
        left = _segments(expression.left)
        right = _step(expression.right)
        if left is None or right is None:
            return None
        return (*left, right)
    return None


def _step(expression: jp.JSONPath) -> Segment | None:
    if type(expression) is jp.Fields and len(expression.fields) == 1:
        return expression.fields[0]
    if type(expression) is jp.Index and len(expression.indices) == 1:
        return expression.indices[0]
    return None


#: The identity path ``$``.
ROOT = compile_path("$")
