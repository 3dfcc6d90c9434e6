"""JSONata for ``QueryLanguage: "JSONata"`` states — the one module that touches ``jsonata-python``.

Step Functions evaluates a string ``"{% <expression> %}"`` as JSONata wherever a JSONata state
takes a value (``Arguments``, ``Output``, ``Assign``, ``Condition``, ``Items``, ``ItemSelector``,
``Seconds``, ``Timestamp``, ``TimeoutSeconds``, ``MaxConcurrency``, a Fail's ``Error`` and
``Cause``), and inside objects and arrays of those; any other string is a literal. An expression
sees ``$states`` (``input``, ``context``, and ``result`` or ``errorOutput`` where they exist) and
the workflow's variables (``$name``). Step Functions' own functions are provided: ``$partition``,
``$range``, ``$hash``, ``$random([seed])``, ``$uuid``, ``$parse``; ``$eval`` is refused, as on AWS.

Expressions are parsed once, when the definition is parsed. Each evaluation is **bounded**, so a
hostile definition or input cannot hang or exhaust the server: at most :data:`TIMEOUT_MS`
milliseconds and :data:`MAX_DEPTH` nested evaluation steps (jsonata-python's own checks, made
per evaluation here), and no step may build a string over :data:`MAX_STRING_CHARS` characters or
an array over :data:`MAX_ITEMS` items, nor large strings over :data:`MAX_TOTAL_CHARS` characters
in all — checked around every step (by :class:`_BoundedJsonata`'s own ``_eval``, not by the
frame-bound hooks jsonata-python looks up by name) and *before* the built-in functions whose
output can be much larger than their input (``$string`` and the ``&`` operator, ``$join``,
``$pad``, ``$replace``). Regular expressions run on the ``regex`` module with the evaluation's
remaining time as their timeout; ``$distinct`` and ``$replace`` with a literal pattern are
linear. Variable names starting with ``__`` are refused when parsing. Going over any bound is a
``States.QueryEvaluationError``.

Example::

    value = compile_value({"total": "{% $sum($states.input.items.price) %}"}, errors.append, "Output")
    value.evaluate({"states": {"input": {"items": [{"price": 2}, {"price": 3}]}}})   # {"total": 5}
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import regex as _regex  # type: ignore[import-untyped]
from jsonata import functions as _functions  # type: ignore[import-untyped]
from jsonata import jexception as _jexception
from jsonata import parser as _parser
from jsonata import utils as _utils
from jsonata.jsonata import Jsonata as _Jsonata  # type: ignore[import-untyped]

from mlgate.workflows.values import copy_json

__all__ = [
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_STRING_CHARS",
    "MAX_TOTAL_CHARS",
    "TIMEOUT_MS",
    "UNDEFINED",
    "JsonataError",
    "JsonataExpression",
    "JsonataFields",
    "JsonataRule",
    "JsonataSyntaxError",
    "JsonataValue",
    "compile_expression",
    "compile_value",
    "is_jsonata",
    "json_size_within",
]

#: the longest one evaluation may run
TIMEOUT_MS = 1000
#: the deepest nesting of evaluation steps (recursive functions included)
MAX_DEPTH = 400
#: the longest string, and the largest array, a step may build
MAX_STRING_CHARS = 8 * 1024 * 1024
MAX_ITEMS = 1_000_000
#: the most characters of large strings (64 KiB or more) one evaluation may build in all
MAX_TOTAL_CHARS = 32 * 1024 * 1024
_LARGE = 64 * 1024


class _Undefined:
    def __repr__(self) -> str:
        return "UNDEFINED"


#: what :meth:`JsonataExpression.evaluate_raw` returns for an undefined result
UNDEFINED: Any = _Undefined()


class JsonataSyntaxError(ValueError):
    """The text is not a JSONata expression this interpreter accepts."""


class JsonataError(Exception):
    """An evaluation failed (``States.QueryEvaluationError``); ``str()`` is a sentence."""


class _Exceeded(ValueError):
    """A bound was crossed inside an evaluation."""


def is_jsonata(value: Any) -> bool:
    """True for a string ``"{% … %}"`` (the whole string: anything else is a literal)."""
    return isinstance(value, str) and value.startswith("{%") and value.endswith("%}") and len(value) >= 4


# -- bounds -------------------------------------------------------------------------------------


def _check_size(value: Any) -> None:
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise _Exceeded(f"a string of over {MAX_STRING_CHARS} characters")
    elif isinstance(value, list) and len(value) > MAX_ITEMS:
        raise _Exceeded(f"an array of over {MAX_ITEMS} items")


def json_size_within(value: Any, budget: int) -> int:
    """``budget`` less (an upper bound of) the size of ``value`` as JSON text; raises when below 0.

    Shared parts are counted each time they appear, as JSON text repeats them; the walk stops
    as soon as the budget is spent, so it costs at most ``budget`` steps.
    """
    limit = budget
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            budget -= len(item) + 2
        elif isinstance(item, dict):
            budget -= 2 + len(item)
            for key, child in item.items():
                budget -= len(str(key)) + 3
                stack.append(child)
        elif isinstance(item, list | tuple):
            budget -= 2 + len(item)
            stack.extend(item)
        else:
            budget -= 24
        if budget < 0:
            raise _Exceeded(f"a value of over {limit} characters as JSON")
    return budget


_original_string = _functions.Functions._string
_original_join = _functions.Functions.join
_original_pad = _functions.Functions.pad
_original_replace = _functions.Functions.replace


def _bounded_string(arg: Any, prettify: bool) -> str:
    json_size_within(arg, MAX_STRING_CHARS // (3 if prettify else 1))
    return str(_original_string(arg, prettify))


def _bounded_join(strs: Any, separator: Any) -> Any:
    if isinstance(strs, list):
        total = sum(len(s) for s in strs if isinstance(s, str))
        total += len(separator or "") * max(len(strs) - 1, 0)
        if total > MAX_STRING_CHARS:
            raise _Exceeded(f"a string of over {MAX_STRING_CHARS} characters")
    return _original_join(strs, separator)


def _bounded_pad(string: Any, width: Any, char: Any) -> Any:
    if isinstance(width, int | float) and abs(width) > MAX_STRING_CHARS:
        raise _Exceeded(f"a string of over {MAX_STRING_CHARS} characters")
    return _original_pad(string, width, char)


def _bounded_replace(string: Any, pattern: Any, replacement: Any, limit: Any) -> Any:
    if isinstance(string, str) and isinstance(replacement, str):
        # at most one replacement per character (and one more at the end)
        worst = len(string) + (len(string) + 1) * len(replacement)
        if isinstance(pattern, str) and pattern:
            worst = len(string) + string.count(pattern) * len(replacement)
        if isinstance(limit, int) and not isinstance(limit, bool):
            worst = min(worst, len(string) + limit * len(replacement))
        if worst > MAX_STRING_CHARS:
            raise _Exceeded(f"a string of over {MAX_STRING_CHARS} characters")
    if (
        isinstance(string, str)
        and isinstance(pattern, str)
        and pattern
        and not callable(replacement)
        and (limit is None or (isinstance(limit, int | float) and limit >= 0 and limit == int(limit)))
    ):
        # jsonata-python slices the rest of the string at every match (quadratic): a literal
        # pattern has no groups, so every match is replaced by the same text — split and join
        rendered = _original_replace(pattern, pattern, replacement, None)
        return rendered.join(string.split(pattern, -1 if limit is None else int(limit)))
    return _original_replace(string, pattern, replacement, limit)


def _distinct_key(value: Any) -> Any:
    """A hashable key equal for deep-equal JSON values (1 and 1.0 alike; true is not 1)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, dict):
        return ("o", frozenset((k, _distinct_key(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("a", tuple(_distinct_key(v) for v in value))
    hash(value)  # raises TypeError for anything else unhashable
    return value


def _bounded_distinct(arr: Any) -> Any:
    """``$distinct`` in linear time (jsonata-python's tests list membership per item): the order
    of first occurrence, deep equality for objects and arrays."""
    if arr is None or not isinstance(arr, list) or len(arr) <= 1:
        return arr
    results = _utils.Utils.create_sequence() if isinstance(arr, _utils.Utils.JList) else []
    seen: set[Any] = set()
    others: list[Any] = []  # values without a key (functions): compared one by one, as before
    for el in arr:
        try:
            key = _distinct_key(el)
        except (TypeError, RecursionError):
            if el not in others:
                others.append(el)
                results.append(el)
            continue
        if key not in seen:
            seen.add(key)
            results.append(el)
    return results


_PATCH_LOCK = threading.Lock()


def _install_bounds() -> None:
    """Bound the built-ins whose output can dwarf their input (jsonata-python 0.7.1 is pinned).

    ``Functions._string`` is looked up at call time (``$string``, ``&``); the others are bound when
    registered, so they are registered again after being replaced.
    """
    with _PATCH_LOCK:
        if getattr(_functions.Functions, "_mlgate_bounded", False):
            return
        _functions.Functions._call = staticmethod(_bounded_call)
        _functions.Functions._string = staticmethod(_bounded_string)
        _functions.Functions.join = staticmethod(_bounded_join)
        _functions.Functions.pad = staticmethod(_bounded_pad)
        _functions.Functions.replace = staticmethod(_bounded_replace)
        _functions.Functions.distinct = staticmethod(_bounded_distinct)
        _Jsonata.define_function("join", "<a<s>s?:s>")
        _Jsonata.define_function("pad", "<s-ns?:s>")
        _Jsonata.define_function("replace", "<s-(sf)(sf)n?:s>")
        _Jsonata.define_function("distinct", "<x:x>")
        _functions.Functions._mlgate_bounded = True


# -- Step Functions' functions ------------------------------------------------------------------


class _StepFunctions:
    """The functions AWS adds to JSONata (and ``$eval``, which AWS refuses)."""

    @staticmethod
    def partition(array: Any, size: Any) -> Any:
        if not isinstance(array, list):
            array = [array]
        if not isinstance(size, int | float) or size < 1 or size != int(size):
            raise _Exceeded("$partition: the chunk size must be a positive integer")
        step = int(size)
        return [list(array[i : i + step]) for i in range(0, len(array), step)]

    @staticmethod
    def range(start: Any, end: Any, step: Any) -> Any:
        for value in (start, end, step):
            if not isinstance(value, int | float) or isinstance(value, bool) or value != int(value):
                raise _Exceeded("$range: start, end and step must be integers")
        if step == 0:
            raise _Exceeded("$range: the step must not be 0")
        count = max(0, math.floor((end - start) / step) + 1)
        if count > MAX_ITEMS:
            raise _Exceeded(f"an array of over {MAX_ITEMS} items")
        return [int(start + i * step) for i in range(count)]

    @staticmethod
    def hash(value: Any, algorithm: Any) -> Any:
        names = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}
        if algorithm not in names:
            raise _Exceeded(f"$hash: the algorithm must be one of {', '.join(names)}")
        if not isinstance(value, str):
            raise _Exceeded("$hash: the value must be a string")
        return hashlib.new(names[algorithm], value.encode()).hexdigest()

    @staticmethod
    def random(seed: Any = None) -> Any:
        if seed is None:
            return random.random()  # not for secrets, as on AWS
        return random.Random(seed).random()

    @staticmethod
    def uuid() -> Any:
        return str(uuid.uuid4())

    @staticmethod
    def parse(text: Any) -> Any:
        if not isinstance(text, str):
            raise _Exceeded("$parse: the argument must be a string of JSON text")
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise _Exceeded(f"$parse: not JSON text ({exc})") from None

    @staticmethod
    def function_eval(expr: Any, focus: Any = None) -> Any:
        raise _Exceeded("$eval is not supported (as on AWS Step Functions): use $parse for JSON text")


_AWS_FUNCTIONS = (
    ("partition", "<an:a>", "partition"),
    ("range", "<nnn:a>", "range"),
    ("hash", "<ss:s>", "hash"),
    ("random", "<n?:n>", "random"),
    ("uuid", "<:s>", "uuid"),
    ("parse", "<s:x>", "parse"),
    ("eval", "<sx?:x>", "function_eval"),
)


# -- expressions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class JsonataExpression:
    """A parsed ``{% … %}`` expression."""

    text: str
    compiled: Any

    def evaluate(self, bindings: Mapping[str, Any]) -> Any:
        """The expression's value as JSON (raises :class:`JsonataError`; undefined is an error)."""
        value = self.evaluate_raw(bindings)
        if value is UNDEFINED:
            raise JsonataError(f"The JSONata expression '{self.text}' returned nothing (undefined)")
        return value

    def evaluate_raw(self, bindings: Mapping[str, Any]) -> Any:
        """The value as JSON, or :data:`UNDEFINED`."""
        frame = _Jsonata.Frame(None)
        for name, value in bindings.items():
            if not name.startswith("__"):  # no expression can name them (compile_expression)
                frame.bind(name, _utils.Utils.NULL_VALUE if value is None else value)
        budget = _Budget()
        _Jsonata.CURRENT.jsonata = self.compiled  # $now/$millis read the running expression
        _CURRENT.budget = budget
        try:
            result = self.compiled.evaluate(None, frame)
            if result is None:
                return UNDEFINED
            # a result can share parts ([$a, $a] doubles without copying): measure before copying
            json_size_within(result, MAX_STRING_CHARS)
            return _to_json(_utils.Utils.convert_nulls(result), self.text)
        except JsonataError:
            raise
        except _Exceeded as exc:
            raise JsonataError(f"The JSONata expression '{self.text}' failed: {exc}") from None
        except _jexception.JException as exc:
            raise JsonataError(f"The JSONata expression '{self.text}' failed: {exc}") from None
        except RecursionError:
            raise JsonataError(f"The JSONata expression '{self.text}' nested too deep") from None
        except Exception as exc:  # jsonata-python lets Python errors through (1/0 is ZeroDivisionError)
            raise JsonataError(
                f"The JSONata expression '{self.text}' failed: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            _CURRENT.budget = None


class _Budget:
    """What one evaluation may still spend: time, nesting, and large strings (64 KiB or more,
    counted once each)."""

    def __init__(self) -> None:
        self.left = MAX_TOTAL_CHARS
        self.seen: set[int] = set()
        self.deadline = time.monotonic() + TIMEOUT_MS / 1000
        self.depth = 0

    def spend(self, value: Any) -> None:
        _check_size(value)
        if isinstance(value, str) and len(value) >= _LARGE and id(value) not in self.seen:
            self.seen.add(id(value))
            self.left -= len(value)
            if self.left < 0:
                raise _Exceeded(f"it built strings of over {MAX_TOTAL_CHARS} characters in all")

    def check(self) -> None:
        if self.depth > MAX_DEPTH:
            raise _Exceeded(f"it nested deeper than {MAX_DEPTH} steps")
        if time.monotonic() > self.deadline:
            raise _Exceeded(f"it ran longer than {TIMEOUT_MS} ms")

    def remaining(self) -> float:
        """Seconds left (raises once the time is up)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Exceeded(f"it ran longer than {TIMEOUT_MS} ms")
        return left


_CURRENT = threading.local()
_original_call = _functions.Functions._call


def _bounded_call(method: Any, nargs: int, args: Any) -> Any:
    """Every built-in function's result is measured (a call in a lambda's tail position skips
    the evaluator's exit step)."""
    result = _original_call(method, nargs, args)
    budget = getattr(_CURRENT, "budget", None)
    if budget is not None:
        budget.spend(result)
    return result


class _BoundedJsonata(_Jsonata):  # type: ignore[misc]
    """jsonata-python's evaluator with the per-evaluation bounds checked around every step.

    jsonata-python's own hooks (``__evaluate_entry``/``__evaluate_exit``) are variables looked
    up by name in the frame, which an expression could rebind; these checks are code, out of
    any expression's reach (and names starting with ``__`` are refused anyway).
    """

    def _eval(self, expr: Any, input: Any, environment: Any) -> Any:
        budget: _Budget | None = getattr(_CURRENT, "budget", None)
        if budget is None:
            return super()._eval(expr, input, environment)
        counted = not environment.is_parallel_call
        if counted:
            budget.depth += 1
            budget.check()
        try:
            result = super()._eval(expr, input, environment)
        finally:
            if counted:
                budget.depth -= 1
        budget.spend(result)
        if counted:
            budget.check()
        return result

    def evaluate_step(self, expr: Any, input: Any, environment: Any, last_step: bool) -> Any:
        """jsonata-python 0.7.1's ``evaluate_step``, refusing to flatten past :data:`MAX_ITEMS`
        *before* building it (``$range(1, 60).$big`` would otherwise build 60 copies of ``$big``)."""
        if expr.type == "sort":
            return super().evaluate_step(expr, input, environment, last_step)
        sequence = _utils.Utils.create_sequence
        result = sequence()
        for inp in input:
            res = self.eval(expr, inp, environment)
            if expr.stages is not None:
                for stage in expr.stages:
                    res = self.evaluate_filter(stage.expr, res, environment)
            if res is not None:
                result.append(res)
        if (
            last_step
            and len(result) == 1
            and isinstance(result[0], list)
            and not _utils.Utils.is_sequence(result[0])
        ):
            return result[0]
        result_sequence = sequence()
        for res in result:
            if not isinstance(res, list) or (isinstance(res, _utils.Utils.JList) and res.cons):
                result_sequence.append(res)
            else:
                if len(result_sequence) + len(res) > MAX_ITEMS:
                    raise _Exceeded(f"an array of over {MAX_ITEMS} items")
                result_sequence.extend(res)
        return result_sequence


# -- regular expressions: bounded by the evaluation's time ---------------------------------------


def _regex_timeout() -> float:
    budget: _Budget | None = getattr(_CURRENT, "budget", None)
    return budget.remaining() if budget is not None else TIMEOUT_MS / 1000


def _timed_out() -> _Exceeded:
    return _Exceeded(f"a regular expression ran longer than the {TIMEOUT_MS} ms the expression may run")


class _TimedPattern:
    """A ``regex`` pattern whose every use stops when the evaluation's time is up (``re`` runs a
    backtracking pattern in one C call no check can interrupt)."""

    def __init__(self, pattern: Any) -> None:
        self._pattern = pattern
        self.pattern = pattern.pattern
        self.flags = pattern.flags

    def search(self, string: str) -> Any:
        try:
            return self._pattern.search(string, timeout=_regex_timeout())
        except TimeoutError:
            raise _timed_out() from None

    def finditer(self, string: str) -> Any:
        try:
            yield from self._pattern.finditer(string, timeout=_regex_timeout())
        except TimeoutError:
            raise _timed_out() from None

    def sub(self, repl: Any, string: str, count: int = 0) -> Any:
        try:
            return self._pattern.sub(repl, string, count, timeout=_regex_timeout())
        except TimeoutError:
            raise _timed_out() from None

    def split(self, string: str, maxsplit: int = 0) -> Any:
        try:
            return self._pattern.split(string, maxsplit, timeout=_regex_timeout())
        except TimeoutError:
            raise _timed_out() from None


def _regex_engine(pattern: str, flags: Any) -> _TimedPattern:
    options = _regex.VERSION0
    if flags.case_insensitive:
        options |= _regex.IGNORECASE
    if flags.multiline:
        options |= _regex.MULTILINE
    return _TimedPattern(_regex.compile(pattern, options))


# -- reserved names ------------------------------------------------------------------------------


def _reserved_name(ast: Any) -> str | None:
    """The first variable named ``__…`` the expression reads, binds or takes as a parameter."""
    stack = [ast]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, list | tuple):
            stack.extend(node)
            continue
        if not isinstance(node, _parser.Parser.Symbol):
            continue
        if node.type == "variable" and isinstance(node.value, str) and node.value.startswith("__"):
            return node.value
        for attr in ("focus", "index"):
            name = getattr(node, attr, None)
            if isinstance(name, str) and name.startswith("__"):
                return name
        for key, child in vars(node).items():
            if key != "_outer_instance" and isinstance(child, list | tuple | _parser.Parser.Symbol):
                stack.append(child)
    return None


_install_bounds()


def _to_json(value: Any, text: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JsonataError(f"The JSONata expression '{text}' returned a number out of range")
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, dict):
        return {str(k): _to_json(v, text) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v, text) for v in value]
    raise JsonataError(f"The JSONata expression '{text}' returned an unsupported result type")


def compile_expression(text: str) -> JsonataExpression:
    """Parse ``"{% … %}"`` (or a bare expression); raises :class:`JsonataSyntaxError`."""
    body = text[2:-2].strip() if is_jsonata(text) else text.strip()
    if not body:
        raise JsonataSyntaxError(f"'{text}' holds no JSONata expression")
    try:
        compiled = _BoundedJsonata(body, _regex_engine)
    except _jexception.JException as exc:
        raise JsonataSyntaxError(f"'{text}' is not a valid JSONata expression: {exc}") from None
    except Exception as exc:  # the parser raises a few other types on odd input
        raise JsonataSyntaxError(f"'{text}' is not a valid JSONata expression: {exc}") from None
    if compiled.errors:
        raise JsonataSyntaxError(f"'{text}' is not a valid JSONata expression")
    reserved = _reserved_name(compiled.ast)
    if reserved is not None:
        raise JsonataSyntaxError(
            f"'{text}': the variable name '${reserved}' is reserved (names starting with __)"
        )
    compiled.set_output_convert_nulls(False)  # None: undefined; Utils.NULL_VALUE: null
    for name, signature, method in _AWS_FUNCTIONS:
        compiled.register_function(name, _Jsonata.function(name, signature, _StepFunctions, method))
    return JsonataExpression(body, compiled)


# -- values: JSON with expressions inside -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Static:
    value: Any


@dataclass(frozen=True, slots=True)
class _Expr:
    expression: JsonataExpression


@dataclass(frozen=True, slots=True)
class _Object:
    fields: tuple[tuple[str, _Node], ...]


@dataclass(frozen=True, slots=True)
class _Array:
    items: tuple[_Node, ...]


_Node = _Static | _Expr | _Object | _Array


@dataclass(frozen=True, slots=True)
class JsonataValue:
    """A JSON value whose ``{% … %}`` strings (at any depth) are expressions."""

    root: _Node

    @property
    def is_static(self) -> bool:
        return isinstance(self.root, _Static)

    def evaluate(self, bindings: Mapping[str, Any]) -> Any:
        """Build the value (raises :class:`JsonataError`)."""
        return _build(self.root, bindings)


def _build(node: _Node, bindings: Mapping[str, Any]) -> Any:
    if isinstance(node, _Static):
        return copy_json(node.value)
    if isinstance(node, _Expr):
        return node.expression.evaluate(bindings)
    if isinstance(node, _Object):
        return {key: _build(child, bindings) for key, child in node.fields}
    return [_build(child, bindings) for child in node.items]


def compile_value(raw: Any, report: Callable[[str], None], where: str) -> JsonataValue:
    """Compile ``raw``; every problem is passed to ``report`` (prefixed by ``where``)."""
    return JsonataValue(_compile(raw, report, where))


def _compile(raw: Any, report: Callable[[str], None], where: str) -> _Node:
    if is_jsonata(raw):
        try:
            return _Expr(compile_expression(raw))
        except JsonataSyntaxError as exc:
            report(f"{where}: {exc}")
            return _Static(None)
    if isinstance(raw, dict):
        fields = tuple((str(k), _compile(v, report, f"{where}.{k}")) for k, v in raw.items())
        if all(isinstance(child, _Static) for _, child in fields):
            return _Static(raw)
        return _Object(fields)
    if isinstance(raw, list):
        items = tuple(_compile(v, report, f"{where}[{i}]") for i, v in enumerate(raw))
        if all(isinstance(item, _Static) for item in items):
            return _Static(raw)
        return _Array(items)
    return _Static(raw)


# -- what a JSONata state holds -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JsonataRule:
    """A JSONata Choice rule: ``Condition`` (a boolean), ``Next``, and its own ``Assign``/``Output``."""

    condition: JsonataValue
    next: str
    assign: JsonataValue | None = None
    output: JsonataValue | None = None


@dataclass(frozen=True, slots=True)
class JsonataFields:
    """The fields of a ``QueryLanguage: "JSONata"`` state (or catcher), compiled; None when absent."""

    output: JsonataValue | None = None
    assign: JsonataValue | None = None
    arguments: JsonataValue | None = None
    items: JsonataValue | None = None
    item_selector: JsonataValue | None = None
    seconds: JsonataValue | None = None
    timestamp: JsonataValue | None = None
    error: JsonataValue | None = None
    cause: JsonataValue | None = None
    timeout_seconds: JsonataValue | None = None
    max_concurrency: JsonataValue | None = None
    rules: tuple[JsonataRule, ...] = ()
