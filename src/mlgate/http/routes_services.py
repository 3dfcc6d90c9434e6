"""Mount a service's framework-neutral :class:`RouteAdapter`s (original paths and envelopes)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from mlgate.errors import MlgateError
from mlgate.http.deps import server_of
from mlgate.http.jsonio import JSONResponse
from mlgate.types import RouteAdapter, Service

__all__ = ["mount"]


def _endpoint(adapter: RouteAdapter):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        try:
            payload = adapter.parse(await request.body(), request.headers.get("content-type", ""))
            prediction = await server_of(request).dataplane.predict(adapter.model, payload)
        except MlgateError as exc:
            status, body = adapter.render_error(exc.status, exc.message)
            headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
            return JSONResponse(body, status_code=status, headers=headers)
        request.state.model = prediction.model
        request.state.version = str(prediction.version)
        status, body = adapter.render(prediction.output)
        return JSONResponse(body, status_code=status)

    return endpoint


def mount(app: FastAPI, service: Service) -> None:
    for adapter in service.routes:
        app.add_api_route(
            adapter.path,
            _endpoint(adapter),
            methods=[adapter.method],
            summary=adapter.summary or f"{service.name}: original route for model '{adapter.model}'",
            tags=[f"service: {service.name}"],
            openapi_extra={
                "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}
            },
        )
