"""The endpoints the edge serves itself, from raw requests: predict routes and probes.

An endpoint takes the request's :class:`~mlgate.http.exchange.Exchange` and returns a
:class:`~mlgate.http.wire.WireResponse`. Importing this module loads no web framework beyond
what the edge needs (no FastAPI), so a server answers these from its first second while
FastAPI — the admin API, the docs — is built in the background
(:class:`mlgate.http.app.MlgateApp`). FastAPI registers the same endpoints too
(``routes_services``, ``routes_models``, ``routes_ops``), for the OpenAPI docs and for the
requests the edge passes on to it (cross-origin ones when CORS is configured, a ``root_path``).

- ``POST <service path>`` (``/prod``, ``/prodfaces``, ``/predict``): a service's original
  route, its original envelope for answers and errors (:func:`service_endpoint`);
- ``POST /v1/models/{name}[/versions/{version}]/predict``: the native route (:func:`model_predict`);
- ``GET /healthz``, ``/readyz``, ``/metrics``: liveness, readiness, Prometheus.
"""

from __future__ import annotations

import asyncio

from mlgate.errors import MlgateError
from mlgate.http.exchange import Exchange
from mlgate.http.gateway import (
    VERSION_HEADER,
    GatewayRejected,
    admit,
    caller_identity,
    known_model,
    pinned_version,
)
from mlgate.http.serving import ServingRoutes, WireEndpoint
from mlgate.http.wire import WireResponse
from mlgate.payloads import read_body
from mlgate.telemetry.metrics import CONTENT_TYPE
from mlgate.types import RouteAdapter, Service

__all__ = [
    "MODEL_PREDICT_PATHS",
    "healthz",
    "install",
    "metrics",
    "model_predict",
    "readyz",
    "service_endpoint",
    "version_ref",
]

MODEL_PREDICT_PATHS = ("/v1/models/{name}/predict", "/v1/models/{name}/versions/{version}/predict")


def version_ref(raw: str | None) -> str | int | None:
    """A version path/query parameter: digits are a version number, anything else an alias."""
    from mlgate.errors import InvalidInput

    if raw is None or raw == "":
        return None
    if raw.isascii() and raw.isdigit():
        if len(raw) > 10 or not 1 <= int(raw) <= _MAX_VERSION:  # before any lookup (the database's ints)
            raise InvalidInput(f"version numbers are 1 to {_MAX_VERSION}")
        return int(raw)
    return raw


#: The largest version number (a 32-bit integer column on every backend).
_MAX_VERSION = 2**31 - 1


def service_endpoint(adapter: RouteAdapter) -> WireEndpoint:
    """A service's original predict route: its parse, the gateway, the model, its envelopes."""

    async def endpoint(x: Exchange) -> WireResponse:
        try:
            payload = adapter.parse(x.body, x.content_type)
            await admit(x, model=adapter.model, declared=adapter.auth, original=adapter.render_error)
            prediction = await x.server.dataplane.predict(
                adapter.model, payload, version=pinned_version(x), who=caller_identity(x)
            )
        except GatewayRejected:
            raise
        except MlgateError as exc:
            status, body = adapter.render_error(exc.status, exc.message)
            retry_after = getattr(exc, "retry_after", None)
            headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else None
            return WireResponse.json(body, status, headers)
        x.model = prediction.model
        x.version = str(prediction.version)
        status, body = adapter.render(prediction.output)
        return WireResponse.json(body, status, {VERSION_HEADER: x.version})

    return endpoint


async def model_predict(x: Exchange) -> WireResponse:
    """``POST /v1/models/{name}[/versions/{version}]/predict`` (``?version=`` on the first)."""
    params = x.params
    name = params["name"]
    ref = version_ref(params["version"] if "version" in params else x.query_param("version"))
    payload = read_body(x.body, x.content_type)
    await admit(x, model=name, check=known_model(x, name, ref, [payload]))
    pin = pinned_version(x)
    if pin is not None:
        ref = pin
    prediction = await x.server.dataplane.predict(name, payload, version=ref, who=caller_identity(x))
    x.model = prediction.model
    x.version = str(prediction.version)
    return WireResponse.json(
        {"model_name": prediction.model, "model_version": prediction.version, "outputs": prediction.output},
        200,
        {VERSION_HEADER: x.version},
    )


async def healthz(x: Exchange) -> WireResponse:
    """Liveness: the process answers."""
    return WireResponse.json({"status": "ok"})


async def readyz(x: Exchange) -> WireResponse:
    """Readiness: startup finished, not draining, and no alias points at a version that failed
    to load. Versions that failed are listed (``"failed": ["model:version", …]``) either way:
    a failed version nothing aliases leaves the server ready for everything else."""
    server = x.server
    dataplane = server.dataplane
    ready = dataplane.ready and not server.draining
    status = "draining" if server.draining else "ready" if ready else "starting"
    failed = dataplane.failed()
    if ready and failed:  # rare: only then is the registry read
        models = await asyncio.to_thread(server.repository.list_models)
        aliased = {(m.name, v) for m in models for v in m.aliases.values()}
        if aliased.intersection(failed):
            ready, status = False, "degraded"
    body = {
        "status": status,
        "loaded": [f"{m.info.model}:{m.info.version}" for m in dataplane.loaded()],
        "failed": sorted(f"{model}:{version}" for model, version in failed),
    }
    return WireResponse.json(body, 200 if ready else 503)


async def metrics(x: Exchange) -> WireResponse:
    """Prometheus metrics (text exposition)."""
    return WireResponse(200, x.server.metrics.render(), content_type=CONTENT_TYPE.encode("latin-1"))


def install(serving: ServingRoutes, services: list[Service]) -> None:
    """Register every edge-served endpoint."""
    for path in MODEL_PREDICT_PATHS:
        serving.add(path, model_predict)
    for service in services:
        for adapter in service.routes:
            serving.add(adapter.path, service_endpoint(adapter), method=adapter.method)
    serving.add("/healthz", healthz, method="GET")
    serving.add("/readyz", readyz, method="GET")
    serving.add("/metrics", metrics, method="GET")
