"""The composition root: ``create_app(settings)`` builds every component from one Settings.

Nothing is created at import time. Startup (lifespan) migrates the database, installs the
bootstrap admin key, registers bundled and URI-declared models, and loads aliased
versions; ``/readyz`` answers 200 only after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
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
from mlgate.http.drain import Drain
from mlgate.http.errors import install_error_handlers
from mlgate.http.jsonio import JSONResponse
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
from mlgate.workflows.service import WorkflowService, create_workflow_service

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
    workflows: WorkflowService
    services: list[Service] = field(default_factory=list)
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
            settings.limiter.url, engine=repository.engine, redis_down=settings.limiter.redis_down
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
            workflows=create_workflow_service(
                engine=repository.engine,
                store=store,
                s3=settings.s3,
                dataplane=dataplane,
                metrics=metrics,
                services=services,
            ),
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
        self.workflows.deploy_bundled([w for s in self.services for w in s.workflows])


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


class MlgateApp(FastAPI):
    """FastAPI with mlgate's :class:`~mlgate.http.middleware.Edge` in front of its whole stack.

    The edge sheds load, times, logs and meters every HTTP request and serves the predict
    routes itself; the rest reaches FastAPI (``FastAPI.__call__``) as usual.
    """

    edge: Edge | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        edge = self.edge
        if edge is not None and scope["type"] == "http":
            await edge(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def call_stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own stack (what the edge passes a request on to)."""
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> MlgateApp:
    """Build the ASGI app. Example: ``uvicorn.run(create_app(Settings(port=9000)))``."""
    settings = settings or load_settings()
    apply_process_environment(settings)
    metrics = Metrics()
    access_log = AccessLog(settings.log)
    services = discover_services(settings.services)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server = await asyncio.to_thread(
            functools.partial(
                Server.build, settings, metrics=metrics, access_log=access_log, services=services
            )
        )
        app.state.server = server
        access_log.start()
        await asyncio.to_thread(server.bootstrap)
        usage_task = asyncio.get_running_loop().create_task(server.usage.run(), name="mlgate-usage")
        await server.dataplane.start()
        await server.workflows.start()  # marks executions a crash left RUNNING as FAILED
        # Everything built so far (modules, models, the app) lives as long as the process:
        # move it out of the cyclic GC's reach. Otherwise each full collection walks it all,
        # which under many concurrent requests (more objects promoted, more full collections)
        # cost ~25% of the throughput. Refcounting still frees what is dropped later. No
        # collection first: it costs ~45 ms of every cold start, and the startup garbage it
        # would free is tiny and bounded (measured: ~150 objects, ~11 kB with temperatura).
        gc.freeze()
        metrics.startup_seconds.set(time.time() - _PROCESS_STARTED)
        log.info("mlgate ready on %s:%s", settings.host, settings.port)
        drain = Drain(settings.shutdown_delay_s, on_drain=functools.partial(_mark_draining, server))
        drain.install()
        try:
            yield
        finally:
            await drain.uninstall()
            server.dataplane.ready = False
            await server.workflows.stop()  # waits briefly, then aborts running executions
            await server.dataplane.stop()
            usage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await usage_task
            await asyncio.to_thread(server.usage.close)
            await server.limiter.close()
            access_log.stop()
            server.repository.close()

    app = MlgateApp(
        title="mlgate",
        version=__version__,
        description="Machine-learning models as secure, metered, monitored HTTP APIs.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    install_error_handlers(app)
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

    serving = ServingRoutes()  # the predict hot path, served by the edge before FastAPI's stack
    app.include_router(routes_ops.router)
    app.include_router(routes_models.router)
    routes_models.install_serving_routes(serving)
    app.include_router(routes_v2.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_auth.router)
    app.include_router(routes_access.router)
    app.include_router(routes_workflows.router)
    for service in services:
        routes_services.mount(app, service, serving)
    if settings.cors.origins:
        app.add_middleware(
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
    path_limits = {
        r.path: max(r.max_body_bytes, settings.max_body_bytes)
        for s in services
        for r in s.routes
        if r.max_body_bytes is not None
    }
    app.edge = Edge(
        app.call_stack,
        owner=app,
        serving=serving,
        bypass_cross_origin=bool(settings.cors.origins),
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        access_log=access_log,
        path_limits=path_limits,
        max_inflight=settings.max_inflight,
        usage_sync=settings.limiter.usage_sync,
    )
    return app


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
    finally:
        server.repository.close()


def create_app_from_env() -> MlgateApp:
    """Factory for ``uvicorn --factory`` (one call per worker process)."""
    return create_app(load_settings())
