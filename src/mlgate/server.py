"""The components one server process holds, built from one :class:`~mlgate.settings.Settings`.

:class:`Server` is the set of components (registry, store, cache, dataplane, access stores,
gate, usage, telemetry, workflows) and their start and stop. It knows nothing of HTTP:
``mlgate serve`` builds it under uvicorn (:mod:`mlgate.http.app`), and the same object can be
built inside an AWS Lambda handler or a Ray Serve replica. Importing this module imports no
web framework (a test keeps it so).

Example::

    server = Server.create(load_settings())
    await server.start()            # migrations, bootstrap, models loaded, usage flushing
    prediction = await server.dataplane.predict("temperatura", {"temperaturas": [...]})
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlgate.access.gate import Gate
from mlgate.access.generation import AccessGeneration
from mlgate.access.keys import KeyStore
from mlgate.access.limiter import LimiterStorage, open_limiter_storage
from mlgate.access.plans import UNMETERED_PLAN, PlanStore, ensure_builtin_plans
from mlgate.access.sessions import SessionStore
from mlgate.access.tokens import TokenIssuer, check_secret, load_or_create_secret
from mlgate.access.usage import UsageRecorder
from mlgate.access.users import UserStore
from mlgate.cache import ArtifactCache
from mlgate.dataplane import DataPlane
from mlgate.lifecycle.canary import CanaryGuardian
from mlgate.lifecycle.shadow import ShadowRunner
from mlgate.monitoring.alerts import AlertEngine
from mlgate.monitoring.capture import Capture
from mlgate.monitoring.monitor import DriftMonitor
from mlgate.registration import Registrar
from mlgate.repository import Repository
from mlgate.services import discover_services
from mlgate.settings import Settings
from mlgate.store import ArtifactStore, open_store
from mlgate.telemetry.access_log import AccessLog
from mlgate.telemetry.metrics import Metrics
from mlgate.telemetry.stats import StatsRecorder
from mlgate.telemetry.stats_read import StatsReader
from mlgate.telemetry.stats_rows import StatsTables
from mlgate.types import Service

if TYPE_CHECKING:
    from mlgate.lifecycle.jobs import TrainJobs
    from mlgate.workflows.service import WorkflowService

__all__ = ["Server", "bootstrap_once", "stats_tables"]

log = logging.getLogger("mlgate")


@dataclass
class Server:
    """Everything one server process holds; HTTP routes reach it as ``exchange.server``."""

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
    #: data capture, drift, alert rules (docs/monitoring.md)
    capture: Capture
    drift: DriftMonitor
    alerts: AlertEngine
    #: signed-in /dashboard sessions (issue 17; resolved by the read-only API calls it makes)
    sessions: SessionStore
    services: list[Service] = field(default_factory=list)
    #: built by :meth:`build_workflows` (``mlgate serve``: right after startup, in a thread)
    workflows: WorkflowService | None = None
    #: training runs as background jobs (lifecycle/jobs.py; built by :meth:`start`)
    train_jobs: TrainJobs | None = None
    #: rolls failing canaries back (the dataplane router's ``on_breach``; set up by :meth:`start`)
    canary: CanaryGuardian | None = None
    #: mirrors shadowed aliases' traffic and compares (the dataplane's ``on_shadow``; :meth:`start`)
    shadow: ShadowRunner | None = None
    #: set on SIGTERM: readiness answers 503 while requests finish
    draining: bool = False
    #: the dashboard's per-minute stats (issue 17; None when ``stats.enabled`` is off)
    stats: StatsRecorder | None = None
    #: epoch seconds when :meth:`start` ran (the stats API's uptime)
    started_at: float = 0.0
    _usage_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, settings: Settings) -> Server:
        """Build from settings alone: fresh metrics and access log, the enabled services."""
        return cls.build(
            settings,
            metrics=Metrics(),
            access_log=AccessLog(settings.log),
            services=discover_services(settings.services),
        )

    @classmethod
    def build(
        cls, settings: Settings, *, metrics: Metrics, access_log: AccessLog, services: list[Service]
    ) -> Server:
        """Open every component (blocking: the database, the store; run it in a thread)."""
        assert settings.database_url is not None and settings.store_url is not None
        assert settings.cache_dir is not None
        repository = Repository.open(settings.database_url)
        store = open_store(settings.store_url, s3=settings.s3)
        cache = ArtifactCache(settings.cache_dir, store=store, s3=settings.s3)
        processors = {name: p for s in services for name, p in s.processors.items()}
        access = AccessGeneration(repository.engine)  # one per process: the access caches' validity
        keys = KeyStore(repository.engine, generation=access)
        users = UserStore(repository.engine, generation=access)
        plans = PlanStore(repository.engine, default_plan=settings.limiter.default_plan, generation=access)
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
            quota_usage=metrics.quota_used,
        )
        dataplane = DataPlane(
            settings=settings, repository=repository, cache=cache, metrics=metrics, processors=processors
        )
        stats = None
        if settings.stats.enabled:  # issue 17: per-minute stats, flushed by a thread
            stats = StatsRecorder(
                repository.engine,
                stats_tables(),
                flush_s=settings.stats.flush_s,
                retention_days=settings.stats.retention_days,
                max_keys=settings.stats.max_keys,
            )
            dataplane.stats = stats  # read by DataPlane._load (batch sizes)
            # the /v1/stats reader, warmed by the recorder's thread once an hour
            stats.reader = StatsReader(repository.engine, stats_tables())
        return cls(
            stats=stats,
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
            capture=Capture(settings=settings, store=store, engine=repository.engine, metrics=metrics),
            drift=DriftMonitor(
                settings=settings,
                store=store,
                engine=repository.engine,
                repository=repository,
                metrics=metrics,
            ),
            alerts=AlertEngine(settings=settings, engine=repository.engine, metrics=metrics),
            sessions=SessionStore(
                repository.engine,
                keys=keys,
                users=users,
                life_s=settings.auth.dashboard_session_minutes * 60.0,
                generation=access,
            ),
            services=services,
        )

    def bootstrap(self) -> None:
        """Plans, admin key, bundled and URI-declared models (idempotent; every start)."""
        # The reference plan (rate 10, burst 10, 1,000 a month), the unmetered plan, and the
        # default plan checked: it must exist and limit something.
        ensure_builtin_plans(self.plans)
        configured = self.settings.admin_key
        generate = configured is None and self.settings.generate_admin_key
        created = self.keys.ensure_admin(configured=configured) if configured or generate else None
        if created is not None:
            # The operator's own key is unmetered by an explicit attachment (``keys list`` shows it).
            self.plans.attach(created.key.id, UNMETERED_PLAN)
        if created is not None and configured is None:
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

    async def start(self) -> None:
        """Access log, bootstrap, usage flushing, models loaded: ready to serve."""
        self.access_log.start()
        self.started_at = time.time()
        if self.stats is not None:
            self.stats.start()
        await asyncio.to_thread(self.bootstrap)
        self._usage_task = asyncio.get_running_loop().create_task(self.usage.run(), name="mlgate-usage")
        self.canary = CanaryGuardian(
            dataplane=self.dataplane, policies=self.dataplane.policies, metrics=self.metrics
        )
        self.dataplane.router.on_breach = self.canary.on_breach
        self.shadow = ShadowRunner(
            dataplane=self.dataplane,
            engine=self.repository.engine,
            metrics=self.metrics,
            capture=self.capture,
        )
        self.dataplane.on_shadow = self.shadow.on_shadow
        await self.shadow.start()
        await self.dataplane.start()
        await self.capture.start()
        await self.drift.start()
        # train jobs, and retrain on drift as a subscriber of the alert engine (issue 16)
        from mlgate.lifecycle.jobs import TrainJobs
        from mlgate.lifecycle.retrain import Retrainer

        self.train_jobs = TrainJobs(
            engine=self.repository.engine, keys=self.keys, plans=self.plans, settings=self.settings
        )
        self.alerts.subscribe(Retrainer(engine=self.repository.engine, jobs=self.train_jobs).on_firing)
        await self.alerts.start()

    async def stop(self) -> None:
        """Workflows, models, usage (flushed), limiter, access log (flushed), database: in that order."""
        self.dataplane.ready = False
        if self.workflows is not None:
            await self.workflows.stop()  # waits briefly, then aborts running executions
        if self.train_jobs is not None:  # running train children killed, marked failed
            await asyncio.to_thread(self.train_jobs.stop)
        await self.alerts.stop()
        if self.canary is not None:
            await self.canary.stop()
        if self.shadow is not None:  # before the models and capture: calls end, figures written
            await self.shadow.stop()
        await self.drift.stop()
        await self.dataplane.stop()
        await self.capture.stop()  # after the models: what they answered last is written out
        if self._usage_task is not None:
            self._usage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._usage_task
        await asyncio.to_thread(self.usage.close)
        if self.stats is not None:  # its last counts written out
            await asyncio.to_thread(self.stats.stop)
        await self.limiter.close()
        self.access_log.stop()
        self.repository.close()

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
                settings=self.settings.workflows,
                observer=self.capture,  # model calls sampled, Fail-state executions kept for review
                arn_region=self.settings.sfn.region,  # $$'s ARNs = the Step Functions API's
                arn_account=self.settings.sfn.account,
            )
            workflows.deploy_bundled([w for s in self.services for w in s.workflows])
            self.workflows = workflows
        return self.workflows


def stats_tables() -> StatsTables:
    """The stats tables and write transaction the dashboard's recorder and reader use."""
    from mlgate.db.engine import write_tx
    from mlgate.db.tables import STATS_LATENCY_BOUNDS, api_keys, stats_traffic, stats_usage

    return StatsTables(
        traffic=stats_traffic,
        usage=stats_usage,
        keys=api_keys,
        bounds=STATS_LATENCY_BOUNDS,
        write_tx=write_tx,
    )


def _jwt_secret(settings: Settings) -> str:
    """The configured secret, or one generated once into the data directory; weak ones refused."""
    if settings.auth.jwt_secret is not None:
        secret = settings.auth.jwt_secret.get_secret_value()
    else:
        secret = load_or_create_secret(settings.data_dir / "jwt.secret")
    check_secret(secret, dev_mode=settings.dev_mode)
    return secret


def bootstrap_once(settings: Settings) -> None:
    """Run startup registration in the parent before forking workers, so they don't race it."""
    server = Server.create(settings)
    try:
        server.bootstrap()
        server.build_workflows()  # bundled workflows deployed once, before the workers start
    finally:
        server.repository.close()
