"""Operational routes: liveness, readiness, Prometheus metrics.

The edge serves them itself (:mod:`mlgate.http.endpoints`: probes answer from the first second,
before FastAPI is built); these FastAPI copies are for the OpenAPI docs and for the requests the
edge passes on (a ``root_path``).
"""

from __future__ import annotations

from fastapi import APIRouter

from mlgate.http import endpoints
from mlgate.http.deps import starlette_endpoint

router = APIRouter(tags=["operations"])
router.add_api_route(
    "/healthz",
    starlette_endpoint(endpoints.healthz),
    methods=["GET"],
    summary="Liveness: the process answers",
)
router.add_api_route(
    "/readyz",
    starlette_endpoint(endpoints.readyz),
    methods=["GET"],
    summary="Readiness: startup finished, every aliased model loaded, not draining",
)
router.add_api_route(
    "/metrics", starlette_endpoint(endpoints.metrics), methods=["GET"], summary="Prometheus metrics"
)
