"""Admin API: alerts (docs/monitoring.md) — what fires now, its history, the loaded rules, and
the rules as a Prometheus rule file. Any process answers: states are read from the database
(the evaluator, one process across workers and replicas, writes them)."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from mlgate.errors import InvalidInput
from mlgate.http.deps import require_admin, server_of
from mlgate.http.jsonio import JSONResponse
from mlgate.monitoring.capture_read import parse_when
from mlgate.types import Caller

router = APIRouter(prefix="/v1", tags=["monitoring"])


def _since(value: str | None) -> float | None:
    """Epoch seconds, an ISO 8601 time (``2026-01-01T00:00:00Z``, naive = UTC) or a duration
    ago (``30m``, ``24h``, ``7d``), as the other monitoring routes take."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        return parse_when(value, default=datetime.now(UTC)).timestamp()
    if not math.isfinite(seconds):
        raise InvalidInput("since: epoch seconds, an ISO 8601 time or a duration ago (30m, 24h, 7d)")
    return seconds


@router.get("/alerts", summary="Alerts firing and pending now, and recent state changes")
async def list_alerts(
    request: Request,
    since: str | None = None,
    limit: int = 100,
    _: Caller = Depends(require_admin),
) -> JSONResponse:
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit: 1 to 10000")
    when = _since(since)
    alerts = server_of(request).alerts

    def read() -> dict[str, Any]:
        active = alerts.active_alerts()
        return {
            "alerts": [a.json() for a in active],
            "history": alerts.history_events(since=when, limit=limit),
        }

    return JSONResponse(await asyncio.to_thread(read))


@router.get("/alerts/rules", summary="The loaded alert rules, with their state")
async def list_rules(request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    alerts = server_of(request).alerts
    groups = await asyncio.to_thread(alerts.rules_status)
    holder = await asyncio.to_thread(alerts.lease.holder_now)
    return JSONResponse({"groups": groups, "evaluator": holder})


@router.get("/alerts/rules/export", summary="The alert rules as a Prometheus rule file (YAML)")
async def export_rules(request: Request, _: Caller = Depends(require_admin)) -> Response:
    text = server_of(request).alerts.export_yaml()
    return Response(
        text,
        media_type="application/yaml",
        headers={"Content-Disposition": 'attachment; filename="mlgate-rules.yml"'},
    )


@router.get(
    "/alerts/metrics",
    summary="The series that name callers (quota use per owner), in Prometheus' text format",
)
async def private_metrics(request: Request, _: Caller = Depends(require_admin)) -> Response:
    """``mlgate_quota_used_ratio{owner,plan}`` names users and key lineages, so it is not on the
    public ``/metrics``: the alert evaluator reads it from the shared snapshots, an admin here."""
    from mlgate.telemetry.metrics import CONTENT_TYPE

    return Response(server_of(request).metrics.render_private(), media_type=CONTENT_TYPE)
