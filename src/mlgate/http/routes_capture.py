"""Admin API for data capture (:mod:`mlgate.monitoring.capture`): per-model settings, the captured
objects and their records, and the workflow executions kept for review. Admin only: captured
bodies are clients' data.

- ``GET/PUT /v1/models/{name}/capture`` — sample (0 to 1), redact (field names or dotted paths),
  retention_days (0 keeps forever); a field set to null goes back to the global setting.
- ``GET /v1/models/{name}/capture/files?version=&since=&until=`` — objects with size and hour.
- ``GET /v1/models/{name}/capture/records?version=&since=&until=&limit=`` — SageMaker-shaped
  records, oldest first from ``since``, at most ``limit`` (≤ 10,000) and :data:`MAX_BYTES`.
- ``GET /v1/monitor/review?workflow=&since=&until=&limit=`` — executions a Fail state ended
  (the confidence gate), with the image they read as BASE64 (stored under ``review/<workflow>/``,
  apart from models' ``capture/``).

``since``/``until`` take ISO-8601 (``2026-12-03T08:00:00Z``) or a time ago (``30m``, ``1h``,
``2d``); the default window is the last 24 hours. Anything else, or a time outside the years 1 to
9999, is a 400.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request

from mlgate.errors import InvalidInput
from mlgate.http.deps import json_body, require_admin, server_of
from mlgate.http.jsonio import JSONResponse
from mlgate.monitoring.capture import (
    ModelCapture,
    list_files,
    parse_when,
    read_page,
    read_review,
)
from mlgate.server import Server
from mlgate.types import NAME_PATTERN, Caller

__all__ = ["MAX_BYTES", "MAX_LIMIT", "router"]

router = APIRouter(prefix="/v1", tags=["monitoring"])

#: Records per answer at most, and bytes of records per answer at most (about).
MAX_LIMIT = 10_000
MAX_BYTES = 32 * 1024 * 1024
_MAX_FILES = 10_000
_MAX_REDACT = 100
_MAX_RULE = 200
_MAX_RETENTION_DAYS = 36_500
_DEFAULT_WINDOW = timedelta(hours=24)
_FIELDS = frozenset({"sample", "redact", "retention_days"})
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "sample": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                        "redact": {"type": ["array", "null"], "items": {"type": "string"}},
                        "retention_days": {"type": ["integer", "null"], "minimum": 0},
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


def _window(since: str | None, until: str | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    end = parse_when(until, default=now, now=now)
    try:
        default_start = end - _DEFAULT_WINDOW
    except OverflowError:  # until is in year 1's first day
        default_start = datetime.min.replace(tzinfo=UTC)
    start = parse_when(since, default=default_start, now=now)
    if start > end:
        raise InvalidInput("since is after until")
    return start, end


def _version(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 9) or int(value) < 1:
        raise InvalidInput("version must be a version number (1, 2, …)")
    return int(value)


def _limit(value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit() and len(value) <= 9) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a number from 1 to {MAX_LIMIT}")
    return int(value)


async def _known_model(server: Server, name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise InvalidInput(f"bad model name {name!r}")
    await asyncio.to_thread(server.repository.get_model, name)  # ModelNotFound: 404


def _settings_json(server: Server, name: str) -> dict[str, Any]:
    own = server.capture.models.get(name, ModelCapture())
    return {
        "model": name,
        "sample": own.sample,
        "redact": None if own.redact is None else list(own.redact),
        "retention_days": own.retention_days,
        "effective": server.capture.effective(name),
    }


def _parse_settings(body: Any, current: ModelCapture) -> ModelCapture:
    """The new settings from a PUT body (absent fields keep theirs; null: back to the global)."""
    if not isinstance(body, dict) or not body:
        raise InvalidInput('body must be an object with any of "sample", "redact", "retention_days"')
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(unknown)}: expected sample, redact, retention_days")
    sample, redact, retention = current.sample, current.redact, current.retention_days
    if "sample" in body:
        value = body["sample"]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0
        ):
            raise InvalidInput("sample must be a number from 0 to 1 (or null for the global setting)")
        sample = None if value is None else float(value)
    if "redact" in body:
        value = body["redact"]
        if value is not None:
            if not isinstance(value, list) or len(value) > _MAX_REDACT:
                raise InvalidInput(
                    f"redact must be a list of at most {_MAX_REDACT} field names or dotted paths"
                )
            for rule in value:
                if not isinstance(rule, str) or not rule.strip() or len(rule) > _MAX_RULE:
                    raise InvalidInput(
                        f"each redact entry is a field name or dotted path of 1 to {_MAX_RULE} characters"
                    )
            value = tuple(rule.strip() for rule in value)
        redact = value
    if "retention_days" in body:
        value = body["retention_days"]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_RETENTION_DAYS
        ):
            raise InvalidInput(
                f"retention_days must be a whole number of days from 0 (keep) to {_MAX_RETENTION_DAYS}"
            )
        retention = value
    return ModelCapture(sample, redact, retention)


@router.get("/models/{name}/capture", summary="A model's data capture settings")
async def get_capture(name: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    server = server_of(request)
    await _known_model(server, name)
    return JSONResponse(_settings_json(server, name))


@router.put("/models/{name}/capture", summary="Set a model's data capture settings", openapi_extra=_BODY)
async def put_capture(name: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    body = await json_body(request)
    server = server_of(request)
    await _known_model(server, name)
    value = _parse_settings(body, server.capture.models.get(name, ModelCapture()))
    await server.capture.configure(name, value)
    return JSONResponse(_settings_json(server, name))


@router.get("/models/{name}/capture/files", summary="Captured objects of a model (key, size, hour)")
async def capture_files(
    name: str,
    request: Request,
    version: str | None = None,
    since: str | None = None,
    until: str | None = None,
    _: Caller = Depends(require_admin),
) -> JSONResponse:
    server = server_of(request)
    await _known_model(server, name)
    v = _version(version)
    start, end = _window(since, until)
    files, truncated = await asyncio.to_thread(
        list_files, server.store, name, v, start, end, limit=_MAX_FILES
    )
    return JSONResponse(
        {
            "model": name,
            "version": v,
            "since": start.isoformat(),
            "until": end.isoformat(),
            "files": files,
            "truncated": truncated,
        }
    )


@router.get("/models/{name}/capture/records", summary="Captured records of a model, oldest first")
async def capture_records(
    name: str,
    request: Request,
    version: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: str | None = None,
    _: Caller = Depends(require_admin),
) -> JSONResponse:
    server = server_of(request)
    await _known_model(server, name)
    v = _version(version)
    start, end = _window(since, until)
    n = _limit(limit, 1000)
    records, truncated = await asyncio.to_thread(
        lambda: read_page(server.store, name, v, start, end, limit=n, max_bytes=MAX_BYTES)
    )
    return JSONResponse(
        {"model": name, "version": v, "count": len(records), "truncated": truncated, "records": records}
    )


@router.get("/monitor/review", summary="Workflow executions kept for review (the confidence gate)")
async def review(
    request: Request,
    workflow: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: str | None = None,
    _: Caller = Depends(require_admin),
) -> JSONResponse:
    if not workflow or not NAME_PATTERN.match(workflow):
        raise InvalidInput("give ?workflow=<name> (a workflow's name)")
    server = server_of(request)
    start, end = _window(since, until)
    n = _limit(limit, 100)
    records, truncated = await asyncio.to_thread(
        lambda: read_review(server.store, workflow, start, end, limit=n, max_bytes=MAX_BYTES)
    )
    return JSONResponse(
        {"workflow": workflow, "count": len(records), "truncated": truncated, "records": records}
    )
