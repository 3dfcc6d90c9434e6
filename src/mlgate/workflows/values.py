"""Helpers for the JSON values a state machine moves around.

State data is treated as immutable: every step builds new containers instead of changing the
ones it received (copy-on-write), so states never see each other's changes and large payloads
(base64 images) are never copied. :func:`copy_json` copies only containers — strings, numbers
and booleans are shared — and is used where data leaves the interpreter's control (a task's
input, a constant from the definition).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "copy_json",
    "is_number",
    "json_equal",
    "json_key",
    "parse_timestamp",
    "preview",
    "to_json_text",
]

#: RFC 3339 as ASL restricts it: an uppercase ``T`` and ``Z`` (or a numeric offset).
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})\Z",
)


def copy_json(value: Any) -> Any:
    """Copy the containers (dicts, lists) of a JSON value; scalars are shared."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


def is_number(value: Any) -> bool:
    """True for JSON numbers (``bool`` is not a number here, unlike in Python)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0`` but ``true != 1``; objects and arrays compared deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return bool(a == b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def json_key(value: Any) -> str:
    """A canonical text for a JSON value, equal for :func:`json_equal` values (for de-duplication)."""

    def normalise(v: Any) -> Any:
        if is_number(v) and float(v).is_integer() and math.isfinite(v):
            return int(v)
        if isinstance(v, dict):
            return {k: normalise(x) for k, x in v.items()}
        if isinstance(v, list):
            return [normalise(x) for x in v]
        return v

    return json.dumps(normalise(value), sort_keys=True, separators=(",", ":"))


def to_json_text(value: Any) -> str:
    """Compact JSON text, as ``States.JsonToString`` renders it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def parse_timestamp(value: Any) -> datetime | None:
    """Parse an ASL timestamp (``2016-08-18T17:33:00Z``); None if ``value`` is not one."""
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP.match(value)
    if match is None:
        return None
    day, time, fraction, zone = match.groups()
    micro = (fraction or "")[:6].ljust(6, "0")
    try:
        parsed = datetime.fromisoformat(f"{day}T{time}.{micro}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:
        return None
    return parsed.astimezone(UTC)


def preview(value: Any, limit: int = 200) -> str:
    """A short JSON rendering of ``value`` for error messages (payloads can be megabytes)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
