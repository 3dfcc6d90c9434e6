"""Ray Serve: each model a Ray Serve deployment, mlgate's gateway in front (docs/deploy.md, "Ray Serve").

Two halves, one module (``pip install 'mlgate[ray]'``; ``ray`` is imported only when used):

**The replica** (:class:`Replica`, deployed as application and deployment ``mlgate-<model>`` by
:func:`deploy` / ``mlgate ray deploy``). Each replica builds the same components ``mlgate serve``
builds (:meth:`mlgate.server.Server.create`, started) from the deployer's ``MLGATE_*`` settings
(:func:`replica_environment`: the registry, the store; no admin key, no JWT secret, no limiter, no
capture, alerts or stats of its own) and loads its model's aliased versions. It answers
``predict(version, payload)`` with ``server.dataplane.predict``: the service processor's decoding,
the runtime's decoding, the dynamic batcher, the prediction and the encoding all run in the
replica. An :class:`~mlgate.errors.MlgateError` is returned as data (:func:`error_envelope`), never
raised across Ray, and rebuilt on the other side as the same class (:func:`rebuild_error`), so the
gateway answers the status and body single-process mlgate answers.

**The gateway** (``mlgate serve`` with ``MLGATE_RAY__ADDRESS``): :func:`connect` joins the cluster as
a driver and returns :class:`RayModels`, which the dataplane uses to open each version as a
:class:`RayModel` (a handle to its deployment; :attr:`mlgate.dataplane.DataPlane.remote`). Keys,
plans, limits (Redis/PostgreSQL), alias resolution, canary routing, shadows, capture, metrics and
usage stay in the gateway: **Ray Serve adds no authentication and no global rate limit** — its HTTP
proxy is not started (:func:`deploy` runs Serve with ``proxy_location="Disabled"``), the
deployments have no route prefix, and the only way in is through the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlgate.errors import (
    ConfigurationError,
    MlgateError,
    ModelLoadError,
    Overloaded,
    PredictionFailed,
    PredictionTimeout,
    exception_summary,
)
from mlgate.runtimes.base import LoadContext, ModelRuntime
from mlgate.settings import RaySettings, Settings, load_settings
from mlgate.types import VersionInfo

if TYPE_CHECKING:
    from mlgate.server import Server

__all__ = [
    "APP_PREFIX",
    "GATEWAY_SERVE_ENV",
    "REPLICA_DEFAULTS",
    "REPLICA_SERVE_ENV",
    "RayModel",
    "RayModels",
    "RemoteRuntime",
    "Replica",
    "app_name",
    "connect",
    "delete",
    "deploy",
    "deployment_options",
    "error_envelope",
    "rebuild_error",
    "replica_environment",
    "status",
]

log = logging.getLogger("mlgate.ray")

#: every application (and its one deployment) is ``mlgate-<model>``
APP_PREFIX = "mlgate-"

#: what a replica runs with, whatever the deployer's environment says: the gateway meters, captures,
#: records stats and evaluates alerts; a replica only serves its model
REPLICA_DEFAULTS: dict[str, str] = {
    "MLGATE_LOAD_ON_START": "false",  # the replica loads its own model only
    "MLGATE_LIMITER__URL": "memory://",  # never consulted: nothing reaches a replica but the gateway
    "MLGATE_ALERTS__ENABLED": "false",
    "MLGATE_STATS__ENABLED": "false",
    "MLGATE_MONITOR__INTERVAL_S": "0",
    "MLGATE_CAPTURE__SAMPLE": "0",
    "MLGATE_LOG__ACCESS_STDOUT": "false",
}
#: never passed to replicas: what they do not need is not spread over the cluster
_WITHHELD = (
    "MLGATE_RAY__",
    "MLGATE_ADMIN_KEY",
    "MLGATE_AUTH__JWT_SECRET",
    "MLGATE_DATA_DIR",
    "MLGATE_CACHE_DIR",
)


#: Ray Serve's own switches (read when ``ray.serve`` is imported), set unless the environment sets
#: them: the gateway's handles route on its own event loop, a replica runs mlgate on the replica's
#: loop (one thread hop less each way: about half the gateway's CPU per request, docs/benchmarks.md);
#: never "direct ingress", which would give every replica an HTTP port of its own, without auth
GATEWAY_SERVE_ENV: dict[str, str] = {
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",  # to the replica's inter-deployment gRPC server, not a task
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}
REPLICA_SERVE_ENV: dict[str, str] = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}


def app_name(model: str) -> str:
    """The Ray Serve application (and deployment) name of ``model``."""
    return f"{APP_PREFIX}{model}"


# -- errors across the Ray boundary ---------------------------------------------------------------


def error_envelope(exc: MlgateError) -> dict[str, Any]:
    """What a replica returns for an mlgate error (plain data: nothing to unpickle on the gateway)."""
    envelope: dict[str, Any] = {
        "code": exc.code,
        "status": exc.status,
        "message": exc.message,
        "details": exc.details,
    }
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        envelope["retry_after"] = float(retry_after)
        envelope["headers"] = dict(getattr(exc, "headers", {}) or {})
    return envelope


def _error_classes() -> dict[tuple[str, int], type[MlgateError]]:
    found: dict[tuple[str, int], type[MlgateError]] = {}
    stack: list[type[MlgateError]] = [MlgateError]
    while stack:
        cls = stack.pop()
        found.setdefault((cls.code, cls.status), cls)
        stack.extend(cls.__subclasses__())
    return found


_CLASSES: dict[tuple[str, int], type[MlgateError]] = {}


def rebuild_error(envelope: dict[str, Any]) -> MlgateError:
    """The replica's error as the same :class:`MlgateError` class, message, details and Retry-After
    (a code no class has — a plug-in's own — keeps its code and status on a generated subclass)."""
    code, status = str(envelope["code"]), int(envelope["status"])
    key = (code, status)
    cls = _CLASSES.get(key)
    if cls is None:
        _CLASSES.update(_error_classes())
        cls = _CLASSES.get(key)
        if cls is None:
            cls = _CLASSES[key] = type(f"Remote_{code}", (MlgateError,), {"code": code, "status": status})
    exc = cls.__new__(cls)
    Exception.__init__(exc, envelope["message"])
    exc.message = str(envelope["message"])  # public already
    exc.details = dict(envelope.get("details") or {})
    if "retry_after" in envelope:
        exc.retry_after = envelope["retry_after"]  # type: ignore[attr-defined]
        exc.headers = dict(envelope.get("headers") or {})  # type: ignore[attr-defined]
    return exc


def _unwrap(answer: tuple[bool, Any]) -> Any:
    ok, value = answer
    if ok:
        return value
    raise rebuild_error(value)


# -- the replica ----------------------------------------------------------------------------------


def replica_environment(settings: Settings, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The ``MLGATE_*`` environment a replica builds its settings from: the deployer's, with the
    registry and store as absolute URLs, its own data dir, :data:`REPLICA_DEFAULTS`, and neither
    the Ray settings (a replica serves locally) nor the admin key or JWT secret."""
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if k.startswith("MLGATE_") and not k.startswith(_WITHHELD)}
    assert settings.database_url is not None and settings.store_url is not None
    env["MLGATE_DATABASE_URL"] = settings.database_url  # derived paths are absolute already
    env["MLGATE_STORE_URL"] = settings.store_url
    data = settings.ray.replica_data_dir or (settings.data_dir / "ray")
    env["MLGATE_DATA_DIR"] = str(Path(data).resolve())
    env.update(REPLICA_DEFAULTS)
    return env


class Replica:
    """One Ray Serve replica of one model: the same components as ``mlgate serve``, no HTTP."""

    async def __init__(self, model: str, env: dict[str, str]) -> None:  # type: ignore[misc]
        from mlgate.server import Server

        for name in [k for k in os.environ if k.startswith("MLGATE_")]:
            del os.environ[name]  # the raylet's environment is not this model's configuration
        os.environ.update(env)
        settings = load_settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.server: Server = await asyncio.to_thread(Server.create, settings)
        await self.server.start()
        await self._load_aliased()

    async def _load_aliased(self) -> None:
        """The model's aliased versions (its latest without aliases), as ``mlgate serve`` loads them."""
        repository = self.server.repository
        info = await asyncio.to_thread(repository.get_model, self.model)
        versions = set(info.aliases.values()) or ({info.latest_version} if info.latest_version else set())
        for v in sorted(versions):
            try:
                version = await asyncio.to_thread(repository.get_version, self.model, v)
                await self.server.dataplane.ensure_loaded(version)
            except MlgateError:
                continue  # recorded as failed; a request for it gets the 503

    async def predict(self, version: int, payload: Any) -> tuple[bool, Any]:
        """One raw payload through this process's dataplane: (True, output) or (False, error)."""
        try:
            prediction = await self.server.dataplane.predict(self.model, payload, version=version)
        except MlgateError as exc:
            return False, error_envelope(exc)
        return True, prediction.output

    async def infer(self, version: int, tensors: dict[str, np.ndarray]) -> tuple[bool, Any]:
        """Open Inference Protocol tensors through this process's dataplane."""
        try:
            _, outputs = await self.server.dataplane.infer_tensors(self.model, tensors, version=version)
        except MlgateError as exc:
            return False, error_envelope(exc)
        return True, outputs

    async def describe(self, version: int, _: Any = None) -> tuple[bool, Any]:
        """The version loaded here, and what the gateway needs of it: its metadata, its pricing
        (a tabular model's columns: :meth:`ModelRuntime.units`), and where this replica runs."""
        try:
            info = await self.server.dataplane.resolve(self.model, version)
            loaded = await self.server.dataplane.ensure_loaded(info)
        except MlgateError as exc:
            return False, error_envelope(exc)
        runtime = loaded.runtime
        return True, {
            "metadata": runtime.metadata(),
            "pricing": _pricing(runtime),
            "node_id": _node_id(),
            "pid": os.getpid(),
        }

    def check_health(self) -> None:
        """Ray Serve's health check: a replica whose dataplane stopped is replaced."""
        if not self.server.dataplane.ready:
            raise RuntimeError("the dataplane is not ready")

    async def __del__(self) -> None:
        """Serve's graceful shutdown: models, usage, database closed."""
        server = self.__dict__.pop("server", None)
        if server is not None:
            await server.stop()


def _pricing(runtime: ModelRuntime) -> Any:
    """What prices a request like ``runtime.units`` without the model: None (1 unit a request) or
    the runtime's table of columns (tabular models; small, picklable, no estimator)."""
    if type(runtime).units is ModelRuntime.units:
        return None
    table = getattr(runtime, "_table", None)
    if table is not None and callable(getattr(table, "units", None)):
        return table
    log.warning("%s prices requests itself: the gateway counts 1 unit per request", type(runtime).__name__)
    return None


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


# -- the gateway's side ---------------------------------------------------------------------------


class RemoteRuntime(ModelRuntime):
    """A version's runtime as the gateway sees it: metadata and pricing only (it runs in a replica)."""

    def __init__(self, metadata: dict[str, Any], pricing: Any) -> None:
        self._metadata = metadata
        self._pricing = pricing

    def load(self, ctx: LoadContext) -> None:
        raise ConfigurationError("this model is served by its Ray Serve deployment")

    def decode(self, payload: Any) -> Any:
        raise ConfigurationError("this model is served by its Ray Serve deployment")

    def predict(self, batch: list[Any]) -> list[Any]:
        raise ConfigurationError("this model is served by its Ray Serve deployment")

    def units(self, payload: Any) -> int:
        return int(self._pricing.units(payload)) if self._pricing is not None else 1

    def metadata(self) -> dict[str, Any]:
        return self._metadata


@dataclass
class RayModel:
    """One version served by its deployment (:class:`mlgate.dataplane.RemoteModel`)."""

    info: VersionInfo
    handle: Any  # ray.serve.handle.DeploymentHandle
    runtime: RemoteRuntime
    margin_s: float

    async def predict(self, payload: Any, *, timeout: float) -> Any:
        return await self._call("predict", payload, timeout=timeout)

    async def infer(self, tensors: dict[str, np.ndarray], *, timeout: float) -> dict[str, np.ndarray]:
        outputs: dict[str, np.ndarray] = await self._call("infer", tensors, timeout=timeout)
        return outputs

    async def _call(self, method: str, arg: Any, *, timeout: float) -> Any:
        response = getattr(self.handle, method).remote(self.info.version, arg)
        try:
            answer = await asyncio.wait_for(_awaited(response), timeout + self.margin_s)
        except TimeoutError:
            response.cancel()
            raise PredictionTimeout(
                f"no answer from {app_name(self.info.model)} within {timeout:g} s"
            ) from None
        except MlgateError:
            raise
        except Exception as exc:
            raise _ray_failure(self.info.model, exc) from exc
        return _unwrap(answer)


async def _awaited(response: Any) -> Any:
    return await response


def _ray_failure(model: str, exc: BaseException) -> MlgateError:
    """A failure of Ray itself (not the model's answer) as a client sees it: back-pressure is 503
    ``overloaded`` with Retry-After; a dead or missing replica 503 ``model_load_error``."""
    name = type(exc).__name__
    if name == "BackPressureError":
        return Overloaded(f"every replica of {app_name(model)} is busy", retry_after=1.0)
    if name in ("RayActorError", "ActorDiedError", "ActorUnavailableError", "DeploymentUnavailableError"):
        return ModelLoadError(f"{app_name(model)} has no replica available: {name}")
    log.error("the Ray call to %s failed", app_name(model), exc_info=exc)
    return PredictionFailed(f"the Ray call to {app_name(model)} failed: {exception_summary(exc)}")


class RayModels:
    """The gateway's driver on the cluster: opens versions as :class:`RayModel`
    (:class:`mlgate.dataplane.RemoteModels`)."""

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self._handles: dict[str, Any] = {}

    async def open(self, info: VersionInfo) -> RayModel:
        handle = self._handles.get(info.model)
        if handle is None:
            handle = self._handles[info.model] = await asyncio.to_thread(_app_handle, info.model)
        model = RayModel(info, handle, RemoteRuntime({}, None), self.settings.call_margin_s)
        # the version loaded in (at least) one replica, its metadata and pricing, in one call
        started = time.monotonic()
        described = await model._call("describe", None, timeout=max(60.0, info.manifest.timeout_s or 0))
        model.runtime = RemoteRuntime(described["metadata"], described["pricing"])
        log.info(
            "%s v%s served by %s (described in %.2f s)",
            info.model,
            info.version,
            app_name(info.model),
            time.monotonic() - started,
        )
        return model

    def close(self) -> None:
        import ray

        self._handles.clear()
        if ray.is_initialized():
            ray.shutdown()


def _app_handle(model: str) -> Any:
    from ray import serve

    try:
        return serve.get_app_handle(app_name(model))
    except Exception as exc:  # RayServeException: no such application (or Serve not running)
        raise ModelLoadError(
            f"{model} is not deployed on the Ray cluster (mlgate ray deploy {model}): "
            + exception_summary(exc),
            details={"model": model},
        ) from exc


def _init(settings: RaySettings) -> None:
    for name, value in GATEWAY_SERVE_ENV.items():
        os.environ.setdefault(name, value)
    import ray

    if not ray.is_initialized():
        ray.init(
            address=settings.address,
            namespace=settings.namespace,
            log_to_driver=False,
            include_dashboard=False,
            configure_logging=False,
        )


def connect(settings: Settings) -> RayModels:
    """Join the cluster at ``settings.ray.address`` as a driver (blocking); what the dataplane's
    :data:`~mlgate.dataplane.REMOTE_MODULE` hook calls."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "MLGATE_RAY__ADDRESS is set but Ray is missing: pip install 'mlgate[ray]'"
        ) from exc
    _init(settings.ray)
    return RayModels(settings.ray)


# -- deploying ------------------------------------------------------------------------------------


def deployment_options(
    settings: RaySettings,
    *,
    num_replicas: int | None = None,
    autoscaling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``serve.deployment`` options for one model from the settings (and the CLI's overrides)."""
    actor: dict[str, Any] = {"num_cpus": settings.num_cpus, **settings.actor_options}
    runtime_env = dict(actor.get("runtime_env") or {})
    runtime_env["env_vars"] = {**REPLICA_SERVE_ENV, **(runtime_env.get("env_vars") or {})}
    actor["runtime_env"] = runtime_env
    options: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": settings.max_ongoing_requests,
        "health_check_period_s": 10.0,
        "graceful_shutdown_timeout_s": 30.0,
    }
    scaling = autoscaling if autoscaling is not None else settings.autoscaling
    if scaling:
        options["autoscaling_config"] = dict(scaling)
    else:
        options["num_replicas"] = num_replicas or settings.num_replicas
    if settings.max_replicas_per_node is not None:
        options["max_replicas_per_node"] = settings.max_replicas_per_node
    return options


def deploy(
    settings: Settings,
    models: list[str] | None = None,
    *,
    num_replicas: int | None = None,
    autoscaling: dict[str, Any] | None = None,
) -> list[str]:
    """Run ``mlgate-<model>`` for each model (every registered one by default) on the cluster at
    ``settings.ray.address``, Serve's HTTP proxy off; returns the application names once running.

    The registry is bootstrapped here first (plans, admin key, bundled models), as ``mlgate serve
    --workers N`` does before its workers start, so replicas starting together never race it."""
    from ray import serve

    from mlgate.server import Server

    if settings.ray.address is None:
        raise ConfigurationError("set MLGATE_RAY__ADDRESS (or --address) to the Ray cluster's head")
    server = Server.create(settings)
    try:
        server.bootstrap()
        known = [m.name for m in server.repository.list_models()]
    finally:
        server.repository.close()
    names = models if models else known
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigurationError(f"not in the registry: {', '.join(unknown)}")
    _init(settings.ray)
    serve.start(proxy_location="Disabled")  # Serve's HTTP proxy has no auth: never a way in
    env = replica_environment(settings)
    options = deployment_options(settings.ray, num_replicas=num_replicas, autoscaling=autoscaling)
    deployment = serve.deployment(Replica)
    for model in names:
        app = deployment.options(name=app_name(model), **options).bind(model, env)
        serve.run(app, name=app_name(model), route_prefix=None)
    return [app_name(m) for m in names]


def delete(settings: Settings, models: list[str] | None = None) -> list[str]:
    """Delete ``mlgate-<model>`` applications (every mlgate one by default)."""
    from ray import serve

    _init(settings.ray)
    names = [app_name(m) for m in models] if models else list(status(settings)["applications"])
    for name in names:
        serve.delete(name)
    return names


def status(settings: Settings) -> dict[str, Any]:
    """mlgate's applications on the cluster (``applications``: status, each deployment's replicas
    — state, node — and the configuration Serve applies: replicas, autoscaling, actor options) and
    Serve's HTTP proxies (``proxy_location``, ``proxies``: none when deployed by :func:`deploy`)."""
    from ray.serve.context import _get_global_client

    _init(settings.ray)
    details = _get_global_client().get_serve_details()
    apps: dict[str, Any] = {}
    for name, app in (details.get("applications") or {}).items():
        if not name.startswith(APP_PREFIX):
            continue
        deployments = {}
        for dname, dep in (app.get("deployments") or {}).items():
            config = dep.get("deployment_config") or {}
            deployments[dname] = {
                "status": dep.get("status"),
                "replicas": [
                    {"state": r.get("state"), "node_id": r.get("node_id"), "pid": r.get("pid")}
                    for r in dep.get("replicas") or []
                ],
                "num_replicas": config.get("num_replicas"),
                "autoscaling_config": config.get("autoscaling_config"),
                "max_ongoing_requests": config.get("max_ongoing_requests"),
                "max_replicas_per_node": config.get("max_replicas_per_node"),
                "ray_actor_options": config.get("ray_actor_options"),
            }
        apps[name] = {
            "status": app.get("status"),
            "route_prefix": app.get("route_prefix"),
            "deployments": deployments,
        }
    return {
        "proxy_location": details.get("proxy_location"),
        "proxies": sorted(details.get("proxies") or {}),
        "applications": apps,
    }
