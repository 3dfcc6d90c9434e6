"""Mount a service's framework-neutral routes: original predict paths and info routes.

Each keeps its original envelope for answers and errors; the gateway runs first with
the route's declared auth mode (overridable per path or model in settings).

A predict route is registered twice: as a FastAPI route (for the OpenAPI docs) and in the
edge's :class:`~mlgate.http.serving.ServingRoutes`, which actually serves it without FastAPI's
per-request stack.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from mlgate.access.gate import ANONYMOUS
from mlgate.errors import MlgateError
from mlgate.http.deps import server_of
from mlgate.http.gateway import GatewayRejected, admit
from mlgate.http.jsonio import JSONResponse
from mlgate.http.serving import Endpoint, ServingRoutes
from mlgate.types import InfoContext, InfoRoute, RouteAdapter, Service

__all__ = ["mount"]


def _predict_endpoint(adapter: RouteAdapter) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        try:
            payload = adapter.parse(await request.body(), request.headers.get("content-type", ""))
            await admit(request, model=adapter.model, declared=adapter.auth, original=adapter.render_error)
            prediction = await server_of(request).dataplane.predict(adapter.model, payload)
        except GatewayRejected:
            raise
        except MlgateError as exc:
            status, body = adapter.render_error(exc.status, exc.message)
            retry_after = getattr(exc, "retry_after", None)
            headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else None
            return JSONResponse(body, status_code=status, headers=headers)
        request.state.model = prediction.model
        request.state.version = str(prediction.version)
        status, body = adapter.render(prediction.output)
        return JSONResponse(body, status_code=status)

    return endpoint


def _info_endpoint(route: InfoRoute, service: Service) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        server = server_of(request)
        if route.auth == "public" and route.path not in server.settings.auth.routes:
            caller = ANONYMOUS
        else:
            admission = await admit(request, model=None, declared=route.auth, original=route.render_error)
            caller = admission.caller
        versions: dict[str, int] = {}
        for bundled in service.models:
            try:
                versions[bundled.name] = (await server.dataplane.resolve(bundled.name)).version
            except MlgateError:
                continue
        status, body = route.respond(InfoContext(caller=caller, model_versions=versions))
        return JSONResponse(body, status_code=status)

    return endpoint


def _json_body(summary: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}}


def mount(app: FastAPI, service: Service, serving: ServingRoutes) -> None:
    for adapter in service.routes:
        endpoint = _predict_endpoint(adapter)
        serving.add(adapter.path, endpoint, method=adapter.method)
        app.add_api_route(
            adapter.path,
            endpoint,
            methods=[adapter.method],
            summary=adapter.summary or f"{service.name}: original route for model '{adapter.model}'",
            tags=[f"service: {service.name}"],
            openapi_extra=_json_body(adapter.summary),
        )
    for route in service.info_routes:
        app.add_api_route(
            route.path,
            _info_endpoint(route, service),
            methods=[route.method],
            summary=route.summary or f"{service.name}: {route.method} {route.path}",
            tags=[f"service: {service.name}"],
        )
