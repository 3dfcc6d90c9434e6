"""The composition root: ``create_app(settings)`` builds every component from one Settings.

Nothing is created at import time. Startup (lifespan) migrates the database, installs the
bootstrap admin key, registers bundled and URI-declared models, and loads aliased
versions; ``/readyz`` answers 200 only after that.

Startup is in two steps, because cold start is a target (a process answering its first
prediction): what the edge serves itself — predictions, probes, metrics — is ready when
``/readyz`` is; the rest of the application — FastAPI with the admin and workflow API and the
docs, and the workflow service — is built right after, in a thread (its imports and route
building are most of a cold start: ~0.5 s). A request for it that arrives earlier waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from mlgate import __version__
from mlgate.access.gate import Gate
from mlgate.access.keys import KeyStore
from mlgate.access.limiter import LimiterStorage, open_limiter_storage
from mlgate.access.plans import PlanStore, ensure_reference_plan
from mlgate.access.tokens import TokenIssuer, check_secret, load_or_create_secret
from mlgate.access.usage import UsageRecorder
from mlgate.access.users import UserStore
from mlgate.cache import ArtifactCache
from mlgate.dataplane import DataPlane
from mlgate.http import endpoints
from mlgate.http.drain import Drain
from mlgate.http.middleware import Edge
from mlgate.http.serving import ServingRoutes
from mlgate.registration import Registrar
from mlgate.repository import Repository
from mlgate.services import discover_services
from mlgate.settings import Settings, apply_process_environment, load_settings
from mlgate.store import ArtifactStore, open_store
from mlgate.telemetry.access_log import AccessLog
from mlgate.telemetry.metrics import Metrics
from mlgate.types import Service

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mlgate.workflows.service import WorkflowService

__all__ = ["MlgateApp", "Server", "create_app", "create_app_from_env"]

log = logging.getLogger("mlgate")
_PROCESS_STARTED = time.time()


@dataclass
class Server:
    """Everything one server process holds, reachable from routes as ``app.state.server``."""

    settings: Settings
    repository: Repository
    store: ArtifactStore
    cache: ArtifactCache
    metrics: Metrics
    access_log: AccessLog
    dataplane: DataPlane
    registrar: Registrar
    keys: KeyStore
    users: UserStore
    plans: PlanStore
    limiter: LimiterStorage
    usage: UsageRecorder
    gate: Gate
    services: list[Service] = field(default_factory=list)
    #: built with the rest of the application, right after startup (see the module docstring)
    workflows: WorkflowService | None = None
    admin_key_created: str | None = None
    #: set on SIGTERM (see mlgate.http.drain): readiness answers 503 while requests finish
    draining: bool = False

    @classmethod
    def build(
        cls, settings: Settings, *, metrics: Metrics, access_log: AccessLog, services: list[Service]
    ) -> Server:
        assert settings.database_url is not None and settings.store_url is not None
        assert settings.cache_dir is not None
        repository = Repository.open(settings.database_url)
        store = open_store(settings.store_url, s3=settings.s3)
        cache = ArtifactCache(settings.cache_dir, store=store, s3=settings.s3)
        processors = {name: p for s in services for name, p in s.processors.items()}
        keys = KeyStore(repository.engine)
        users = UserStore(repository.engine)
        plans = PlanStore(repository.engine, default_plan=settings.limiter.default_plan)
        limiter = open_limiter_storage(
            settings.limiter.url,
            engine=repository.engine,
            redis_down=settings.limiter.redis_down,
            data_dir=settings.data_dir,
        )
        usage = UsageRecorder(repository.engine, flush_interval=settings.limiter.usage_flush_s)
        gate = Gate(
            settings=settings.auth,
            keys=keys,
            plans=plans,
            limiter=limiter,
            usage=usage,
            users=users,
            tokens=TokenIssuer(_jwt_secret(settings), minutes=settings.auth.token_minutes),
        )
        dataplane = DataPlane(
            settings=settings, repository=repository, cache=cache, metrics=metrics, processors=processors
        )
        return cls(
            settings=settings,
            repository=repository,
            store=store,
            cache=cache,
            metrics=metrics,
            access_log=access_log,
            dataplane=dataplane,
            registrar=Registrar(repository=repository, store=store, settings=settings),
            keys=keys,
            users=users,
            plans=plans,
            limiter=limiter,
            usage=usage,
            gate=gate,
            services=services,
        )

    def bootstrap(self) -> None:
        """Admin key, bundled models and URI-declared models (idempotent; safe on every start)."""
        created = self.keys.ensure_admin(configured=self.settings.admin_key)
        if created is not None and self.settings.admin_key is None:
            self.admin_key_created = created.secret
            print(
                "\n  mlgate: bootstrap admin key created. It is shown ONCE and stored only as a hash:\n"
                f"    {created.secret}\n"
                "  Send it as the x-api-key header on admin routes.\n",
                file=sys.stderr,
                flush=True,
            )
        ensure_reference_plan(self.plans)  # rate 10, burst 10, 1,000 a month: the reference deployment
        for service in self.services:
            for bundled in service.models:
                self.registrar.register_bundled(bundled)
        for name, uri in self.settings.declared_uris.items():
            self.registrar.register_uri(name, uri)

    def build_workflows(self) -> WorkflowService:
        """The workflow service over this server's dataplane and store, with services' workflows
        deployed where absent (idempotent; blocking: run it in a thread)."""
        if self.workflows is None:
            from mlgate.workflows.service import create_workflow_service

            workflows = create_workflow_service(
                engine=self.repository.engine,
                store=self.store,
                s3=self.settings.s3,
                dataplane=self.dataplane,
                metrics=self.metrics,
                services=self.services,
            )
            workflows.deploy_bundled([w for s in self.services for w in s.workflows])
            self.workflows = workflows
        return self.workflows


def _mark_draining(server: Server) -> None:
    server.draining = True


def _jwt_secret(settings: Settings) -> str:
    """The configured secret, or one generated once into the data directory; weak ones refused."""
    if settings.auth.jwt_secret is not None:
        secret = settings.auth.jwt_secret.get_secret_value()
    else:
        secret = load_or_create_secret(settings.data_dir / "jwt.secret")
    check_secret(secret, dev_mode=settings.dev_mode)
    return secret


class MlgateApp:
    """mlgate's ASGI application: the :class:`~mlgate.http.middleware.Edge` in front of everything.

    The edge sheds load, times, logs and meters every HTTP request and serves the endpoints of
    :mod:`mlgate.http.endpoints` itself (predictions, probes, metrics); the rest goes to FastAPI
    (:meth:`api`: the admin and workflow API, the docs), built after startup in a thread. Routes
    reach the server as ``request.app.state.server`` (FastAPI shares this ``state``).
    """

    def __init__(
        self, settings: Settings, *, metrics: Metrics, access_log: AccessLog, services: list[Service]
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.access_log = access_log
        self.services = services
        self.state = State()
        serving = ServingRoutes()
        endpoints.install(serving, services)
        path_limits = {
            r.path: max(r.max_body_bytes, settings.max_body_bytes)
            for s in services
            for r in s.routes
            if r.max_body_bytes is not None
        }
        self.edge = Edge(
            self._pass_on,
            owner=self,
            serving=serving,
            bypass_cross_origin=bool(settings.cors.origins),
            max_body_bytes=settings.max_body_bytes,
            metrics=metrics,
            access_log=access_log,
            path_limits=path_limits,
            max_inflight=settings.max_inflight,
            usage_sync=settings.limiter.usage_sync,
        )
        self._api: FastAPI | None = None
        self._api_lock = threading.Lock()
        self._rest: asyncio.Task[None] | None = None  # builds the rest of the app after startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.edge(scope, receive, send)
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
        """Build FastAPI (idempotent, thread-safe; blocking: ~0.3 s of imports and route building)."""
        with self._api_lock:
            if self._api is None:
                self._api = _build_fastapi(self)
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
        self.state.server = server
        self.access_log.start()
        await asyncio.to_thread(server.bootstrap)
        usage_task = asyncio.get_running_loop().create_task(server.usage.run(), name="mlgate-usage")
        await server.dataplane.start()
        # Everything built so far (modules, models, the app) lives as long as the process:
        # move it out of the cyclic GC's reach. Otherwise each full collection walks it all,
        # which under many concurrent requests (more objects promoted, more full collections)
        # cost ~25% of the throughput. Refcounting still frees what is dropped later. No
        # collection first: it costs ~45 ms of every cold start, and the startup garbage it
        # would free is tiny and bounded (measured: ~150 objects, ~11 kB with temperatura).
        gc.freeze()
        metrics = self.metrics
        metrics.startup_seconds.set(time.time() - _PROCESS_STARTED)
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
            if server.workflows is not None:
                await server.workflows.stop()  # waits briefly, then aborts running executions
            await server.dataplane.stop()
            usage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await usage_task
            await asyncio.to_thread(server.usage.close)
            await server.limiter.close()
            self.access_log.stop()
            server.repository.close()

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


def _build_fastapi(app: MlgateApp) -> FastAPI:
    """FastAPI with every route (the edge-served ones too, for the docs), the error handlers and CORS."""
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware

    from mlgate.http import (
        routes_access,
        routes_admin,
        routes_auth,
        routes_models,
        routes_ops,
        routes_services,
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
    )
    api.state = app.state  # routes read request.app.state.server
    install_error_handlers(api)
    api.include_router(routes_ops.router)
    api.include_router(routes_models.router)
    api.include_router(routes_v2.router)
    api.include_router(routes_admin.router)
    api.include_router(routes_auth.router)
    api.include_router(routes_access.router)
    api.include_router(routes_workflows.router)
    for service in app.services:
        routes_services.mount(api, service)
    if settings.cors.origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors.origins,
            allow_credentials=settings.cors.allow_credentials,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
            expose_headers=[
                "x-request-id",
                "retry-after",
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


def bootstrap_once(settings: Settings) -> None:
    """Run startup registration in the parent before forking workers, so they don't race it."""
    server = Server.build(
        settings,
        metrics=Metrics(),
        access_log=AccessLog(settings.log),
        services=discover_services(settings.services),
    )
    try:
        server.bootstrap()
        server.build_workflows()  # bundled workflows deployed once, before the workers start
    finally:
        server.repository.close()


def create_app_from_env() -> MlgateApp:
    """Factory for ``uvicorn --factory`` (one call per worker process)."""
    return create_app(load_settings())
