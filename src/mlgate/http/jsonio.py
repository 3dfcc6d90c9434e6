"""Strict, fast JSON for the HTTP edge (orjson).

orjson refuses NaN, Infinity and numbers that overflow a double (``1e309``, 5000-digit
integers), so hostile numbers become a 400 here instead of a 500 deeper down.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from mlgate.payloads import parse_json

__all__ = ["JSONResponse", "parse_json"]


class JSONResponse(Response):
    """A JSON response rendered with orjson (numpy scalars/arrays supported)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
