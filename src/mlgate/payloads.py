"""Read a request body into a model payload: strict JSON, or a raw/multipart upload.

Shared by the native predict routes and the services' original routes, so every entry
point accepts the same forms: JSON (orjson: NaN, Infinity and 1e309 refused), a raw
``image/*`` or ``application/octet-stream`` body, or the first file of a
``multipart/form-data`` upload (as :class:`RawInput`).
"""

from __future__ import annotations

from typing import Any

import orjson
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from mlgate.errors import InvalidInput
from mlgate.types import RawInput

__all__ = ["parse_json", "read_body"]

_RAW_TYPES = ("image/", "application/octet-stream")


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput("request body is empty; send a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"request body is not valid JSON (NaN, Infinity and out-of-range numbers are refused): {exc}"
        ) from None


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
