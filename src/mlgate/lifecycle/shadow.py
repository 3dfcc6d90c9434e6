"""Shadow versions: mirror a sample of an alias's traffic to another version and compare.

The dataplane hands a sampled prediction of a shadowed alias's primary (stable) version to
:meth:`ShadowRunner.on_shadow` (``dataplane.on_shadow``), synchronously, inside the caller's
request task. The hook does O(1) work and returns:

- **the bound**: at most :data:`GROUP_MAX` calls per alias waiting to start in this process;
  beyond, the request is skipped and counted (``outcome="busy"``) — never queued, so a slow
  shadow cannot grow memory or a backlog;
- **the capture pair**: when capture is on for the model, a :class:`~mlgate.monitoring.capture.ShadowPair`
  in a context variable, which the edge's capture call fills with the primary record's event id
  (only for a captured answer), so the shadow's record shares it;
- **a done-callback on the caller's task**: nothing of the shadow runs before the caller's
  request is over — the driver writes the answer in that task as soon as the endpoint returns,
  and capture has decided by then (no task nor timer exists meanwhile).

Then the call is **gathered**: calls are collected for :data:`GATHER_S` and started together as
one group, so their inputs reach the shadow model's batcher in the same loop turn and share one
trip to the model thread (alone, that trip — a thread hand-off each way — costs about as much CPU
as the whole primary request: at 100 % on W1, ungrouped calls doubled the p50 at c=1; grouped,
docs/benchmarks.md). At most ``max_concurrency`` groups run per alias and process (a group
waiting for one to end keeps gathering, up to :data:`GROUP_MAX`); one timer per group enforces
``timeout_s`` (late calls are cancelled, counted as timeouts). Each call is the shadow version
pinned (``dataplane.predict(name, payload, version=N)``: no alias policy applies, so it is not
counted by the canary guard nor shadowed again; the gateway settled the caller's quota before,
so the shadow is never metered; its model metrics count as any call of that version). Every
exception is caught and counted: the caller never sees the shadow.

**Comparison**: what is compared and how (both answers walked together, numeric |Δ| and
relative Δ, label agreement and confusion, latencies and error rates, and their bounds) is
:mod:`mlgate.lifecycle.shadow_compare`, pure computation; this module is the runner around it
(the hook, the grouping, the timeouts, the capture pairing, the flush, the reading), and
re-exports the comparison's public names it used to hold.

**Storage**: each process upserts its figures as one ``shadow_stats`` row (model, alias,
process: :func:`mlgate.monitoring.lease.process_id`) every :data:`FLUSH_S` seconds when they
changed, and on stop, from a worker thread; :meth:`ShadowRunner.figures` merges the rows of
every process (workers, replicas) whose comparison is the current one (same ``shadow_since``,
primary and shadow versions). A new shadow version (a new ``shadow_since``) or a moved alias
starts a new comparison; older rows are deleted at the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Engine, delete, insert, select, update

from mlgate.dataplane import DataPlane, Prediction
from mlgate.db.engine import write_tx
from mlgate.db.tables import shadow_stats
from mlgate.errors import MlgateError
from mlgate.lifecycle.shadow_compare import (
    _ABSENT as _ABSENT,
)
from mlgate.lifecycle.shadow_compare import (
    FORMAT,
    MAX_LABELS,
    MAX_LEAVES,
    MAX_PATHS,
    OTHER,
    SAMPLE,
    TOP_LABELS,
    Comparison,
    compare_outputs,
    summarize,
)
from mlgate.monitoring.capture import SHADOW_PAIR, Capture, ShadowPair
from mlgate.monitoring.lease import process_id
from mlgate.policies import AliasPolicy
from mlgate.telemetry.metrics import Metrics

__all__ = [
    "FLUSH_S",
    "MAX_LABELS",
    "MAX_LEAVES",
    "MAX_PATHS",
    "OTHER",
    "SAMPLE",
    "TOP_LABELS",
    "Comparison",
    "ShadowRunner",
    "compare_outputs",
    "summarize",
]

log = logging.getLogger("mlgate.lifecycle")

#: Seconds between two flushes of this process's figures.
FLUSH_S = 5.0
#: Seconds shadow calls are gathered before they start together (one trip to the model thread).
GATHER_S = 0.01
#: Calls per alias waiting to start (gathered, or waiting for their caller) at most: one group.
GROUP_MAX = 64


# -- the runner ------------------------------------------------------------------------------------


def _server_error_codes() -> frozenset[str]:
    found: set[str] = set()
    todo: list[type[MlgateError]] = [MlgateError]
    while todo:
        cls = todo.pop()
        if cls.status >= 500:
            found.add(cls.code)
        todo.extend(cls.__subclasses__())
    return frozenset(found)


_Call = tuple[Comparison, AliasPolicy, Any, Any, float, ShadowPair | None]


class ShadowRunner:
    """Wired as ``dataplane.on_shadow`` by the server; one per process."""

    def __init__(
        self,
        *,
        dataplane: DataPlane,
        engine: Engine,
        metrics: Metrics,
        capture: Capture | None = None,
        flush_s: float = FLUSH_S,
        gather_s: float = GATHER_S,
    ) -> None:
        self.dataplane = dataplane
        self.engine = engine
        self.metrics = metrics
        self.capture = capture
        self.flush_s = flush_s
        self.process = process_id()
        self.comparisons: dict[tuple[str, str], Comparison] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._server_codes = _server_error_codes()
        self._gauges: dict[tuple[str, str], list[tuple[Any, tuple[str, ...]]]] = {}
        self._counters: dict[tuple[str, str, int | None, str], Any] = {}
        self.gather_s = gather_s
        #: per alias: calls accepted and not started yet (waiting for their caller, or gathered),
        #: the gathered ones, and the groups running
        self._pending: dict[tuple[str, str], int] = {}
        self._gathered: dict[tuple[str, str], list[_Call]] = {}
        self._groups: dict[tuple[str, str], int] = {}
        self._gathering: asyncio.TimerHandle | None = None
        self._timed_out: set[asyncio.Task[Any]] = set()

    # -- the hook (the request's path: O(1), never raises) ------------------------------------

    def on_shadow(self, policy: AliasPolicy, prediction: Prediction, payload: Any, seconds: float) -> None:
        if self._closing or policy.shadow is None:
            return
        key = (policy.model, policy.alias)
        comparison = self.comparisons.get(key)
        if comparison is None or not comparison.matches(policy):
            comparison = self._begin(policy)
        pending = self._pending.get(key, 0)
        if pending >= GROUP_MAX:  # a full group already waits: skipped, never queued
            comparison.outcome("busy")
            self._count(policy, "busy")
            return
        pair: ShadowPair | None = None
        capture = self.capture
        if capture is not None and capture.rates.get(policy.model, capture.default) > 0.0:
            pair = ShadowPair(policy.model, policy.version, policy.shadow)
            SHADOW_PAIR.set(pair)
        self._pending[key] = pending + 1
        call = (comparison, policy, prediction.output, payload, seconds, pair)
        caller = asyncio.current_task()
        if caller is None or caller.done():
            self._gather(call)
        else:
            # No task, no timer while the caller runs: the call is gathered when the caller's
            # task ends — once its answer is written and its capture decided.
            caller.add_done_callback(lambda _: self._gather(call))

    def _gather(self, call: _Call) -> None:
        key = (call[1].model, call[1].alias)
        if self._closing:  # the server stops: calls not started yet are dropped
            self._unpend(key, 1)
            return
        self._gathered.setdefault(key, []).append(call)
        if self._gathering is None:
            self._gathering = asyncio.get_running_loop().call_later(self.gather_s, self._go)

    def _go(self) -> None:
        self._gathering = None
        for key in list(self._gathered):
            self._launch(key)

    def _launch(self, key: tuple[str, str]) -> None:
        """Start an alias's gathered calls as one group — their inputs reach the shadow model's
        batcher in the same loop turn, so they share one trip to the model thread — unless
        ``max_concurrency`` groups already run (then it starts when one ends)."""
        calls = self._gathered.get(key)
        if not calls:
            return
        options = calls[-1][1].shadow_options
        running = self._groups.get(key, 0)
        if running >= options.max_concurrency and not self._closing:
            return
        del self._gathered[key]
        self._unpend(key, len(calls))
        if self._closing:
            return
        self._groups[key] = running + 1
        loop = asyncio.get_running_loop()
        left = [len(calls)]

        def ended(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            left[0] -= 1
            if left[0] == 0:
                groups = self._groups.get(key, 1) - 1
                if groups > 0:
                    self._groups[key] = groups
                else:
                    self._groups.pop(key, None)
                self._launch(key)

        tasks = []
        for call in calls:
            task = loop.create_task(self._run(*call))
            self._tasks.add(task)
            task.add_done_callback(ended)
            tasks.append(task)
        # One timer for the group, not one per call (a cancelled timer stays in the loop's heap
        # until it would have fired).
        loop.call_later(options.timeout_s, self._expire, tasks)

    def _unpend(self, key: tuple[str, str], n: int) -> None:
        left = self._pending.get(key, n) - n
        if left > 0:
            self._pending[key] = left
        else:
            self._pending.pop(key, None)

    def _expire(self, tasks: list[asyncio.Task[None]]) -> None:
        """The group's timeout: its calls still running are cancelled and counted as timeouts."""
        for task in tasks:
            if not task.done():
                self._timed_out.add(task)
                task.cancel()

    def _begin(self, policy: AliasPolicy) -> Comparison:
        key = (policy.model, policy.alias)
        old = self.comparisons.get(key)
        if old is not None:
            self._forget_gauges(key)
        comparison = self.comparisons[key] = Comparison(
            policy, primary_counts=self._primary_counts(policy.model, policy.version)
        )
        return comparison

    def _count(self, policy: AliasPolicy, outcome: str) -> None:
        key = (policy.model, policy.alias, policy.shadow, outcome)
        child = self._counters.get(key)
        if child is None:
            child = self.metrics.shadow_requests.labels(
                policy.model, policy.alias, str(policy.shadow), outcome
            )
            if len(self._counters) < 1024:
                self._counters[key] = child
        child.inc()

    async def _run(
        self,
        comparison: Comparison,
        policy: AliasPolicy,
        primary_output: Any,
        payload: Any,
        primary_s: float,
        pair: ShadowPair | None,
    ) -> None:
        outcome = "error"
        output: Any = None
        try:
            assert policy.shadow is not None
            started = time.perf_counter()
            try:
                answer = await self.dataplane.predict(policy.model, payload, version=policy.shadow)
                output = answer.output
                outcome = "ok"
            except MlgateError:
                outcome = "error"
            elapsed = time.perf_counter() - started
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task not in self._timed_out:
                raise  # the server is stopping
            self._timed_out.discard(task)
            if task is not None:
                task.uncancel()
            outcome, elapsed = "timeout", 0.0
        except Exception:  # a shadow never fails anyone: logged, counted as an error
            log.exception("shadow call of %s v%s failed", policy.model, policy.shadow)
            outcome = "error"
            elapsed = 0.0
        try:
            self._count(policy, outcome)
            if outcome == "ok":
                comparison.record(primary_output, output, primary_s, elapsed)
                if pair is not None and pair.event_id is not None:
                    self._capture_shadow(pair, output)
            else:
                comparison.outcome(outcome)
        except Exception:
            log.exception("could not compare the shadow answer of %s v%s", policy.model, policy.shadow)

    async def drain(self) -> None:
        """Wait for the calls accepted so far (gathered, waiting for their caller, running) to end."""
        while self._pending or self._groups or self._tasks:
            if self._tasks:
                await asyncio.wait(list(self._tasks))
            else:
                await asyncio.sleep(self.gather_s / 2)

    def _capture_shadow(self, pair: ShadowPair, output: Any) -> None:
        """The shadow's answer as a capture record beside the primary's (same event id), under
        the shadow version's prefix, in the native route's answer shape."""
        capture = self.capture
        assert capture is not None and pair.event_id is not None
        try:
            body = orjson.dumps(
                {"model_name": pair.model, "model_version": pair.shadow, "outputs": output},
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
        except (TypeError, orjson.JSONEncodeError):
            return
        capture.offer(
            pair.model,
            pair.shadow,
            pair.request_body,
            pair.request_type,
            body,
            "application/json",
            route=pair.route,
            request_id=pair.request_id,
            key_id=pair.key_id,
            event_id=pair.event_id,
            extra=(("role", "shadow"), ("primaryVersion", str(pair.primary))),
        )

    # -- primary counters ---------------------------------------------------------------------

    def _primary_counts(self, model: str, version: int) -> tuple[float, float]:
        """The primary version's (answers, server-side errors) in this process so far."""
        v = str(version)
        answers = self.metrics.invocations.labels(model, v).value
        errors = 0.0
        for family in self.metrics.errors.collect():
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name.endswith("_total")
                    and labels.get("model") == model
                    and labels.get("version") == v
                    and labels.get("code") in self._server_codes
                ):
                    errors += sample.value
        return answers, errors

    # -- flushing, reading ------------------------------------------------------------------

    async def start(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="mlgate-shadow")

    async def stop(self) -> None:
        """Stop mirroring, let calls under way end (at most a few seconds), write the figures."""
        self._closing = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), 5.0)
        for task in list(self._tasks):
            task.cancel()
        await self.flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except Exception:
                log.exception("could not write shadow figures")

    async def flush(self) -> int:
        """Write this process's changed comparisons (and their metrics); rows written."""
        rows: list[tuple[Comparison, bytes]] = []
        for key, comparison in list(self.comparisons.items()):
            if not comparison.dirty:
                continue
            comparison.dirty = False
            comparison.primary_now = self._primary_counts(comparison.model, comparison.primary)
            data = comparison.to_data()
            self._set_gauges(key, comparison, summarize([data]))
            rows.append((comparison, orjson.dumps(data)))
        if rows:
            await asyncio.to_thread(self._write, rows)
        return len(rows)

    def _write(self, rows: list[tuple[Comparison, bytes]]) -> None:
        t = shadow_stats
        now = time.time()
        with write_tx(self.engine) as conn:
            for comparison, data in rows:
                where = (t.c.model == comparison.model, t.c.alias == comparison.alias)
                conn.execute(delete(t).where(*where, t.c.since != comparison.since))  # an older shadow's
                values = {"since": comparison.since, "updated_at": now, "data": data.decode()}
                done = conn.execute(update(t).where(*where, t.c.process == self.process).values(**values))
                if not done.rowcount:
                    conn.execute(
                        insert(t).values(
                            model=comparison.model, alias=comparison.alias, process=self.process, **values
                        )
                    )

    def figures(self, policy: AliasPolicy) -> dict[str, Any]:
        """The merged figures of ``policy``'s current shadow over every process (blocking)."""
        assert policy.shadow is not None
        t = shadow_stats
        since = policy.shadow_since or 0.0
        with self.engine.connect() as conn:
            stored = conn.execute(
                select(t.c.process, t.c.data).where(
                    t.c.model == policy.model, t.c.alias == policy.alias, t.c.since == since
                )
            ).all()
        rows = []
        for _, raw in stored:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if (
                isinstance(data, dict)
                and data.get("format") == FORMAT
                and data.get("primary") == policy.version
                and data.get("shadow") == policy.shadow
            ):
                rows.append(data)
        return {
            "model": policy.model,
            "alias": policy.alias,
            "primary_version": policy.version,
            "shadow_version": policy.shadow,
            "sample": policy.shadow_sample,
            "timeout_s": policy.shadow_options.timeout_s,
            "max_concurrency": policy.shadow_options.max_concurrency,
            "since": policy.shadow_since,
            **summarize(rows),
        }

    # -- metrics ------------------------------------------------------------------------------

    def _set_gauges(self, key: tuple[str, str], comparison: Comparison, figures: Mapping[str, Any]) -> None:
        m = self.metrics
        base = (comparison.model, comparison.alias, str(comparison.shadow))
        set_: list[tuple[Any, tuple[str, ...]]] = []

        def put(gauge: Any, labels: tuple[str, ...], value: Any) -> None:
            if isinstance(value, int | float):
                gauge.labels(*labels).set(value)
                set_.append((gauge, labels))

        put(m.shadow_agreement, base, figures["agreement"])
        for q in ("p50", "p95"):
            quantile = "0.5" if q == "p50" else "0.95"
            put(m.shadow_latency_delta, (*base, quantile), figures["latency_s"]["delta"][q])
            for path, out in figures["outputs"].items():
                if out["kind"] == "numeric":
                    put(m.shadow_abs_delta, (*base, path, quantile), out["abs_delta"][q])
                    put(m.shadow_rel_delta, (*base, path, quantile), out["rel_delta"][q])
        self._forget_gauges(key, keep={(id(gauge), labels) for gauge, labels in set_})
        self._gauges[key] = set_

    def _forget_gauges(
        self, key: tuple[str, str], keep: set[tuple[int, tuple[str, ...]]] | None = None
    ) -> None:
        """Remove the series a comparison no longer has (an old shadow version's, a path gone)."""
        for gauge, labels in self._gauges.pop(key, []):
            if keep is None or (id(gauge), labels) not in keep:
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
