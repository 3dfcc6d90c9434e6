"""Mount a service's framework-neutral routes: original predict paths and info routes.

Each keeps its original envelope for answers and errors; the gateway runs first with
the route's declared auth mode (overridable per path or model in settings).

A predict route is served by the edge (:mod:`mlgate.http.endpoints`); the FastAPI route
registered here for the same path is for the OpenAPI docs and the requests the edge passes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from mlgate.access.gate import ANONYMOUS
from mlgate.errors import MlgateError
from mlgate.http.deps import exchange_of, server_of, starlette_endpoint
from mlgate.http.endpoints import service_endpoint
from mlgate.http.gateway import admit
from mlgate.http.jsonio import JSONResponse
from mlgate.types import InfoContext, InfoRoute, Service

__all__ = ["mount"]


def _info_endpoint(route: InfoRoute, service: Service) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        server = server_of(request)
        if route.auth == "public" and route.path not in server.settings.auth.routes:
            caller = ANONYMOUS
        else:
            admission = await admit(
                exchange_of(request), model=None, declared=route.auth, original=route.render_error
            )
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


def mount(app: FastAPI, service: Service) -> None:
    for adapter in service.routes:
        app.add_api_route(
            adapter.path,
            starlette_endpoint(service_endpoint(adapter)),
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
