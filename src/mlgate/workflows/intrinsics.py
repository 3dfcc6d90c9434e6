"""Intrinsic functions (``States.Format(...)``) of the States Language, parsed once, evaluated per state.

An intrinsic is the value of a ``".$"`` key in ``Parameters``, ``ResultSelector`` or
``ItemSelector`` (and of ``ErrorPath``/``CausePath``) whose text starts with ``States.``.
Arguments are single-quoted strings (``\\'``, ``\\{``, ``\\}`` and ``\\\\`` escape the reserved
characters), numbers, ``true``/``false``/``null``, paths (``$.a``, ``$$.Execution.Id``) and
nested intrinsics (at most 10 deep).

Every function of the AWS documentation is here: Format, StringToJson, JsonToString, Array,
ArrayPartition, ArrayContains, ArrayRange, ArrayGetItem, ArrayLength, ArrayUnique,
Base64Encode, Base64Decode, Hash, JsonMerge, MathRandom, MathAdd, StringSplit, UUID. Unlike
AWS, there is no 10,000-character limit on Base64/Hash input (our payloads carry images).

Example::

    fn = compile_intrinsic("States.Format('Hello, my name is {}.', $.name)")
    fn.evaluate({"name": "Arnav"})       # -> "Hello, my name is Arnav."
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import random
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from mlgate.workflows.paths import JsonPath, PathError, compile_path
from mlgate.workflows.values import is_number, json_equal, json_key, to_json_text

__all__ = ["Intrinsic", "IntrinsicError", "IntrinsicSyntaxError", "compile_intrinsic", "is_intrinsic"]

_MAX_DEPTH = 10
_MAX_RANGE = 1000
_CALL = re.compile(r"States\.([A-Za-z0-9]+)\s*\(")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_KEYWORD = re.compile(r"(true|false|null)\b")
_HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


class IntrinsicSyntaxError(ValueError):
    """The text is not a well-formed intrinsic invocation (a definition error)."""


class IntrinsicError(Exception):
    """An intrinsic failed at run time (``States.IntrinsicFailure``)."""


@dataclass(frozen=True, slots=True)
class _Literal:
    value: Any
    #: indices of characters written escaped (``\\{``) in a string literal
    escaped: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class _PathArg:
    path: JsonPath


@dataclass(frozen=True, slots=True)
class Intrinsic:
    """A compiled intrinsic invocation."""

    name: str
    args: tuple[_Literal | _PathArg | Intrinsic, ...]
    text: str = field(default="", compare=False)

    def evaluate(self, data: Any, context: Any = None, *, rng: random.Random | None = None) -> Any:
        """Evaluate against the state's data and the context object; raises :class:`IntrinsicError`."""
        values = [_argument(arg, data, context, rng) for arg in self.args]
        try:
            if self.name == "Format":
                return _format(self.args[0], values)
            return _FUNCTIONS[self.name](values, rng or _RNG)
        except IntrinsicError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            raise IntrinsicError(f"States.{self.name}: {exc}") from None


def _argument(
    arg: _Literal | _PathArg | Intrinsic, data: Any, context: Any, rng: random.Random | None
) -> Any:
    if isinstance(arg, _Literal):
        return arg.value
    if isinstance(arg, _PathArg):
        try:
            return arg.path.find(data, context)
        except PathError as exc:
            raise IntrinsicError(str(exc)) from None
    return arg.evaluate(data, context, rng=rng)


def is_intrinsic(text: Any) -> bool:
    """True if ``text`` looks like an intrinsic invocation (starts with ``States.``)."""
    return isinstance(text, str) and text.lstrip().startswith("States.")


def compile_intrinsic(text: str) -> Intrinsic:
    """Parse an intrinsic invocation; raises :class:`IntrinsicSyntaxError`."""
    parser = _Parser(text)
    call = parser.call(depth=1)
    parser.skip_spaces()
    if parser.pos != len(text):
        parser.fail("unexpected text after the closing parenthesis")
    return call


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> NoReturn:
        raise IntrinsicSyntaxError(
            f"'{self.text}' is not a valid intrinsic function: {message} (at {self.pos})"
        )

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def call(self, depth: int) -> Intrinsic:
        if depth > _MAX_DEPTH:
            self.fail(f"intrinsic functions nest at most {_MAX_DEPTH} deep")
        self.skip_spaces()
        start = self.pos
        match = _CALL.match(self.text, self.pos)
        if match is None:
            self.fail("expected States.<Function>(")
        name = match.group(1)
        if name not in _ARITY:
            self.fail(f"unknown intrinsic function States.{name}")
        self.pos = match.end()
        args: list[_Literal | _PathArg | Intrinsic] = []
        self.skip_spaces()
        if self.peek() == ")":
            self.pos += 1
        else:
            while True:
                args.append(self.argument(depth))
                self.skip_spaces()
                char = self.peek()
                self.pos += 1
                if char == ")":
                    break
                if char != ",":
                    self.pos -= 1
                    self.fail("expected ',' or ')'")
        low, high = _ARITY[name]
        if not low <= len(args) <= (high if high is not None else len(args)):
            expected = (
                f"{low}" if low == high else f"{low} to {high}" if high is not None else f"{low} or more"
            )
            self.fail(f"States.{name} takes {expected} argument(s), got {len(args)}")
        call = Intrinsic(name=name, args=tuple(args), text=self.text[start : self.pos])
        if name == "Format":
            _check_format(self, call)
        return call

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def argument(self, depth: int) -> _Literal | _PathArg | Intrinsic:
        self.skip_spaces()
        char = self.peek()
        if char == "'":
            return self.string()
        if char == "$":
            return self.path()
        if self.text.startswith("States.", self.pos):
            return self.call(depth + 1)
        number = _NUMBER.match(self.text, self.pos)
        if number is not None:
            self.pos = number.end()
            literal = number.group(0)
            as_float = float(literal)
            if not math.isfinite(as_float):
                self.fail(f"number {literal} is out of range")
            is_integer = "." not in literal and "e" not in literal.lower()
            return _Literal(int(literal) if is_integer else as_float)
        keyword = _KEYWORD.match(self.text, self.pos)
        if keyword is not None:
            self.pos = keyword.end()
            return _Literal({"true": True, "false": False, "null": None}[keyword.group(1)])
        self.fail("expected a string, number, path or intrinsic function")

    def string(self) -> _Literal:
        self.pos += 1
        chars: list[str] = []
        escaped: set[int] = set()
        while True:
            char = self.peek()
            if char == "":
                self.fail("unterminated string")
            if char == "\\":
                following = self.text[self.pos + 1 : self.pos + 2]
                if following not in ("'", "{", "}", "\\"):
                    self.fail("open escape: '\\' must be followed by ', {, } or \\")
                escaped.add(len(chars))
                chars.append(following)
                self.pos += 2
            elif char == "'":
                self.pos += 1
                return _Literal("".join(chars), frozenset(escaped))
            else:
                chars.append(char)
                self.pos += 1

    def path(self) -> _PathArg:
        start = self.pos
        brackets = 0
        quote = ""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if quote:
                if char == quote:
                    quote = ""
            elif char in "'\"" and brackets:
                quote = char
            elif char == "[":
                brackets += 1
            elif char == "]":
                brackets -= 1
            elif char in ",)" and brackets == 0:
                break
            self.pos += 1
        text = self.text[start : self.pos].strip()
        try:
            return _PathArg(compile_path(text))
        except PathError as exc:
            self.fail(str(exc))


def _placeholders(template: _Literal) -> list[int]:
    """Positions of the unescaped ``{}`` pairs in a string literal."""
    text = template.value
    return [
        i
        for i in range(len(text) - 1)
        if text[i] == "{"
        and text[i + 1] == "}"
        and i not in template.escaped
        and i + 1 not in template.escaped
    ]


def _check_format(parser: _Parser, call: Intrinsic) -> None:
    template = call.args[0]
    if isinstance(template, _Literal):
        if not isinstance(template.value, str):
            parser.fail("the first argument of States.Format must be a string")
        wanted = len(_placeholders(template))
        if wanted != len(call.args) - 1:
            parser.fail(f"States.Format has {wanted} '{{}}' but {len(call.args) - 1} value(s)")


def _format(template_arg: _Literal | _PathArg | Intrinsic, values: list[Any]) -> str:
    template = values[0]
    if not isinstance(template, str):
        raise IntrinsicError("States.Format: the template must be a string")
    literal = template_arg if isinstance(template_arg, _Literal) else _Literal(template)
    spots = _placeholders(literal)
    if len(spots) != len(values) - 1:
        raise IntrinsicError(
            f"States.Format: the template has {len(spots)} '{{}}' but {len(values) - 1} value(s)"
        )
    out: list[str] = []
    last = 0
    for spot, value in zip(spots, values[1:], strict=True):
        out.append(template[last:spot])
        out.append(value if isinstance(value, str) else to_json_text(value))
        last = spot + 2
    out.append(template[last:])
    return "".join(out)


def _array(value: Any, what: str = "argument") -> list[Any]:
    if not isinstance(value, list):
        raise IntrinsicError(f"the {what} must be an array, got {type(value).__name__}")
    return value


def _string(value: Any, what: str = "argument") -> str:
    if not isinstance(value, str):
        raise IntrinsicError(f"the {what} must be a string, got {type(value).__name__}")
    return value


def _integer(value: Any, what: str) -> int:
    """Numbers are rounded half up to an integer, as Step Functions does."""
    if not is_number(value) or not math.isfinite(value):
        raise IntrinsicError(f"the {what} must be a number, got {json.dumps(value)}")
    rounded: int = math.floor(float(value) + 0.5)
    return rounded


def _partition(args: Sequence[Any], rng: random.Random) -> Any:
    items = _array(args[0], "first argument")
    size = _integer(args[1], "chunk size")
    if size <= 0:
        raise IntrinsicError("the chunk size must be a positive integer")
    return [items[i : i + size] for i in range(0, len(items), size)]


def _range(args: Sequence[Any], rng: random.Random) -> Any:
    start, end, step = (_integer(a, n) for a, n in zip(args, ("start", "end", "step"), strict=True))
    if step == 0:
        raise IntrinsicError("the step must not be 0")
    values = list(range(start, end + (1 if step > 0 else -1), step))
    if len(values) > _MAX_RANGE:
        raise IntrinsicError(f"the range has {len(values)} items, more than {_MAX_RANGE}")
    return values


def _get_item(args: Sequence[Any], rng: random.Random) -> Any:
    items = _array(args[0], "first argument")
    index = args[1]
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(items):
        raise IntrinsicError(f"index {json.dumps(index)} is not in the array of {len(items)} item(s)")
    return items[index]


def _unique(args: Sequence[Any], rng: random.Random) -> Any:
    seen: dict[str, Any] = {}
    for item in _array(args[0]):
        seen.setdefault(json_key(item), item)
    return list(seen.values())


def _base64_decode(args: Sequence[Any], rng: random.Random) -> Any:
    try:
        return base64.b64decode(_string(args[0]), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise IntrinsicError(f"not valid base64 of UTF-8 text: {exc}") from None


def _hash(args: Sequence[Any], rng: random.Random) -> Any:
    data = _string(args[0], "data")
    algorithm = _HASHES.get(_string(args[1], "algorithm"))
    if algorithm is None:
        raise IntrinsicError(f"unknown hash algorithm {args[1]!r}; use one of {', '.join(_HASHES)}")
    return hashlib.new(algorithm, data.encode("utf-8")).hexdigest()


def _merge(args: Sequence[Any], rng: random.Random) -> Any:
    first, second, deep = args
    if not isinstance(first, dict) or not isinstance(second, dict):
        raise IntrinsicError("both arguments to merge must be JSON objects")
    if deep is not False:
        raise IntrinsicError("only shallow merging is supported: the third argument must be false")
    return {**first, **second}


def _random(args: Sequence[Any], rng: random.Random) -> Any:
    start, end = _integer(args[0], "start"), _integer(args[1], "end")
    generator = random.Random(_integer(args[2], "seed")) if len(args) == 3 else rng
    if end < start:
        raise IntrinsicError("the end must not be smaller than the start")
    return generator.randint(start, end)  # both ends included


def _split(args: Sequence[Any], rng: random.Random) -> Any:
    text = _string(args[0], "first argument")
    delimiters = _string(args[1], "delimiter")
    if not delimiters:
        return [text] if text else []
    pattern = "|".join(re.escape(char) for char in delimiters)
    return [part for part in re.split(pattern, text) if part]


def _string_to_json(args: Sequence[Any], rng: random.Random) -> Any:
    try:
        return json.loads(_string(args[0]))
    except json.JSONDecodeError as exc:
        raise IntrinsicError(f"not valid JSON text: {exc}") from None


_RNG = random.Random()

_FUNCTIONS: dict[str, Callable[[Sequence[Any], random.Random], Any]] = {
    "StringToJson": _string_to_json,
    "JsonToString": lambda args, rng: to_json_text(args[0]),
    "Array": lambda args, rng: list(args),
    "ArrayPartition": _partition,
    "ArrayContains": lambda args, rng: any(json_equal(item, args[1]) for item in _array(args[0])),
    "ArrayRange": _range,
    "ArrayGetItem": _get_item,
    "ArrayLength": lambda args, rng: len(_array(args[0])),
    "ArrayUnique": _unique,
    "Base64Encode": lambda args, rng: base64.b64encode(_string(args[0]).encode("utf-8")).decode("ascii"),
    "Base64Decode": _base64_decode,
    "Hash": _hash,
    "JsonMerge": _merge,
    "MathRandom": _random,
    "MathAdd": lambda args, rng: _integer(args[0], "first value") + _integer(args[1], "second value"),
    "StringSplit": _split,
    "UUID": lambda args, rng: str(uuid.uuid4()),
}

#: (min, max) argument counts; max None = any number.
_ARITY: dict[str, tuple[int, int | None]] = {
    "Format": (1, None),
    "StringToJson": (1, 1),
    "JsonToString": (1, 1),
    "Array": (0, None),
    "ArrayPartition": (2, 2),
    "ArrayContains": (2, 2),
    "ArrayRange": (3, 3),
    "ArrayGetItem": (2, 2),
    "ArrayLength": (1, 1),
    "ArrayUnique": (1, 1),
    "Base64Encode": (1, 1),
    "Base64Decode": (1, 1),
    "Hash": (2, 2),
    "JsonMerge": (3, 3),
    "MathRandom": (2, 3),
    "MathAdd": (2, 2),
    "StringSplit": (2, 2),
    "UUID": (0, 0),
}
