"""Read a request body into a model payload: strict JSON, or a raw/multipart upload.

Shared by the native predict routes and the services' original routes, so every entry
point accepts the same forms: JSON (orjson: NaN, Infinity and 1e309 refused), a raw
``image/*`` or ``application/octet-stream`` body, or the first file of a
``multipart/form-data`` upload (as :class:`RawInput`).

**JSON has an explicit budget, checked on the raw bytes before parsing** (a clear 400):

- at most :data:`MAX_JSON_CONTAINERS` arrays and objects (counted with ``bytes.count``). A
  parsed container costs ~60-70 bytes, so a body of ``[{},{},...]`` costs 20x its size; the
  cap keeps that under ~35 MB, whatever the route's body limit. Scalars cost at most ~8x the
  body (a 4-byte ``1.5,`` is a 32-byte float), bounded by the body limit;
- at most :data:`MAX_JSON_DEPTH` levels of nesting (orjson stops at 1024, deeper than Python
  code that walks a document recursively can go). Only a body with more containers than
  that is scanned: strings removed by one regex, the brackets' running depth summed by NumPy.

100,000 nested arrays are refused in about a millisecond.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from mlgate.errors import InvalidInput
from mlgate.types import RawInput

__all__ = ["MAX_JSON_CONTAINERS", "MAX_JSON_DEPTH", "json_depth", "parse_json", "read_body"]

#: Arrays and objects one JSON body may hold (a 640x640x3 nested image tensor has ~410,000).
MAX_JSON_CONTAINERS = 500_000
#: Deepest nesting of arrays and objects in one JSON body.
MAX_JSON_DEPTH = 64

_RAW_TYPES = ("image/", "application/octet-stream")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENING = np.frombuffer(b"[{", np.uint8)


def parse_json(
    body: bytes, *, max_depth: int = MAX_JSON_DEPTH, max_containers: int = MAX_JSON_CONTAINERS
) -> Any:
    """A JSON document within the budget of the module docstring; :class:`InvalidInput` otherwise."""
    if not body:
        raise InvalidInput("request body is empty; send a JSON document")
    containers = body.count(b"[") + body.count(b"{")
    if containers > max_containers:
        raise InvalidInput(f"JSON document has {containers} arrays and objects, more than {max_containers}")
    if containers > max_depth:
        depth = json_depth(body)
        if depth > max_depth:
            raise InvalidInput(f"JSON document is nested {depth} levels deep, more than {max_depth}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"request body is not valid JSON (NaN, Infinity and out-of-range numbers are refused): {exc}"
        ) from None


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body`` (brackets inside strings ignored)."""
    if b'"' in body:
        body = _JSON_STRING.sub(b"", body)
    brackets = np.frombuffer(body.translate(None, _NOT_BRACKETS), np.uint8)
    if not brackets.size:
        return 0
    steps = np.where(np.isin(brackets, _OPENING), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max())


def read_body(body: bytes, content_type: str) -> Any:
    """JSON document, or a :class:`RawInput` for raw and multipart uploads."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media.startswith(_RAW_TYPES):
        if not body:
            raise InvalidInput("request body is empty")
        return RawInput(body, media)
    if media == "multipart/form-data":
        return _first_file(body, content_type)
    return parse_json(body)


def _first_file(body: bytes, content_type: str) -> RawInput:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidInput("multipart body without a boundary")
    parts: list[dict[str, Any]] = []
    current: dict[str, Any] = {}

    def on_part_begin() -> None:
        current.clear()
        current.update(headers={}, data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["field"] = data[start:end].decode("latin-1").lower()

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["headers"][current.pop("field", "")] = data[start:end].decode("latin-1")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append(dict(current))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises several error types
        raise InvalidInput(f"malformed multipart body: {exc}") from None
    for part in parts:
        disposition = part["headers"].get("content-disposition", "")
        _, options = parse_options_header(disposition)
        if b"filename" in options:
            filename = options[b"filename"].decode("utf-8", "replace")
            media = part["headers"].get("content-type", "application/octet-stream")
            return RawInput(bytes(part["data"]), media.split(";", 1)[0].strip().lower(), filename)
    raise InvalidInput("multipart body has no file part")
