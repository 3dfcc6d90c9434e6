"""Operational routes: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlgate.http.deps import server_of
from mlgate.http.jsonio import JSONResponse
from mlgate.telemetry.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="Readiness: startup finished, every aliased model loaded, not draining")
async def readyz(request: Request) -> JSONResponse:
    server = server_of(request)
    ready = server.dataplane.ready and not server.draining
    status = "draining" if server.draining else "ready" if ready else "starting"
    loaded = [f"{m.info.model}:{m.info.version}" for m in server.dataplane.loaded()]
    return JSONResponse({"status": status, "loaded": loaded}, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
async def metrics(request: Request) -> Response:
    return Response(server_of(request).metrics.render(), media_type=CONTENT_TYPE)
