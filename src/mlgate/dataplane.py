"""Serve requests against models: resolve, load on demand, decode, batch, encode.

The dataplane knows nothing of HTTP; the FastAPI edge, a Lambda handler or a Ray
replica all call :meth:`DataPlane.predict`. Loaded versions are kept by
``(model, version)``: moving an alias only changes which version the next request
resolves to, while requests already holding the old version finish on it.

A version that cannot load (a corrupt blob, a missing extra, a changed library) is recorded as
failed — logged with its traceback, counted (``mlgate_model_load_failures_total``), listed by
:meth:`DataPlane.failed` for ``/readyz`` — and the rest serves: start-up goes on, and requests
for it get the recorded reason (503) without a new attempt for ``RETRY_FAILED_S`` seconds.
A pushed version is loaded and warmed up by :meth:`DataPlane.trial_load` before it is registered.

An alias with a traffic policy (:mod:`mlgate.policies`: a canary split, a shadow) is *routed*:
its resolution carries the policy, and :attr:`DataPlane.router` (:mod:`mlgate.routing`) deals
each caller (``who``: a key id, a user, a workflow execution) its sticky version and counts the
split's answers for the rollout guard (a breach goes to ``router.on_breach``); a sampled request
is handed to ``on_shadow`` after its answer (:mod:`mlgate.lifecycle.shadow`). An alias without
one costs a request nothing more than an ``is None`` check.

**Remote models** (``MLGATE_RAY__ADDRESS``; docs/design.md, "Ray Serve"): the one seam is
:attr:`DataPlane.remote`. When it is set, loading a version opens it *remotely* (a
:class:`RemoteModel`: the version's Ray Serve deployment, where a replica built the same
components and holds the runtime and batcher) instead of loading its runtime here, and
:meth:`DataPlane._serve` hands the raw payload to it: processor and runtime decoding, batching,
prediction and encoding run in the replica; resolution, canary routing, shadows, metrics and
everything before the dataplane (keys, plans, limits, capture, usage) stay in this process.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from mlgate.batching import Batcher
from mlgate.cache import ArtifactCache
from mlgate.errors import (
    ConfigurationError,
    InvalidArtifact,
    InvalidInput,
    MlgateError,
    ModelLoadError,
    Overloaded,
    PredictionFailed,
    UnsafeArtifact,
    exception_summary,
    register_private_path,
)
from mlgate.policies import AliasPolicy, Policies
from mlgate.repository import DEFAULT_ALIAS, Repository
from mlgate.routing import Route, Router
from mlgate.runtimes import create_runtime
from mlgate.runtimes.base import LoadContext, ModelRuntime
from mlgate.runtimes.images import DEFAULT_MAX_PIXELS, check_request_images
from mlgate.settings import Settings
from mlgate.telemetry.context import current_request_id
from mlgate.telemetry.metrics import Metrics, ModelMetrics
from mlgate.telemetry.stats import StatsRecorder
from mlgate.types import Manifest, Processor, VersionInfo

__all__ = [
    "REMOTE_MODULE",
    "RETRY_FAILED_S",
    "DataPlane",
    "LoadedModel",
    "Prediction",
    "RemoteModel",
    "RemoteModels",
]

log = logging.getLogger("mlgate.dataplane")

#: A failed version is tried again by a request at most this often (an alias move always tries).
RETRY_FAILED_S = 30.0


@dataclass(slots=True)  # not frozen: one per request, and a frozen __init__ costs ~3x
class Prediction:
    model: str
    version: int
    output: Any


ShadowHook = Callable[[AliasPolicy, Prediction, Any, float], None]
_T = TypeVar("_T")

#: The module whose ``connect(settings) -> RemoteModels`` serves models remotely when
#: ``settings.ray.address`` is set. Imported by name (a plug-in, like the services' entry points):
#: it sits above this layer and builds this dataplane inside each replica.
REMOTE_MODULE = "mlgate.ray_serve"


class RemoteModel(Protocol):
    """One version served elsewhere (a Ray Serve deployment's replicas)."""

    #: a stand-in for the runtime here: its ``metadata()`` and ``units()`` (the gateway's pricing)
    runtime: ModelRuntime

    async def predict(self, payload: Any, *, timeout: float) -> Any:
        """The encoded output (the processor's, if the model has one) for one raw payload;
        raises the :class:`MlgateError` the replica raised."""
        ...

    async def infer(self, tensors: dict[str, np.ndarray], *, timeout: float) -> dict[str, np.ndarray]:
        """Open Inference Protocol rows in, stacked output tensors out (:meth:`DataPlane.infer_tensors`)."""
        ...


class RemoteModels(Protocol):
    """Where versions are opened when they are not loaded in this process."""

    async def open(self, info: VersionInfo) -> RemoteModel:
        """The version, ready to serve remotely (its replica has loaded it); a :class:`MlgateError`
        (503 ``model_load_error``: not deployed, no replica) when it cannot be."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class LoadedModel:
    """A version in memory: its runtime, batcher and pre-bound metrics."""

    info: VersionInfo
    runtime: ModelRuntime
    batcher: Batcher
    metrics: ModelMetrics
    load_seconds: float
    timeout_s: float
    processor: Processor | None = None
    #: the manifest's ``input_schema`` as a check of each payload (None: nothing declared, or a
    #: processor defines the request's shape)
    check_input: Callable[[Any], None] | None = None
    #: served remotely (:attr:`DataPlane.remote`): ``runtime`` is its stand-in, ``batcher`` unused
    remote: RemoteModel | None = None


class DataPlane:
    """Loads versions and serves predictions; one per server process."""

    def __init__(
        self,
        *,
        settings: Settings,
        repository: Repository,
        cache: ArtifactCache,
        metrics: Metrics,
        processors: Mapping[str, Processor] | None = None,
        policies: Policies | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.policies = policies or Policies(repository.engine)
        #: routed aliases' guard windows and callers' versions (``router.on_breach``: the lifecycle
        #: rolls a canary back)
        self.router = Router(self.policies, metrics)
        #: the server's per-minute statistics (batch sizes are counted there too), when recording
        self.stats: StatsRecorder | None = None
        #: called after a sampled routed prediction: (policy, the answer, its payload, seconds)
        self.on_shadow: ShadowHook | None = None
        self.cache = cache
        register_private_path(settings.data_dir, "data")  # clients see "data/…", never the path
        self.metrics = metrics
        self.processors = dict(processors or {})
        self._loaded: dict[tuple[str, int], LoadedModel] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._aliases: dict[tuple[str, str | int | None], tuple[float, VersionInfo]] = {}
        # One registry lookup per expired alias at a time: when the cached entry expires under
        # load, every request in flight would otherwise run its own (a thread hop and a
        # database read each, ~64 per second per alias at c=64 in a W1 profile).
        self._resolving: dict[tuple[str, str | int | None], asyncio.Future[VersionInfo]] = {}
        self._alias_epoch = 0
        # (name, ref) -> (monotonic expiry, LoadedModel, Route or None): resolve + ensure_loaded
        # in one lookup, valid exactly as long as the alias resolution it came from.
        self._serving: dict[tuple[str, str | int | None], tuple[float, LoadedModel, Route | None]] = {}
        # (name, ref) -> the routed alias's Route (None: a plain one), as long as the resolution
        self._routes: dict[tuple[str, str | int | None], Route | None] = {}
        # (model, version) -> (monotonic time of the failed attempt, its public reason)
        self._failed: dict[tuple[str, int], tuple[float, str]] = {}
        #: where versions are served when not here (set by :meth:`start` from ``settings.ray``)
        self.remote: RemoteModels | None = None
        self.ready = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every aliased version (the latest, for a model without aliases): first requests are warm."""
        if self.remote is None and self.settings.ray.address:
            self.remote = await asyncio.to_thread(_connect_remote, self.settings)
        if self.settings.load_on_start:
            for model in await asyncio.to_thread(self.repository.list_models):
                versions = set(model.aliases.values())
                if not versions and model.latest_version is not None:
                    versions = {model.latest_version}
                for v in sorted(versions):
                    try:
                        info = await asyncio.to_thread(self.repository.get_version, model.name, v)
                        await self.ensure_loaded(info)
                    except MlgateError:
                        continue  # logged, counted and listed as failed: the rest still serves
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for loaded in list(self._loaded.values()):
            await loaded.batcher.stop()
            loaded.runtime.close()
        self._loaded.clear()
        if self.remote is not None:
            self.remote.close()

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def is_loaded(self, name: str, version: int) -> bool:
        return (name, version) in self._loaded

    def failed(self) -> dict[tuple[str, int], str]:
        """The versions whose last load failed, with the (public) reason."""
        return {key: reason for key, (_, reason) in self._failed.items()}

    async def unload(self, name: str, version: int | None = None) -> None:
        """Forget a deleted version (every version of ``name`` when ``version`` is None)."""
        keys = [k for k in (*self._loaded, *self._failed) if k[0] == name and version in (None, k[1])]
        self.invalidate()
        for key in keys:
            self._failed.pop(key, None)
            self._locks.pop(key, None)
            loaded = self._loaded.pop(key, None)
            if loaded is not None:
                await loaded.batcher.stop()  # requests still queued get a 503 to retry
                loaded.runtime.close()

    # -- resolution ------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget cached alias resolutions (after an alias move in this process)."""
        self._aliases.clear()
        self._serving.clear()
        self._routes.clear()
        self._resolving.clear()  # lookups already running may predate the move: don't share them
        self._alias_epoch += 1

    async def resolve(self, name: str, ref: str | int | None = None) -> VersionInfo:
        """Resolve a version/alias, cached for ``alias_ttl_s`` seconds (a version is immutable, but a
        deleted version's number may be registered again: :meth:`ensure_loaded` tells them apart)."""
        key = (name, ref)
        now = time.monotonic()
        hit = self._aliases.get(key)
        # Numbers are cached as long as aliases: a deleted version's number may name a new one.
        if hit is not None and now - hit[0] < self.settings.alias_ttl_s:
            return hit[1]
        lookup = self._resolving.get(key)
        if lookup is None:
            lookup = self._resolving[key] = asyncio.ensure_future(self._lookup(key, name, ref, now))
            lookup.add_done_callback(_retrieved)
        # Shielded: a caller that goes away (client disconnect, timeout) never cancels the
        # lookup the others are waiting for.
        return await asyncio.shield(lookup)

    async def _lookup(
        self, key: tuple[str, str | int | None], name: str, ref: str | int | None, now: float
    ) -> VersionInfo:
        epoch = self._alias_epoch
        try:
            info, policy = await asyncio.to_thread(self._resolve_with_policy, name, ref)
        finally:
            if self._resolving.get(key) is asyncio.current_task():
                del self._resolving[key]
        if epoch == self._alias_epoch:  # not invalidated meanwhile
            self._aliases[key] = (now, info)
            self._routes[key] = self.router.route_for(policy) if policy is not None else None
        return info

    def _resolve_with_policy(
        self, name: str, ref: str | int | None
    ) -> tuple[VersionInfo, AliasPolicy | None]:
        info = self.repository.resolve(name, ref)
        if isinstance(ref, int):
            return info, None
        policy = self.policies.get(name, ref or DEFAULT_ALIAS)
        if policy is None or not policy.routed or policy.version != info.version:
            return info, None
        return info, policy

    def policy_of(self, name: str, ref: str | int | None = None) -> AliasPolicy | None:
        """The routed policy of the last resolution of ``(name, ref)`` in this process, if any."""
        route = self._routes.get((name, ref))
        return route.policy if route is not None else None

    # -- loading ---------------------------------------------------------------------------

    async def ensure_loaded(self, info: VersionInfo, *, retry: bool = False) -> LoadedModel:
        """The version in memory, loaded (and warmed up) first if needed.

        A version whose last load failed less than ``RETRY_FAILED_S`` ago raises its recorded
        :class:`ModelLoadError` again at once, unless ``retry`` (an alias about to move to it).
        """
        key = (info.model, info.version)
        loaded = self._loaded.get(key)
        if loaded is not None:
            if loaded.info.created_at == info.created_at or loaded.info.manifest == info.manifest:
                return loaded
            # The number now names another version: this one was deleted (by another process)
            # and the number registered again. The old model must not answer for it.
            await self.unload(info.model, info.version)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                failed = self._failed.get(key)
                if failed is not None and not retry and time.monotonic() - failed[0] < RETRY_FAILED_S:
                    raise ModelLoadError(failed[1], details={"model": info.model, "version": info.version})
                try:
                    loaded = await self._load(info)
                except MlgateError as exc:
                    # A missing blob (404), a corrupt one (502), a missing extra (500): for a
                    # client it is one thing, this version does not load here (503). An
                    # untrusted pickle keeps its 422: it never loads anywhere.
                    error = exc
                    if not isinstance(exc, ModelLoadError | UnsafeArtifact):
                        error = ModelLoadError(
                            f"could not load {info.model} v{info.version}: {exc}",
                            details={"model": info.model, "version": info.version},
                        )
                    self._failed[key] = (time.monotonic(), error.message)
                    self.metrics.load_failures.labels(info.model, str(info.version)).inc()
                    if error is exc:
                        raise
                    raise error from exc
                self._failed.pop(key, None)
                self._loaded[key] = loaded
        return loaded

    def trial_load(self, name: str, manifest: Manifest, artifact_dir: Path) -> None:
        """Load a version about to be pushed from its local files and run its warm-up prediction
        (blocking: run it in a thread). :class:`InvalidArtifact` with the reason when either fails
        (:class:`UnsafeArtifact` when it may not load at all); logged and counted as version 'push'."""
        runtime: ModelRuntime | None = None
        try:
            if name not in self.processors:
                _input_check(manifest)  # a schema that is not one is refused here
            runtime = create_runtime(manifest.runtime)
            runtime.load(LoadContext(artifact_dir, manifest, trusted=self._trusted(manifest)))
            warm = runtime.warmup_input()
            if warm is not None:
                runtime.predict([warm])
        except UnsafeArtifact:
            raise
        except Exception as exc:
            log.warning("pushed version of %s refused: it does not load or warm up", name, exc_info=exc)
            self.metrics.load_failures.labels(name, "push").inc()
            reason = exc.message if isinstance(exc, MlgateError) else exception_summary(exc)
            raise InvalidArtifact(
                f"the version was not registered: it does not load or warm up here ({reason})",
                details={"model": name},
            ) from exc
        finally:
            if runtime is not None:
                runtime.close()

    def _trusted(self, manifest: Manifest) -> bool:
        artifact_sha = manifest.files.get(manifest.artifact)
        return manifest.trusted or (artifact_sha is not None and artifact_sha in self.settings.trusted_sha256)

    async def _load(self, info: VersionInfo) -> LoadedModel:
        if self.remote is not None:
            return await self._open_remote(self.remote, info)
        started = time.perf_counter()
        try:
            runtime = await asyncio.to_thread(self._load_runtime, info)
        except MlgateError as exc:
            log.warning("could not load %s v%s: %s", info.model, info.version, exc, exc_info=exc)
            raise
        except Exception as exc:
            log.warning("could not load %s v%s", info.model, info.version, exc_info=exc)
            raise ModelLoadError(
                f"could not load {info.model} v{info.version}: {exception_summary(exc)}"
            ) from exc
        elapsed = time.perf_counter() - started
        metrics = self.metrics.for_model(info.model, info.version)
        on_batch: Callable[[int], None] = metrics.batch_size.observe
        stats = self.stats
        if stats is not None:
            on_batch = stats.batch_hook(info.model, info.version, on_batch)
        batcher = Batcher(
            runtime.predict,
            info.manifest.batching,
            name=f"{info.model}-{info.version}",
            on_batch=on_batch,
        )
        self.metrics.track_queue(info.model, info.version, lambda: batcher.queue_depth)
        batcher.start()
        metrics.cold_starts.inc()
        metrics.load_seconds.set(elapsed)
        timeout = info.manifest.timeout_s or self.settings.default_timeout_s
        processor = self._processor_for(info)
        return LoadedModel(
            info,
            runtime,
            batcher,
            metrics,
            elapsed,
            timeout,
            processor,
            _input_check(info.manifest) if processor is None else None,
        )

    async def _open_remote(self, remote: RemoteModels, info: VersionInfo) -> LoadedModel:
        """A version served remotely: no runtime here, a batcher that never runs (the replica batches)."""
        started = time.perf_counter()
        try:
            model = await remote.open(info)
        except MlgateError as exc:
            log.warning("could not open %s v%s remotely: %s", info.model, info.version, exc)
            raise
        except Exception as exc:
            log.warning("could not open %s v%s remotely", info.model, info.version, exc_info=exc)
            raise ModelLoadError(
                f"could not reach {info.model} v{info.version} remotely: {exception_summary(exc)}"
            ) from exc
        metrics = self.metrics.for_model(info.model, info.version)
        metrics.cold_starts.inc()
        elapsed = time.perf_counter() - started
        metrics.load_seconds.set(elapsed)
        return LoadedModel(
            info,
            model.runtime,
            Batcher(_not_here, info.manifest.batching, name=f"{info.model}-{info.version}"),
            metrics,
            elapsed,
            info.manifest.timeout_s or self.settings.default_timeout_s,
            self._processor_for(info),  # the gateway prices by it; it runs in the replica
            None,
            model,
        )

    def _processor_for(self, info: VersionInfo) -> Processor | None:
        processor = self.processors.get(info.model)
        bind = getattr(processor, "for_version", None)
        if callable(bind):
            bound: Processor = bind(info.manifest)
            return bound
        return processor

    def _load_runtime(self, info: VersionInfo) -> ModelRuntime:
        local = self.cache.fetch(info)
        runtime = create_runtime(info.manifest.runtime)
        runtime.load(LoadContext(local, info.manifest, trusted=self._trusted(info.manifest)))
        warm = runtime.warmup_input()
        if warm is not None:
            runtime.predict([warm])
        return runtime

    # -- serving ---------------------------------------------------------------------------

    async def predict(
        self, name: str, payload: Any, *, version: str | int | None = None, who: str | None = None
    ) -> Prediction:
        """One prediction through the model's processor (if any), runtime and batcher. ``who``
        (a key id, a user, an execution) is the caller a routed alias deals its sticky version to."""
        serving = self._serving.get((name, version))
        if serving is not None and time.monotonic() < serving[0]:
            loaded, route = serving[1], serving[2]  # resolved and loaded within alias_ttl_s
        else:
            loaded, route = await self._current(name, version)
        if route is None:
            return await self._serve(loaded, payload)
        return await self._routed(route, loaded, payload, who)

    async def _current(self, name: str, version: str | int | None) -> tuple[LoadedModel, Route | None]:
        info = await self.resolve(name, version)
        loaded = await self.ensure_loaded(info)
        key = (name, version)
        route = self._routes.get(key)
        cached = self._aliases.get(key)
        if cached is not None and cached[1] is info:  # still the current resolution
            # numbers too: a deleted version's number may be registered again elsewhere
            self._serving[key] = (cached[0] + self.settings.alias_ttl_s, loaded, route)
        return loaded, route

    async def _routed(self, route: Route, stable: LoadedModel, payload: Any, who: str | None) -> Prediction:
        """A routed alias's prediction: the caller's version, counted for the guard, maybe shadowed."""
        policy = route.policy
        window = route.window
        if window is None:  # a shadow only
            started = time.perf_counter()
            prediction = await self._serve(stable, payload)
            self._maybe_shadow(policy, prediction, payload, time.perf_counter() - started)
            return prediction
        version = await self.router.version_for(route, who)
        loaded = stable if version == stable.info.version else await self._pinned(policy.model, version)
        started = time.perf_counter()
        try:
            prediction = await self._serve(loaded, payload)
        except MlgateError as exc:
            self.router.observe(window, version, exc.status >= 500, time.perf_counter() - started)
            raise
        elapsed = time.perf_counter() - started
        self.router.observe(window, version, False, elapsed)
        if version == policy.version:  # the shadow compares with the stable's answers
            self._maybe_shadow(policy, prediction, payload, elapsed)
        return prediction

    def _maybe_shadow(
        self, policy: AliasPolicy, prediction: Prediction, payload: Any, seconds: float
    ) -> None:
        hook = self.on_shadow
        if hook is None or policy.shadow is None or policy.shadow_sample <= 0.0:
            return
        if policy.shadow_sample < 1.0 and _draws.random() >= policy.shadow_sample:
            return
        try:
            hook(policy, prediction, payload, seconds)
        except Exception:  # a shadow never fails the caller
            log.exception("could not shadow %s v%s", policy.model, policy.shadow)

    async def _pinned(self, name: str, version: int) -> LoadedModel:
        serving = self._serving.get((name, version))
        if serving is not None and time.monotonic() < serving[0]:
            return serving[1]
        loaded, _ = await self._current(name, version)
        return loaded

    async def choose(
        self, name: str, ref: str | int | None, who: str | None
    ) -> tuple[VersionInfo, LoadedModel]:
        """The version (loaded) that serves ``who``'s request for ``(name, ref)``: the routes that
        serve many rows at once (batch, tensors) follow the alias's split this way."""
        loaded, route = await self._current(name, ref)
        if route is not None and route.window is not None:
            version = await self.router.version_for(route, who)
            if version != loaded.info.version:
                loaded = await self._pinned(name, version)
        return loaded.info, loaded

    async def predict_many(
        self, name: str, payloads: list[Any], *, version: str | int | None = None, who: str | None = None
    ) -> tuple[VersionInfo, list[Prediction | MlgateError]]:
        """Many predictions on one resolved version, answered in order; bad items fail alone."""
        info, loaded = await self.choose(name, version, who)
        results = await asyncio.gather(*(self._serve(loaded, p) for p in payloads), return_exceptions=True)
        out: list[Prediction | MlgateError] = []
        for r in results:
            if isinstance(r, Prediction | MlgateError):
                out.append(r)
            elif isinstance(r, BaseException):
                raise r
        return info, out

    async def infer_tensors(
        self,
        name: str,
        tensors: dict[str, np.ndarray],
        *,
        version: str | int | None = None,
        who: str | None = None,
    ) -> tuple[VersionInfo, dict[str, np.ndarray]]:
        """Open Inference Protocol: rows of the input tensor(s) in, stacked output tensors out.

        A request is queued whole or not at all: more rows than the model's queue holds is a 400
        (it could never pass), more than it has room for now a 503 before anything is decoded or
        queued. A heavy decode (images) runs on a worker thread — each image within the decode
        slots and budgets of :mod:`mlgate.runtimes.images`, the request's images together within
        one image's pixels, checked from their headers before any is decoded."""
        info, loaded = await self.choose(name, version, who)
        if loaded.remote is not None:
            encoded = await self._call_remote(loaded, loaded.remote.infer(tensors, timeout=loaded.timeout_s))
        else:
            first = next(iter(tensors.values()), None)
            rows = int(first.shape[0]) if first is not None and first.ndim else 1
            queue = info.manifest.batching.max_queue
            if rows > queue:
                loaded.metrics.error(InvalidInput.code)
                raise InvalidInput(
                    f"model '{info.model}' queues at most {queue} rows: this request has {rows}"
                )
            if rows > loaded.batcher.free:
                loaded.metrics.error(Overloaded.code)
                raise Overloaded("model queue is full", retry_after=1.0)
            if loaded.runtime.heavy_decode:
                items = await asyncio.to_thread(_decode_tensors, loaded, tensors)
            else:
                items = _decode_tensors(loaded, tensors)
            outputs = await self._submit_all(loaded, items)
            encoded = loaded.runtime.encode_tensors(outputs)
        for array in encoded.values():  # as _check_finite: JSON has no inf/NaN (it would read null)
            values = np.asarray(array)
            if values.dtype.kind in "fc" and not np.isfinite(values).all():
                loaded.metrics.error(InvalidInput.code)
                raise InvalidInput("input drives the model to a non-finite output (values out of range)")
        return info, encoded

    async def _serve(self, loaded: LoadedModel, payload: Any) -> Prediction:
        if loaded.remote is not None:
            out = await self._call_remote(loaded, loaded.remote.predict(payload, timeout=loaded.timeout_s))
            return Prediction(loaded.info.model, loaded.info.version, out)
        m = loaded.metrics
        try:
            if loaded.check_input is not None:
                loaded.check_input(payload)
            item = loaded.processor.decode(payload) if loaded.processor is not None else payload
            if loaded.runtime.heavy_decode:
                x = await asyncio.to_thread(loaded.runtime.decode, item)
            else:
                x = loaded.runtime.decode(item)
            # _submit, inline: this is every request's path
            started = time.perf_counter()
            try:
                y = await loaded.batcher.submit(x, timeout=loaded.timeout_s)
            except MlgateError:
                raise
            except Exception as exc:
                _log_failure("the model raised", loaded, exc)
                raise PredictionFailed(f"the model failed on this input: {type(exc).__name__}") from exc
            m.invocations.inc()
            m.latency.observe(time.perf_counter() - started)
            out = loaded.runtime.encode(y)
            _check_finite(out)
            if loaded.processor is not None:
                out = loaded.processor.encode(out)
        except MlgateError as exc:
            m.error(exc.code)
            raise
        except Exception as exc:
            # A processor or encoder bug: a clear 500 for this item only, counted like the rest.
            _log_failure("processing failed", loaded, exc)
            m.error(PredictionFailed.code)
            raise PredictionFailed(f"could not process this input: {type(exc).__name__}") from exc
        return Prediction(loaded.info.model, loaded.info.version, out)

    async def _call_remote(self, loaded: LoadedModel, call: Awaitable[_T]) -> _T:
        """A remote model's answer, counted like a local one (latency includes the hop)."""
        m = loaded.metrics
        started = time.perf_counter()
        try:
            result = await call
        except MlgateError as exc:
            m.error(exc.code)
            raise
        except Exception as exc:  # the remote layer maps its failures: this is a bug there
            _log_failure("the remote call failed", loaded, exc)
            m.error(PredictionFailed.code)
            raise PredictionFailed(f"the remote model call failed: {type(exc).__name__}") from exc
        m.invocations.inc()
        m.latency.observe(time.perf_counter() - started)
        return result

    async def _submit_all(self, loaded: LoadedModel, items: list[Any]) -> list[Any]:
        """Decoded rows through the batcher, all queued or none (the tensor routes)."""
        started = time.perf_counter()
        try:
            outputs = await loaded.batcher.submit_all(items, timeout=loaded.timeout_s)
        except MlgateError as exc:
            loaded.metrics.error(exc.code)
            raise
        except Exception as exc:
            _log_failure("the model raised", loaded, exc)
            loaded.metrics.error(PredictionFailed.code)
            raise PredictionFailed(f"the model failed on this input: {type(exc).__name__}") from exc
        loaded.metrics.invocations.inc(len(items))
        elapsed = time.perf_counter() - started
        for _ in items:
            loaded.metrics.latency.observe(elapsed)
        return outputs


def _decode_tensors(loaded: LoadedModel, tensors: dict[str, np.ndarray]) -> list[Any]:
    """The runtime's rows of ``tensors`` (blocking when the decode is heavy: on a worker thread
    there, where each image takes a decode slot). Encoded images are first checked together from
    their headers (:func:`check_request_images`); a decoder's bug is a 500 without its repr."""
    runtime = loaded.runtime
    try:
        if runtime.heavy_decode:
            _check_images(runtime, tensors)
        return runtime.decode_tensors(tensors)
    except MlgateError as exc:
        loaded.metrics.error(exc.code)
        raise
    except Exception as exc:
        _log_failure("decoding the tensors failed", loaded, exc)
        loaded.metrics.error(PredictionFailed.code)
        raise PredictionFailed(f"could not decode this input: {type(exc).__name__}") from exc


def _check_images(runtime: ModelRuntime, tensors: dict[str, np.ndarray]) -> None:
    """The encoded images of a request (BYTES tensors) within one image's pixels in all: the
    image input's declared ``max_pixels``, else :data:`DEFAULT_MAX_PIXELS`."""
    max_pixels = DEFAULT_MAX_PIXELS
    for spec in runtime.metadata().get("inputs") or []:
        params = spec.get("parameters") if isinstance(spec, dict) else None
        if isinstance(params, dict) and params.get("content_type") == "image":
            declared = params.get("max_pixels")
            if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
                max_pixels = declared
    payloads: list[Any] = []
    for array in tensors.values():
        if array.dtype == object:
            payloads.extend(array.reshape(-1).tolist())
    if payloads:
        check_request_images(payloads, max_pixels=max_pixels)


def _connect_remote(settings: Settings) -> RemoteModels:
    """The remote models' client named by :data:`REMOTE_MODULE` (blocking: it joins the cluster)."""
    module = importlib.import_module(REMOTE_MODULE)
    remote: RemoteModels = module.connect(settings)
    return remote


def _not_here(batch: list[Any]) -> list[Any]:
    """A remote model's batcher never runs: its replica batches."""
    raise ConfigurationError("this model is served remotely")


def _input_check(manifest: Manifest) -> Callable[[Any], None] | None:
    """The manifest's ``input_schema`` (JSON Schema) as a check raising a clear 400, or None."""
    schema = manifest.input_schema
    if not schema:
        return None
    from jsonschema import exceptions, validators  # type: ignore[import-untyped]  # declared schemas only
    from referencing import Registry

    outside = _outside_refs(schema)
    if outside:
        # A $ref to a file or a URL would make the server read or fetch it on every predict
        # (and /docs' visitors' browsers too): only references inside the schema are allowed.
        raise ConfigurationError(
            f"input_schema may only use local references ('#/...'), not {outside[0][:100]!r}"
        )
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        raise ConfigurationError(f"input_schema is not a valid JSON Schema: {exc.message}") from None
    validator = cls(schema, registry=Registry())  # an empty registry: nothing is ever retrieved

    def check(payload: Any) -> None:
        error = exceptions.best_match(validator.iter_errors(payload))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(the whole input)"
            message = error.message if len(error.message) <= 200 else error.message[:199] + "…"
            raise InvalidInput(
                f"input does not match the model's input_schema at {where}: {message}",
                details={"path": list(error.absolute_path), "rule": "/".join(map(str, error.schema_path))},
            )

    return check


def _outside_refs(schema: Any) -> list[str]:
    """The ``$ref``/``$dynamicRef`` values of ``schema`` that do not point inside it."""
    found: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef", "$recursiveRef") and not (
                    isinstance(value, str) and value.startswith("#")
                ):
                    found.append(str(value))
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _log_failure(what: str, loaded: LoadedModel, exc: BaseException) -> None:
    """A model's (or processor's) exception: its traceback in the server log, never in the answer."""
    info = loaded.info
    log.error("%s on %s v%s (request %s)", what, info.model, info.version, current_request_id(), exc_info=exc)


# The shadow's sampling draw and anonymous callers' dealing: seeded once per process.
_draws = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _draws.seed(os.urandom(16)))


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a shared lookup's error as seen even when every caller stopped waiting for it."""
    if not future.cancelled():
        future.exception()


def _check_finite(value: Any) -> None:
    """Outputs must be JSON numbers: an input that drives the model to inf/NaN is a 4xx."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput("input drives the model to a non-finite output (values out of range)")
    elif isinstance(value, list):
        for v in value:
            _check_finite(v)
    elif isinstance(value, dict):
        for v in value.values():
            _check_finite(v)
