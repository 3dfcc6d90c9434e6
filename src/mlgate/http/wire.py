"""Raw HTTP parts shared by the drivers: the headers the edge reads, and an answer.

The edge's own routes (:mod:`mlgate.http.serving`) return a :class:`WireResponse`, which
``mlgate serve``'s protocol encodes as one HTTP/1.1 buffer (:func:`encode_http11`, one write)
and the ASGI driver sends as two ASGI messages — one implementation of the endpoints, free of
Starlette's request and response objects.

Header names are lower-case bytes, as uvicorn and ASGI give them. Response header values are
checked for line breaks where they are built from anything but numbers (:meth:`WireResponse.json`),
so nothing a client sends can end up as a forged header line.
"""

from __future__ import annotations

import http
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["STATUS_LINES", "KnownHeaders", "WireResponse", "encode_http11", "scan_headers"]

_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


#: Preencoded status lines (as uvicorn writes them).
STATUS_LINES: dict[int, bytes] = {status: _status_line(status) for status in range(100, 600)}


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(slots=True)
class KnownHeaders:
    """The headers the edge and the predict routes read, found in one pass over the list."""

    request_id: str | None  # a client's x-request-id if well-formed, "-" if not, None if absent
    content_length: int
    cross_origin: bool
    content_type: str
    api_key: str | None
    authorization: str | None
    forwarded: bool = False  # an X-Forwarded-For header was sent
    chunked: bool = False  # a Transfer-Encoding header was sent (the body's length is not declared)


def scan_headers(headers: list[tuple[bytes, bytes]]) -> KnownHeaders:
    """One pass over the headers (names are lower-case bytes)."""
    request_id: str | None = None
    content_type = ""
    api_key = authorization = None
    cross_origin = forwarded = chunked = False
    length = 0
    for name, value in headers:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = 0
        elif name == b"x-api-key":
            if api_key is None:
                api_key = value.decode("latin-1")
        elif name == b"content-type":
            if not content_type:
                content_type = value.decode("latin-1")
        elif name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"x-request-id":
            if request_id is None:
                candidate = value.decode("latin-1")
                request_id = candidate if _REQUEST_ID.match(candidate) else "-"
        elif name == b"origin":
            cross_origin = True
        elif name == b"x-forwarded-for":
            forwarded = True
        elif name == b"transfer-encoding":
            chunked = True
    return KnownHeaders(
        request_id, length, cross_origin, content_type, api_key, authorization, forwarded, chunked
    )


@dataclass(slots=True)
class WireResponse:
    """An answer: status, encoded body, the headers besides content-type/-length, and the content
    type (JSON unless said otherwise)."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = b"application/json"

    @classmethod
    def json(cls, content: Any, status: int = 200, headers: dict[str, str] | None = None) -> WireResponse:
        """``content`` as JSON (orjson; numpy values allowed), with ``headers`` checked for line breaks."""
        body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
        extra: list[tuple[bytes, bytes]] = []
        if headers:
            for name, value in headers.items():
                if _UNSAFE_VALUE.search(name) or _UNSAFE_VALUE.search(value):
                    raise ValueError(f"header {name!r} holds a control character")
                extra.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        return cls(status, body, extra)

    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        """Every header, content-type and content-length first (for an ASGI ``http.response.start``)."""
        return [
            (b"content-type", self.content_type),
            (b"content-length", b"%d" % len(self.body)),
            *self.headers,
        ]


def encode_http11(response: WireResponse, *, default_headers: bytes, keep_alive: bool) -> bytes:
    """The whole HTTP/1.1 answer as one buffer: one write, one system call.

    ``default_headers`` are the server's own (``date``), already encoded as header lines.
    """
    parts = [
        STATUS_LINES[response.status],
        default_headers,
        b"content-type: %s\r\ncontent-length: %d\r\n" % (response.content_type, len(response.body)),
    ]
    for name, value in response.headers:
        parts.append(b"%s: %s\r\n" % (name, value))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(response.body)
    return b"".join(parts)
