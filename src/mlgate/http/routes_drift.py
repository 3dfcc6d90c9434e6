"""Admin API: baselines and drift (docs/monitoring.md).

- ``GET /v1/models/{name}/drift?version=&since=&until=`` evaluates the window's captured
  traffic now (in a thread) and answers the report (409 without a baseline, 422 with fewer
  than ``monitor.min_rows`` rows);
- ``GET /v1/models/{name}/drift/reports?version=`` answers the latest stored report;
- ``PUT /v1/models/{name}/versions/{v}/baseline`` computes and stores a baseline from a JSON
  body (a baseline document, ``{"rows": [...]}`` feature rows, or ``{"records": [...]}``
  requests with optional ``"answers"``) or a CSV / JSON-lines body of feature rows;
- ``POST /v1/models/{name}/versions/{v}/baseline/from-capture?since=&until=`` builds it from
  the version's captured traffic; ``GET …/baseline`` answers the stored one.

``since``/``until``: ISO 8601 or a duration ago (``24h``, ``30m``, ``7d``).
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request

from mlgate.errors import InvalidInput, NotFound
from mlgate.http.deps import exchange_of, require_admin, server_of
from mlgate.http.jsonio import JSONResponse
from mlgate.monitoring.baseline import MAX_FEATURES, sagemaker_constraints, sagemaker_statistics
from mlgate.monitoring.monitor import MAX_BASELINE_ROWS, parse_instant
from mlgate.payloads import parse_json
from mlgate.types import Caller

router = APIRouter(prefix="/v1/models", tags=["monitoring"])

_WINDOW_PARAMS = {
    "parameters": [
        {"name": "version", "in": "query", "schema": {"type": "string"}, "description": "number or alias"},
        {
            "name": "since",
            "in": "query",
            "schema": {"type": "string"},
            "description": "ISO 8601 or 24h/30m/7d",
        },
        {"name": "until", "in": "query", "schema": {"type": "string"}, "description": "ISO 8601 or 1h (ago)"},
    ]
}
_BASELINE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "a baseline document, {'rows': [feature rows]} or {'records': [requests], "
                    "'answers': [responses]}; optional 'input' / 'output' specs",
                }
            },
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


_MAX_VERSION = 2**31 - 1
_BAD_VERSION = "version must be a version number (1, 2, …) or an alias"


def _version(value: str | None) -> int | str | None:
    """A version number (ASCII digits) or an alias name (any other text: a 404 if unknown)."""
    if value is None or not value.strip():
        return None
    if value.isascii() and value.isdigit():
        if len(value) > 10 or not 1 <= int(value) <= _MAX_VERSION:
            raise InvalidInput(_BAD_VERSION)
        return int(value)
    if len(value) > 200:
        raise InvalidInput(_BAD_VERSION)
    return value


def _window(request: Request) -> tuple[datetime, datetime]:
    server = server_of(request)
    now = datetime.now(UTC)
    q = request.query_params
    until = parse_instant(q.get("until"), now=now, default=now)
    try:
        default_since = until - timedelta(seconds=server.settings.monitor.window_s)
    except OverflowError:  # until is in year 1
        default_since = datetime.min.replace(tzinfo=UTC)
    since = parse_instant(q.get("since"), now=now, default=default_since)
    if since >= until:
        raise InvalidInput("'since' must be before 'until'")
    return since, until


def _resolve(request: Request, name: str, version: int | str | None) -> int:
    if isinstance(version, int) and not 1 <= version <= _MAX_VERSION:  # a path's {v}: any int
        raise InvalidInput(_BAD_VERSION)
    server = server_of(request)
    info = server.repository.resolve(name, version)
    x = exchange_of(request)
    x.model = name
    x.version = str(info.version)
    return info.version


@router.get("/{name}/drift", summary="Evaluate drift of captured traffic now", openapi_extra=_WINDOW_PARAMS)
async def drift(name: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    server = server_of(request)
    since, until = _window(request)
    version = await asyncio.to_thread(_resolve, request, name, _version(request.query_params.get("version")))
    async with server.drift.slots:
        report = await asyncio.to_thread(server.drift.evaluate, name, version, since, until)
    return JSONResponse(report)


@router.get("/{name}/drift/reports", summary="The latest stored drift report")
async def latest_report(name: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    server = server_of(request)
    version = await asyncio.to_thread(_resolve, request, name, _version(request.query_params.get("version")))
    report = await asyncio.to_thread(server.drift.latest_report, name, version)
    if report is None:
        raise NotFound(
            f"no drift report for {name} v{version} yet (GET /v1/models/{name}/drift evaluates one)",
            details={"model": name, "version": version},
        )
    return JSONResponse(report)


@router.get("/{name}/versions/{v}/baseline", summary="The version's baseline (and SageMaker shapes)")
async def get_baseline(
    name: str, v: int, request: Request, _: Caller = Depends(require_admin)
) -> JSONResponse:
    server = server_of(request)
    version = await asyncio.to_thread(_resolve, request, name, v)
    doc = await asyncio.to_thread(server.drift.baseline_for, name, version)
    if doc is None:
        raise NotFound(f"{name} v{version} has no baseline", details={"model": name, "version": version})
    view = request.query_params.get("view", "baseline")
    if view == "statistics":
        return JSONResponse(sagemaker_statistics(doc))
    if view == "constraints":
        return JSONResponse(sagemaker_constraints(doc, psi_alert=server.settings.monitor.psi_alert))
    return JSONResponse(doc)


def _text_rows(body: bytes, content_type: str) -> list[dict[str, Any]]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the baseline body is not UTF-8 text") from None
    rows: list[dict[str, Any]] = []
    if "csv" in content_type:
        try:
            reader = csv.DictReader(io.StringIO(text))
            if not reader.fieldnames:
                raise InvalidInput("the CSV has no header row")
            if len(reader.fieldnames) > MAX_FEATURES:
                raise InvalidInput(
                    f"the CSV has {len(reader.fieldnames)} columns; "
                    f"a baseline has at most {MAX_FEATURES} features"
                )
            for i, raw in enumerate(reader):
                if i >= MAX_BASELINE_ROWS:
                    raise InvalidInput(f"at most {MAX_BASELINE_ROWS} reference rows")
                rows.append({k: _cell(v) for k, v in raw.items() if k is not None})
        except csv.Error as exc:  # a cell over the csv module's field limit, a NUL byte…
            raise InvalidInput(f"the CSV does not parse: {exc}") from None
        return rows
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(rows) >= MAX_BASELINE_ROWS:
            raise InvalidInput(f"at most {MAX_BASELINE_ROWS} reference rows")
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise InvalidInput(f"line {n} is not JSON (send one JSON object per line)") from None
        if not isinstance(row, dict):
            raise InvalidInput(f"line {n} is not a JSON object (feature name → value)")
        rows.append(row)
    return rows


def _cell(value: str | None) -> Any:
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return number if number == number and abs(number) != float("inf") else None


def _capture_like(requests: list[Any], answers: list[Any] | None) -> list[dict[str, Any]]:
    if answers is not None and len(answers) != len(requests):
        raise InvalidInput("'answers' must have one entry per record")
    out = []
    for i, payload in enumerate(requests):
        data: dict[str, Any] = {"endpointInput": {"data": payload, "encoding": "JSON", "mode": "INPUT"}}
        if answers is not None:
            data["endpointOutput"] = {"data": answers[i], "encoding": "JSON", "mode": "OUTPUT"}
        out.append({"captureData": data})
    return out


def _compute(server: Any, name: str, version: int, body: bytes, content_type: str) -> dict[str, Any]:
    monitor = server.drift
    if "csv" in content_type or "ndjson" in content_type or "jsonl" in content_type:
        return dict(
            monitor.baseline_from_rows(name, version, _text_rows(body, content_type), source="upload")
        )
    doc = parse_json(body)
    if isinstance(doc, list):
        doc = {"rows": doc}
    if not isinstance(doc, dict):
        raise InvalidInput("send a baseline document, {'rows': [...]} or {'records': [...]}")
    if "format" in doc or ("feature_names" in doc and "features" in doc):
        return doc
    in_spec = doc.get("input")
    out_spec = doc.get("output")
    if (in_spec is not None and not isinstance(in_spec, dict)) or (
        out_spec is not None and not isinstance(out_spec, dict)
    ):
        raise InvalidInput("'input' and 'output' are JSON objects (the baseline's specs)")
    if isinstance(doc.get("rows"), list):
        return dict(
            monitor.baseline_from_rows(
                name, version, doc["rows"], input_spec=in_spec, output_spec=out_spec, source="upload"
            )
        )
    if isinstance(doc.get("records"), list):
        records = doc["records"]
        if len(records) > MAX_BASELINE_ROWS:
            raise InvalidInput(f"at most {MAX_BASELINE_ROWS} records")
        answers = doc.get("answers")
        if answers is not None and not isinstance(answers, list):
            raise InvalidInput("'answers' is a list")
        return dict(
            monitor.baseline_from_records(name, version, _capture_like(records, answers), source="upload")
        )
    raise InvalidInput("send a baseline document, {'rows': [...]} or {'records': [...]}")


@router.put(
    "/{name}/versions/{v}/baseline",
    summary="Upload reference data; the baseline is computed and stored",
    openapi_extra=_BASELINE_BODY,
)
async def put_baseline(
    name: str, v: int, request: Request, _: Caller = Depends(require_admin)
) -> JSONResponse:
    server = server_of(request)
    version = await asyncio.to_thread(_resolve, request, name, v)
    body = await request.body()
    content_type = request.headers.get("content-type", "application/json").lower()

    def run() -> dict[str, Any]:
        return dict(
            server.drift.save_baseline(name, version, _compute(server, name, version, body, content_type))
        )

    async with server.drift.slots:
        doc = await asyncio.to_thread(run)
    return JSONResponse(_summary(name, version, doc))


@router.post(
    "/{name}/versions/{v}/baseline/from-capture",
    summary="Build and store the baseline from captured traffic",
    openapi_extra=_WINDOW_PARAMS,
)
async def baseline_from_capture(
    name: str, v: int, request: Request, _: Caller = Depends(require_admin)
) -> JSONResponse:
    server = server_of(request)
    version = await asyncio.to_thread(_resolve, request, name, v)
    since, until = _window(request)

    def run() -> dict[str, Any]:
        doc = server.drift.build_baseline_from_capture(name, version, since, until)
        return dict(server.drift.save_baseline(name, version, doc))

    async with server.drift.slots:
        doc = await asyncio.to_thread(run)
    return JSONResponse(_summary(name, version, doc))


def _summary(name: str, version: int, doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": name,
        "version": version,
        "format": doc.get("format"),
        "n_rows": doc.get("n_rows"),
        "input": doc.get("input"),
        "output": doc.get("output"),
        "feature_names": doc.get("feature_names"),
        "output_names": doc.get("output_names"),
        "key": f"monitoring/{name}/{version}/baseline.json",
    }
