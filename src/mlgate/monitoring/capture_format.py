"""Data capture's record format: SageMaker Data Capture's JSON-lines shape, redaction, and how
each body is encoded (part of :mod:`mlgate.monitoring.capture`).

One record per captured exchange::

    {"captureData": {
        "endpointInput":  {"observedContentType": "application/json", "mode": "INPUT",
                           "data": "{\\"temperaturas\\": [60]}", "encoding": "JSON"},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "data": "{\\"prediccion\\": 185.08}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid4>", "inferenceId": "<request id>",
                       "inferenceTime": "2026-12-03T08:15:06.123Z",
                       "customAttributes": {"model": "temperatura", "version": "1",
                                            "route": "/prod", "requestId": "…", "keyId": "…",
                                            "status": "200"}},
     "eventVersion": "0"}

``encoding`` is ``JSON`` (``data`` is the JSON text, secrets redacted), ``CSV`` (``text/csv``)
or ``BASE64`` (any other bytes: images, multipart forms). SageMaker's ``eventMetadata`` has
``eventId``, ``inferenceId`` (the client's id: here the request id) and ``inferenceTime``;
``customAttributes`` is mlgate's addition — an object of strings (SageMaker forwards its
CustomAttributes header as one opaque string; an object keeps each attribute queryable), so
readers of SageMaker's format that ignore unknown fields read these files unchanged.

Secrets: headers are never captured; JSON fields named like secrets (:data:`SECRET_NAMES`, any
depth, case-insensitive) and the global and per-model ``redact`` lists (names at any depth or
dotted paths from the root) are replaced with ``"[REDACTED]"`` before anything is written.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import random
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["REDACTED", "SECRET_NAMES", "build_record", "event_id", "iso_ms", "redact"]

REDACTED = "[REDACTED]"
#: Field names never captured, whatever the settings, nor any name ending like one of
#: ``password``, ``passwd``, ``token``, ``secret``, ``apikey`` (compared lower-cased, without
#: ``-`` and ``_``: ``accessToken``, ``user-password`` and ``CLIENT_SECRET`` are secret names).
SECRET_NAMES = frozenset(
    {"password", "passwd", "api_key", "apikey", "x_api_key", "authorization", "token", "secret"}
)
# Names are compared without case, ``-`` or ``_``, so ``accessToken``, ``access-token`` and
# ``ACCESS_TOKEN`` are one name: a secret name, or one ending like one (``userPassword``).
_SECRET_COMPACT = frozenset(n.replace("_", "") for n in SECRET_NAMES)
_SECRET_SUFFIXES = ("password", "passwd", "token", "secret", "apikey")
_IMAGE_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"RIFF", "image/webp"))
_IMAGE_FIELDS = ("image_data", "image", "body", "imagen")
_JSON_START = re.compile(rb"[ \t\r\n]*[\[{]")


# -- redaction ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # a handful of field names recur in every record
def _secret(name: str) -> bool:
    key = name.lower().replace("-", "").replace("_", "")
    return key in _SECRET_COMPACT or key.endswith(_SECRET_SUFFIXES)


def redact(value: Any, rules: Iterable[str] = ()) -> tuple[Any, bool]:
    """``value`` with secret-named fields and ``rules`` replaced by ``"[REDACTED]"``; True if any
    was. A rule without a dot is a field name matched at any depth (case-insensitive); a dotted
    rule (``customer.card.number``) is a path from the root, lists crossed transparently."""
    names: set[str] = set()
    paths: list[tuple[str, ...]] = []
    for rule in rules:
        rule = rule.strip().lower()
        if not rule:
            continue
        if "." in rule:
            paths.append(tuple(p for p in rule.split(".") if p))
        else:
            names.add(rule)
    changed = False

    def walk(node: Any, pending: list[tuple[str, ...]]) -> Any:
        nonlocal changed
        if isinstance(node, list):
            return [walk(item, pending) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, item in node.items():
            lowered = str(key).lower()
            deeper = [p[1:] for p in pending if p[0] == lowered]
            if _secret(lowered) or lowered in names or any(len(p) == 0 for p in deeper):
                out[key] = REDACTED
                changed = True
            else:
                out[key] = walk(item, [p for p in deeper if p])
        return out

    result = walk(value, paths)
    return result, changed


# -- records -----------------------------------------------------------------------------------


_second: tuple[int, str] = (-1, "")
# Event ids: random UUIDs (version 4) from a generator seeded once per process (reseeded in a
# forked worker) — not a system call per record as uuid.uuid4() makes; they need uniqueness,
# not secrecy.
_ids = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(16)))
_V4 = (0xF << 76) | (0x3 << 62)


def event_id() -> str:
    """A random version-4 UUID string (``eventId``)."""
    n = (_ids.getrandbits(128) & ~_V4) | (0x4 << 76) | (0x2 << 62)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_fresh_event_id = event_id  # build_record's parameter of that name shadows the function


def iso_ms(when: float) -> str:
    """``when`` (epoch seconds) as SageMaker's ``inferenceTime``: ISO-8601 UTC, milliseconds.
    The date and time up to the second are formatted once per second (records come in order)."""
    global _second
    whole = int(when)
    ms = round((when - whole) * 1e6) // 1000  # microseconds rounded as datetime rounds them
    if ms >= 1000 or whole < 0:
        stamp = datetime.fromtimestamp(when, UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{cached[1]}{ms:03d}Z"


#: A JSON object key: a string followed by ``:`` (a string value is followed by ``,``, ``]`` or
#: ``}``, never ``:``). Bodies with a backslash are not scanned (an escape could hide a quote).
_JSON_KEY = re.compile(rb'"([^"\\]*)"\s*:')


@functools.lru_cache(maxsize=256)
def _rule_names(rules: tuple[str, ...]) -> frozenset[str]:
    """Every name a rule can match at some depth: plain names and each segment of dotted paths."""
    return frozenset(part for rule in rules for part in rule.strip().lower().split(".") if part)


def _may_redact(body: bytes, rules: tuple[str, ...]) -> bool:
    """Whether ``body`` has a key :func:`redact` could replace — decided from its keys alone, by
    the same test (:func:`_secret`, the rules' names), without parsing: True for a body with a
    backslash or a key that is not UTF-8. Walking a parsed body costs ~20 µs for W1's 60
    numbers; this, ~1 µs."""
    if b"\\" in body:
        return True
    names = _rule_names(rules) if rules else frozenset()
    for raw in _JSON_KEY.findall(body):
        try:
            key = raw.decode("utf-8").lower()
        except UnicodeDecodeError:
            return True
        if _secret(key) or key in names:
            return True
    return False


def _data(body: bytes, content_type: str, mode: str, rules: tuple[str, ...]) -> dict[str, str]:
    """One side of ``captureData``: JSON (redacted), CSV text, or BASE64 bytes."""
    ctype = content_type or ("application/json" if body[:1] in (b"{", b"[") else "application/octet-stream")
    lowered = ctype.lower()
    # A JSON object or array is encoded (and redacted) as JSON whatever type it was sent as: the
    # server reads any body that is not raw or multipart as JSON, so a ``text/plain`` one carries
    # the same fields — and secrets — as an ``application/json`` one.
    if "json" in lowered or not content_type or _JSON_START.match(body):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            changed = False
            if _may_redact(body, rules):
                cleaned, changed = redact(parsed, rules)
            text = orjson.dumps(cleaned).decode() if changed else body.decode("utf-8")
            return {"observedContentType": ctype, "mode": mode, "data": text, "encoding": "JSON"}
    if lowered.startswith("text/csv"):
        try:
            return {
                "observedContentType": ctype,
                "mode": mode,
                "data": body.decode("utf-8"),
                "encoding": "CSV",
            }
        except UnicodeDecodeError:
            pass
    return {
        "observedContentType": ctype,
        "mode": mode,
        "data": base64.b64encode(body).decode("ascii"),
        "encoding": "BASE64",
    }


def build_record(
    *,
    request_body: bytes,
    request_type: str,
    response_body: bytes,
    response_type: str,
    when: float,
    attributes: Mapping[str, str],
    rules: Iterable[str] = (),
    inference_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One SageMaker-shaped capture record (see the module's docstring); ``event_id``: a given
    one (a shadowed call's two records share it), else a fresh one."""
    rules = tuple(rules)
    metadata: dict[str, Any] = {"eventId": event_id if event_id is not None else _fresh_event_id()}
    if inference_id:
        metadata["inferenceId"] = inference_id
    metadata["inferenceTime"] = iso_ms(when)
    metadata["customAttributes"] = dict(attributes)
    return {
        "captureData": {
            "endpointInput": _data(request_body, request_type, "INPUT", rules),
            "endpointOutput": _data(response_body, response_type, "OUTPUT", rules),
        },
        "eventMetadata": metadata,
        "eventVersion": "0",
    }


def image_in(state: Any) -> tuple[bytes, str] | None:
    """The image a workflow read (base64 in its state data), with its content type, if any."""
    if not isinstance(state, dict):
        return None
    for name in _IMAGE_FIELDS:
        value = state.get(name)
        if isinstance(value, dict):
            found = image_in(value)
            if found is not None:
                return found
        if not isinstance(value, str) or len(value) < 16:
            continue
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        for magic, ctype in _IMAGE_MAGIC:
            if raw.startswith(magic):
                return raw, ctype
    return None


def without_images(state: Any) -> Any:
    if not isinstance(state, dict):
        return state
    return {k: v for k, v in state.items() if k not in _IMAGE_FIELDS}
