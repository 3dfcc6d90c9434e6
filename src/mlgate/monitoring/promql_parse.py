"""Parsing the PromQL subset: durations, the tokenizer, a recursive-descent parser, the checks.

No maintained PromQL parser exists for Python (PyPI has query *builders* and HTTP clients),
so this is a compact one. Everything it accepts is valid PromQL (exported rules are checked
by ``promtool``); anything outside the subset is refused at parse time with a
:class:`~mlgate.monitoring.promql_ast.PromQLError` naming it. It builds the tree of
:mod:`mlgate.monitoring.promql_ast`; :mod:`mlgate.monitoring.promql` re-exports :func:`parse`,
:func:`parse_duration` and :func:`format_duration`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mlgate.monitoring.promql_ast import (
    COMPARISON,
    SET_OPERATORS,
    Aggregate,
    Binary,
    Call,
    Expr,
    Matcher,
    Number,
    PromQLError,
    Selector,
    compile_regex,
    is_scalar,
)

__all__ = ["format_duration", "parse", "parse_duration"]

# --------------------------------------------------------------------------- durations

_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}
# ASCII digits only (``\d`` also matches other scripts' digits), at most 18 per number.
_DURATION = re.compile(r"(?:[0-9]{1,18}(?:ms|s|m|h|d|w|y))+", re.ASCII)
_DURATION_PART = re.compile(r"([0-9]{1,18})(ms|s|m|h|d|w|y)", re.ASCII)


def parse_duration(text: str) -> float:
    """``5m``, ``1h30m``, ``500ms``, ``0s`` → seconds (Prometheus' duration syntax)."""
    text = text.strip()
    if len(text) > 200 or not _DURATION.fullmatch(text):
        raise PromQLError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h30m)")
    return sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """Seconds → Prometheus' duration syntax (``90`` → ``1m30s``; ``0`` → ``0s``)."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


# --------------------------------------------------------------------------- vocabulary

_AGGREGATIONS = {"sum", "max", "min", "avg", "count"}
_FUNCTIONS = {"rate", "increase", "histogram_quantile"}
_KNOWN_UNSUPPORTED_AGGREGATIONS = {
    "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group", "limitk", "limit_ratio",
}  # fmt: skip


# --------------------------------------------------------------------------- lexer

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+(?![\w.]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|==|!=|>=|<=|[-+*/%^<>=(){}\[\],@])
    """,
    re.VERBOSE,
)

_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}


def _unquote(raw: str) -> str:
    if raw[0] == "`":
        return raw[1:-1]
    body, out, i = raw[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            raise PromQLError(f"unsupported escape \\{nxt} in string {raw}")
        out.append(c)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PromQLError(f"unexpected character {text[pos]!r} at position {pos}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    out.append(_Tok("eof", "", pos))
    return out


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return tok

    def expect(self, text: str) -> _Tok:
        tok = self.next()
        if tok.text != text:
            raise PromQLError(f"expected {text!r} at position {tok.pos}, found {tok.text or 'the end'!r}")
        return tok

    def at(self, *texts: str) -> bool:
        tok = self.peek()
        return tok.kind in ("op", "ident") and tok.text in texts

    # precedence climbing: or < and/unless < comparisons < + - < * / (< ^ and % refused)
    def parse(self) -> Expr:
        expr = self.binary(0)
        tok = self.peek()
        if tok.kind != "eof":
            raise PromQLError(f"unexpected {tok.text!r} at position {tok.pos}")
        return expr

    _LEVELS: tuple[frozenset[str], ...] = (
        frozenset({"or"}),
        frozenset({"and", "unless"}),
        frozenset(COMPARISON),
        frozenset({"+", "-"}),
        frozenset({"*", "/", "%"}),
        frozenset({"^"}),
    )

    def binary(self, level: int) -> Expr:
        if level == len(self._LEVELS):
            return self.unary()
        lhs = self.binary(level + 1)
        ops = self._LEVELS[level]
        while True:
            tok = self.peek()
            op = tok.text.lower() if tok.kind == "ident" else tok.text
            if tok.kind not in ("op", "ident") or op not in ops:
                return lhs
            if tok.kind == "ident" and tok.text != op:
                raise PromQLError(f"write the operator {tok.text!r} in lower case")
            self.next()
            if op in ("%", "^"):
                raise PromQLError(f"unsupported in mlgate's PromQL subset: the operator {op!r}")
            if self.at("bool"):
                raise PromQLError("unsupported in mlgate's PromQL subset: the 'bool' modifier")
            on = ignoring = None
            if self.at("on", "ignoring"):
                which = self.next().text
                names = self.label_list()
                if which == "on":
                    on = names
                else:
                    ignoring = names
            if self.at("group_left", "group_right"):
                raise PromQLError(
                    f"unsupported in mlgate's PromQL subset: {self.peek().text} (many-to-one matching)"
                )
            rhs = self.binary(level + 1)
            if (on is not None or ignoring is not None) and (is_scalar(lhs) or is_scalar(rhs)):
                raise PromQLError("vector matching (on/ignoring) is only allowed between two vectors")
            if op in SET_OPERATORS and (is_scalar(lhs) or is_scalar(rhs)):
                raise PromQLError(f"'{op}' is only allowed between two vectors")
            if op in COMPARISON and is_scalar(lhs) and is_scalar(rhs):
                raise PromQLError(
                    "unsupported in mlgate's PromQL subset: a comparison between two scalars (needs 'bool')"
                )
            lhs = Binary(op, lhs, rhs, on, ignoring)

    def unary(self) -> Expr:
        if self.at("-", "+"):
            sign = self.next().text
            inner = self.unary()
            if isinstance(inner, Number):
                return Number(-inner.value if sign == "-" else inner.value)
            if sign == "-":
                raise PromQLError("unsupported in mlgate's PromQL subset: unary minus on a vector")
            return inner
        expr = self.primary()
        tok = self.peek()
        if tok.text == "[":
            if not isinstance(expr, Selector) or expr.range_s is not None:
                raise PromQLError(f"unsupported in mlgate's PromQL subset: a subquery at position {tok.pos}")
            self.next()
            dur = self.next()
            if self.peek().text.startswith(":"):
                raise PromQLError("unsupported in mlgate's PromQL subset: subqueries")
            if dur.kind != "duration" and not (dur.kind == "number" and dur.text.isdigit()):
                raise PromQLError(f"expected a duration at position {dur.pos}, found {dur.text!r}")
            if self.peek().text == ":":
                raise PromQLError("unsupported in mlgate's PromQL subset: subqueries")
            self.expect("]")
            seconds = parse_duration(dur.text) if dur.kind == "duration" else float(dur.text)
            if seconds <= 0:
                raise PromQLError("a range must be positive")
            expr = Selector(expr.name, expr.matchers, seconds)
        if self.at("offset", "@"):
            raise PromQLError(f"unsupported in mlgate's PromQL subset: the '{self.peek().text}' modifier")
        return expr

    def primary(self) -> Expr:
        tok = self.peek()
        if tok.kind == "number":
            self.next()
            return Number(float(int(tok.text, 16)) if tok.text[:2].lower() == "0x" else float(tok.text))
        if tok.kind == "duration":
            raise PromQLError(f"unexpected duration {tok.text!r} at position {tok.pos}")
        if tok.kind == "string":
            raise PromQLError("unsupported in mlgate's PromQL subset: string literals as expressions")
        if tok.text == "(":
            self.next()
            inner = self.binary(0)
            self.expect(")")
            return inner
        if tok.text == "{":
            return self.selector(None)
        if tok.kind == "ident":
            name = tok.text
            lowered = name.lower()
            if lowered in ("inf", "nan") and self.peek(1).text not in ("{", "("):
                self.next()
                return Number(math.inf if lowered == "inf" else math.nan)
            if name in _AGGREGATIONS:
                return self.aggregate()
            if name in _KNOWN_UNSUPPORTED_AGGREGATIONS and self.peek(1).text in ("(", "by", "without"):
                raise PromQLError(f"unsupported in mlgate's PromQL subset: the aggregation {name}()")
            if self.peek(1).text == "(":
                return self.call()
            if name in ("by", "without", "on", "ignoring", "bool", "offset", "group_left", "group_right"):
                raise PromQLError(f"unexpected keyword {name!r} at position {tok.pos}")
            self.next()
            return self.selector(name)
        raise PromQLError(f"unexpected {tok.text or 'end of expression'!r} at position {tok.pos}")

    def selector(self, name: str | None) -> Selector:
        matchers: list[Matcher] = []
        if self.peek().text == "{":
            self.next()
            while self.peek().text != "}":
                label = self.next()
                if label.kind != "ident":
                    raise PromQLError(f"expected a label name at position {label.pos}, found {label.text!r}")
                op = self.next()
                if op.text not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"expected a label matcher (=, !=, =~, !~) at position {op.pos}")
                value = self.next()
                if value.kind != "string":
                    raise PromQLError(f"expected a quoted string at position {value.pos}")
                matcher = Matcher(label.text, op.text, _unquote(value.text))
                if op.text in ("=~", "!~"):
                    compile_regex(matcher.value)
                matchers.append(matcher)
                if self.peek().text == ",":
                    self.next()
                elif self.peek().text != "}":
                    raise PromQLError(f"expected ',' or '}}' at position {self.peek().pos}")
            self.next()
        if name is not None and any(m.name == "__name__" for m in matchers):
            raise PromQLError(f"metric name {name!r} given twice (also as __name__)")
        if name is None:
            named = [m for m in matchers if m.name == "__name__" and m.op == "="]
            if len(named) == 1 and len(matchers) >= 1:
                name = named[0].value
                matchers = [m for m in matchers if m is not named[0]]
            elif not any(not m.matches("") for m in matchers):
                raise PromQLError(
                    "a selector needs a metric name or a matcher that does not match the empty string"
                )
        return Selector(name, tuple(matchers))

    def label_list(self) -> tuple[str, ...]:
        self.expect("(")
        names: list[str] = []
        while self.peek().text != ")":
            tok = self.next()
            if tok.kind != "ident":
                raise PromQLError(f"expected a label name at position {tok.pos}, found {tok.text!r}")
            names.append(tok.text)
            if self.peek().text == ",":
                self.next()
            elif self.peek().text != ")":
                raise PromQLError(f"expected ',' or ')' at position {self.peek().pos}")
        self.next()
        return tuple(names)

    def aggregate(self) -> Aggregate:
        op = self.next().text
        grouping: tuple[str, ...] = ()
        without = False
        modifier = False
        if self.at("by", "without"):
            without = self.next().text == "without"
            grouping = self.label_list()
            modifier = True
        self.expect("(")
        inner = self.binary(0)
        if self.peek().text == ",":
            raise PromQLError(f"{op}() takes one argument")
        self.expect(")")
        if not modifier and self.at("by", "without"):
            without = self.next().text == "without"
            grouping = self.label_list()
        if is_scalar(inner):
            raise PromQLError(f"{op}() needs a vector, not a number")
        _check_vector(inner, f"{op}()")
        return Aggregate(op, inner, grouping, without)

    def call(self) -> Call:
        tok = self.next()
        name = tok.text
        if name not in _FUNCTIONS:
            raise PromQLError(f"unsupported in mlgate's PromQL subset: the function {name}()")
        self.expect("(")
        args: list[Expr] = []
        while self.peek().text != ")":
            args.append(self.binary(0))
            if self.peek().text == ",":
                self.next()
            elif self.peek().text != ")":
                raise PromQLError(f"expected ',' or ')' at position {self.peek().pos}")
        self.next()
        if name in ("rate", "increase"):
            if len(args) != 1 or not isinstance(args[0], Selector) or args[0].range_s is None:
                raise PromQLError(f"{name}() takes one range selector, e.g. {name}(metric[5m])")
        else:
            if len(args) != 2 or not isinstance(args[0], Number):
                raise PromQLError(
                    "histogram_quantile() takes a number and a vector: histogram_quantile(0.99, ...)"
                )
            _check_vector(args[1], "histogram_quantile()")
        return Call(name, tuple(args))


def _check_vector(expr: Expr, where: str) -> None:
    if isinstance(expr, Selector) and expr.range_s is not None:
        raise PromQLError(
            f"{where} needs an instant vector; a range selector is only allowed in rate() or increase()"
        )


def _check_ranges(expr: Expr, top: bool = True) -> None:
    if isinstance(expr, Selector):
        if expr.range_s is not None and top:
            raise PromQLError(
                "a range selector is only allowed inside rate() or increase() in mlgate's PromQL subset"
            )
    elif isinstance(expr, Binary):
        _check_ranges(expr.lhs)
        _check_ranges(expr.rhs)
    elif isinstance(expr, Aggregate):
        _check_ranges(expr.expr)
    elif isinstance(expr, Call):
        for arg in expr.args:
            _check_ranges(arg, top=expr.func not in ("rate", "increase"))


def parse(text: str) -> Expr:
    """Parse ``text``; :class:`PromQLError` naming the problem if it is outside the subset."""
    if not text.strip():
        raise PromQLError("empty expression")
    expr = _Parser(text).parse()
    _check_ranges(expr)
    return expr
