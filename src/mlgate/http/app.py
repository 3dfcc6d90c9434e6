"""The composition root: ``create_app(settings)`` builds every component from one Settings.

Nothing is created at import time. Startup (lifespan) migrates the database, installs the
bootstrap admin key, registers bundled and URI-declared models, and loads aliased
versions; ``/readyz`` answers 200 only after that.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI

from mlgate import __version__
from mlgate.access.keys import KeyStore
from mlgate.cache import ArtifactCache
from mlgate.dataplane import DataPlane
from mlgate.http.errors import install_error_handlers
from mlgate.http.jsonio import JSONResponse
from mlgate.http.middleware import EdgeMiddleware
from mlgate.registration import Registrar
from mlgate.repository import Repository
from mlgate.services import discover_services
from mlgate.settings import Settings, load_settings
from mlgate.store import ArtifactStore, open_store
from mlgate.telemetry.access_log import AccessLog
from mlgate.telemetry.metrics import Metrics
from mlgate.types import Service

__all__ = ["Server", "create_app", "create_app_from_env"]

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
    services: list[Service] = field(default_factory=list)
    admin_key_created: str | None = None

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
            keys=KeyStore(repository.engine),
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
        for service in self.services:
            for bundled in service.models:
                self.registrar.register_bundled(bundled)
        for name, uri in self.settings.declared_uris.items():
            self.registrar.register_uri(name, uri)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app. Example: ``uvicorn.run(create_app(Settings(port=9000)))``."""
    settings = settings or load_settings()
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
        await server.dataplane.start()
        metrics.startup_seconds.set(time.time() - _PROCESS_STARTED)
        log.info("mlgate ready on %s:%s", settings.host, settings.port)
        try:
            yield
        finally:
            await server.dataplane.stop()
            access_log.stop()
            server.repository.close()

    app = FastAPI(
        title="mlgate",
        version=__version__,
        description="Machine-learning models as secure, metered, monitored HTTP APIs.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    install_error_handlers(app)
    from mlgate.http import routes_admin, routes_models, routes_ops, routes_services, routes_v2

    app.include_router(routes_ops.router)
    app.include_router(routes_models.router)
    app.include_router(routes_v2.router)
    app.include_router(routes_admin.router)
    for service in services:
        routes_services.mount(app, service)
    app.add_middleware(
        EdgeMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics, access_log=access_log
    )
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (one call per worker process)."""
    return create_app(load_settings())
