"""The composition root of the HTTP edge: ``create_app(settings)`` builds the ASGI application.

Nothing is created at import time. The components (registry, store, dataplane, gate…) are
:class:`mlgate.server.Server`'s, built and started in the lifespan; this module adds what
only HTTP needs: the :class:`~mlgate.http.edge.Edge`, the ASGI driver, FastAPI.

Startup is in two steps, because cold start is a target (a process answering its first
prediction): what the edge serves itself — predictions, probes, metrics — is ready when
``/readyz`` is; the rest of the application — FastAPI with the admin and workflow API and the
docs, and the workflow service — is built right after, in a thread (its imports and route
building are most of a cold start). A request for it that arrives earlier waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from mlgate import __version__
from mlgate.http import endpoints
from mlgate.http.asgi import AsgiDriver
from mlgate.http.drain import Drain
from mlgate.http.edge import Edge
from mlgate.http.serving import ServingRoutes
from mlgate.server import Server
from mlgate.services import discover_services
from mlgate.settings import Settings, apply_process_environment, load_settings
from mlgate.telemetry.access_log import AccessLog
from mlgate.telemetry.metrics import Metrics
from mlgate.types import Service

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["UPLOAD_PATH", "MlgateApp", "create_app", "create_app_from_env"]

log = logging.getLogger("mlgate")
_PROCESS_STARTED = time.time()
#: the route whose body streams to its handler instead of being read whole first
UPLOAD_PATH = "/v1/models/{name}/versions"


class MlgateApp:
    """mlgate's ASGI application: every HTTP request goes through the :class:`AsgiDriver`
    (unless ``mlgate serve``'s protocol serves it from the parsed request), which serves the
    edge's own routes and passes the rest to FastAPI (:meth:`api`: the admin and workflow API,
    the docs), built after startup in a thread."""

    def __init__(
        self, settings: Settings, *, metrics: Metrics, access_log: AccessLog, services: list[Service]
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.access_log = access_log
        self.services = services
        serving = ServingRoutes()
        endpoints.install(serving, services)
        path_limits = {
            r.path: max(r.max_body_bytes, settings.max_body_bytes)
            for s in services
            for r in s.routes
            if r.max_body_bytes is not None
        }
        self.edge = Edge(
            metrics=metrics,
            access_log=access_log,
            serving=serving,
            max_body_bytes=settings.max_body_bytes,
            path_limits=path_limits,
            max_inflight=settings.max_inflight,
            usage_sync=settings.limiter.usage_sync,
            cors=bool(settings.cors.origins),
        )
        self.edge.stream(UPLOAD_PATH, limit=settings.max_upload_bytes)  # its own limit, spooled to disk
        self.driver = AsgiDriver(self.edge, self._pass_on)
        #: the components, once the lifespan has built them
        self.server: Server | None = None
        self._api: FastAPI | None = None
        self._api_lock = threading.Lock()
        self._rest: asyncio.Task[None] | None = None  # builds the rest of the app after startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.driver(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websocket: FastAPI refuses it
            await (await self.api())(scope, receive, send)

    async def _pass_on(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What the edge does not serve itself goes to FastAPI."""
        api = self._api
        if api is None or (self._rest is not None and not self._rest.done()):
            api = await self.api()
        await api(scope, receive, send)

    async def api(self) -> FastAPI:
        """FastAPI with every route, once the rest of the application is built (awaits it)."""
        rest = self._rest
        if rest is not None and not rest.done():
            await asyncio.shield(rest)
        if self._api is None:
            return await asyncio.to_thread(self.build_api)
        return self._api

    def build_api(self) -> FastAPI:
        """Build FastAPI (idempotent, thread-safe; blocking: imports and route building)."""
        with self._api_lock:
            if self._api is None:
                api = _build_fastapi(self)
                self.edge.labeler = _router_labeler(api)
                self._api = api
            return self._api

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document (``/openapi.json``), for tools and tests."""
        document: dict[str, Any] = self.build_api().openapi()
        return document

    async def _finish_startup(self, server: Server) -> None:
        """The rest of the application, right after startup: FastAPI, then the workflow service."""
        try:
            await asyncio.to_thread(self.build_api)
            workflows = await asyncio.to_thread(server.build_workflows)
            await workflows.start()  # marks executions a crash left RUNNING as FAILED
        except Exception:
            log.exception("mlgate: building the admin and workflow API failed")
            raise

    @asynccontextmanager
    async def lifespan_context(self) -> AsyncIterator[None]:
        """Startup and shutdown (ASGI lifespan; tests may enter it directly)."""
        settings = self.settings
        server = await asyncio.to_thread(
            functools.partial(
                Server.build,
                settings,
                metrics=self.metrics,
                access_log=self.access_log,
                services=self.services,
            )
        )
        self.server = self.edge.server = server
        self.edge.stats = server.stats  # the dashboard's per-minute stats (issue 17)
        await server.start()
        # Everything built so far (modules, models, the app) lives as long as the process:
        # move it out of the cyclic GC's reach. Otherwise each full collection walks it all,
        # which under many concurrent requests costs a large share of the throughput
        # (docs/benchmarks.md). Refcounting still frees what is dropped later. No collection
        # first: it would lengthen every cold start to free a few startup objects.
        gc.freeze()
        self.metrics.startup_seconds.set(time.time() - _PROCESS_STARTED)
        log.info("mlgate ready on %s:%s", settings.host, settings.port)
        self._rest = asyncio.get_running_loop().create_task(self._finish_startup(server), name="mlgate-rest")
        drain = Drain(settings.shutdown_delay_s, on_drain=functools.partial(_mark_draining, server))
        drain.install()
        try:
            yield
        finally:
            await drain.uninstall()
            server.dataplane.ready = False
            with contextlib.suppress(Exception):
                await self._rest  # a build still running finishes first (or has failed: logged)
            await server.stop()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol around :meth:`lifespan_context` (as Starlette's router runs it)."""
        started = False
        await receive()  # lifespan.startup
        try:
            async with self.lifespan_context():
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except BaseException:
            message = traceback.format_exc()
            await send(
                {
                    "type": "lifespan.shutdown.failed" if started else "lifespan.startup.failed",
                    "message": message,
                }
            )
            raise
        await send({"type": "lifespan.shutdown.complete"})


def _mark_draining(server: Server) -> None:
    server.draining = True


def _router_labeler(api: FastAPI) -> Callable[[str, str], str | None]:
    """The route template FastAPI would match for (method, path): metric labels of refusals
    answered before the application runs (a 413 by Content-Length, a timeout)."""
    from starlette.routing import Match

    routes = list(api.router.routes)

    def label(method: str, path: str) -> str | None:
        scope = {"type": "http", "path": path, "root_path": "", "method": method}
        partial = None
        for route in routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "path", None)
            if match is Match.PARTIAL and partial is None:
                partial = getattr(route, "path", None)
        return partial

    return label


def _build_fastapi(app: MlgateApp) -> FastAPI:
    """FastAPI with every route (the edge-served ones too, for the docs), the error handlers and CORS."""
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware

    from mlgate.http import (
        routes_access,
        routes_admin,
        routes_alerts,
        routes_aliases,
        routes_auth,
        routes_capture,
        routes_dashboard,
        routes_docs,
        routes_drift,
        routes_models,
        routes_ops,
        routes_services,
        routes_sfn,
        routes_shadow,
        routes_stats,
        routes_train,
        routes_v2,
        routes_workflows,
    )
    from mlgate.http.errors import install_error_handlers
    from mlgate.http.jsonio import JSONResponse

    settings = app.settings
    api = FastAPI(
        title="mlgate",
        version=__version__,
        description="Machine-learning models as secure, metered, monitored HTTP APIs.",
        default_response_class=JSONResponse,
        openapi_url=None,  # routes_docs serves these: the models' schemas, assets shipped with mlgate
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(api)
    api.include_router(routes_ops.router)
    api.include_router(routes_models.router)
    api.include_router(routes_v2.router)
    api.include_router(routes_admin.router)
    api.include_router(routes_aliases.router)
    api.include_router(routes_auth.router)
    api.include_router(routes_access.router)
    api.include_router(routes_workflows.router)
    api.include_router(routes_sfn.router)  # the AWS Step Functions API on POST / (issue 19)
    api.include_router(routes_capture.router)
    api.include_router(routes_drift.router)
    api.include_router(routes_alerts.router)
    api.include_router(routes_train.router)  # train jobs, retrain on drift, history (issue 16)
    api.include_router(routes_shadow.router)  # a shadow version's comparison (issue 16)
    api.include_router(routes_stats.router)  # the dashboard's JSON APIs (issue 17)
    api.include_router(routes_dashboard.router)  # /dashboard and its sign-in (issue 17)
    for service in app.services:
        routes_services.mount(api, service)
    routes_docs.install(api, lambda: app.server)
    if settings.cors.origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors.origins,
            allow_credentials=settings.cors.allow_credentials,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
            expose_headers=[
                "x-request-id",
                "retry-after",
                "retry-after-ms",
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-quota-limit",
                "x-quota-remaining",
                "x-quota-reset",
            ],
        )
    api.openapi()  # generated now, in the build thread, not by the first /docs request
    return api


def create_app(settings: Settings | None = None) -> MlgateApp:
    """Build the ASGI app. Example: ``uvicorn.run(create_app(Settings(port=9000)))``."""
    settings = settings or load_settings()
    apply_process_environment(settings)
    return MlgateApp(
        settings,
        metrics=Metrics(),
        access_log=AccessLog(settings.log),
        services=discover_services(settings.services),
    )


def create_app_from_env() -> MlgateApp:
    """Factory for ``uvicorn --factory`` (one call per worker process)."""
    return create_app(load_settings())
