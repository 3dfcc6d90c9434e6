"""Data capture: a sampled copy of each answered request, written to the store off the request path.

What is captured, per model (and version): the request body and the answer body of a 2xx
model call — never a header — as one JSON line in SageMaker Data Capture's shape
(:mod:`mlgate.monitoring.capture_format`: the record, redaction, encodings). Objects:
``capture/<model>/<version>/YYYY/MM/DD/HH/<time>-<pid>-<instance>-<seq>.jsonl`` (the UTC hour
of the inference time), at most ``file_records`` records (and about :data:`FILE_BYTES`) each;
the name is unique across processes and workers (pid and a random instance id). Workflow
executions failed by the confidence gate are kept for review under
``review/<workflow>/YYYY/MM/DD/HH/`` in the same shape (:meth:`Capture.offer_review`) — a
top-level namespace of their own, so a model may be named ``review``. Reading them back:
:mod:`mlgate.monitoring.capture_read`.

This module is the component (:class:`Capture`): the settings cache, the sampling table, the
bounded queue, the background writer and retention (the settings as stored:
:mod:`mlgate.monitoring.capture_settings`). Every public name of those modules is importable
from here too.

Why it never slows an answer: :meth:`Capture.offer` is synchronous and O(1) — it appends the
raw bodies to a bounded queue (``queue_size`` records, ``queue_bytes`` bytes; a record over
``max_record_bytes`` is not captured) or drops the sample and counts it in
``mlgate_capture_dropped_total{model,reason}``. JSON parsing, redaction, base64 and the store
writes happen in the background task, in a worker thread, every ``flush_s`` and on stop. A
failed write is logged and counted (``write_failed``); the server goes on.

Per-model settings (sample, redact, retention) live in ``monitor_models``, are read at start and
every :data:`REFRESH_S` seconds (another worker's change is seen within 5 s; this process's at
once), so :meth:`Capture.rate` — on every request — is one dict lookup. Retention deletes
objects whose hour partition is older than the model's ``retention_days`` (global default; 0
keeps them), at most once an hour per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
import uuid
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Engine, select

from mlgate.db.tables import model_versions, workflows
from mlgate.monitoring.capture_format import (
    REDACTED,
    SECRET_NAMES,
    build_record,
    image_in,
    redact,
    without_images,
)
from mlgate.monitoring.capture_read import (
    capture_prefix,
    list_files,
    parse_when,
    partition_of,
    read_page,
    read_records,
    read_review,
    review_prefix,
)
from mlgate.monitoring.capture_settings import ModelCapture, load_settings, store_settings
from mlgate.settings import Settings
from mlgate.store import ArtifactStore
from mlgate.telemetry.context import current_request_id
from mlgate.telemetry.metrics import Metrics

__all__ = [
    "REDACTED",
    "REVIEW_MODEL",
    "SECRET_NAMES",
    "SHADOW_PAIR",
    "Capture",
    "ModelCapture",
    "ShadowPair",
    "build_record",
    "capture_prefix",
    "list_files",
    "parse_when",
    "read_page",
    "read_records",
    "read_review",
    "redact",
    "review_prefix",
]

log = logging.getLogger("mlgate.monitoring")

#: How often per-model settings are read again from the database.
REFRESH_S = 5.0
#: How often (at most) a process deletes expired capture objects.
RETENTION_EVERY_S = 3600.0
#: The metric label of review records (workflow executions kept for review).
REVIEW_MODEL = "(review)"
_INSTANCE = uuid.uuid4().hex[:8]
# Samples of workflow model calls: a generator seeded per process (reseeded in a forked worker).
_draws = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _draws.seed(os.urandom(16)))
_MAX_LABEL_SETS = 1024
#: An object is closed at about this many bytes of records (or ``file_records`` records).
#: Records encoded on the event loop between two yields (~15 µs each: ~1 ms per slice).
ENCODE_SLICE = 64
FILE_BYTES = 16 * 1024 * 1024


# -- queued records ----------------------------------------------------------------------------


_MODEL_ATTRIBUTES = ("model", "version", "route", "requestId", "keyId", "status")
_REVIEW_ATTRIBUTES = ("workflow", "executionId", "error", "cause", "input")


class _Pending(NamedTuple):
    """A captured exchange as offered: raw bodies, encoded later in the writer thread."""

    kind: str  # "model" | "review"
    model: str  # the model, or the workflow for a review record
    version: str
    when: float
    request_body: bytes
    request_type: str
    response_body: bytes
    response_type: str
    #: ``customAttributes``' values, in the order of :data:`_MODEL_ATTRIBUTES` (a model call) or
    #: :data:`_REVIEW_ATTRIBUTES` (a review): a flat tuple of strings, one allocation per
    #: request, which the garbage collector stops tracking — a queue of tens of thousands of
    #: dicts made every full collection walk them (capture at 100 % cost ~20 % more CPU)
    attributes: tuple[str, ...]
    size: int
    #: a shadowed call's records share one ``eventId`` (None: a fresh one) and carry ``role``…
    event_id: str | None = None
    extra: tuple[tuple[str, str], ...] = ()


# -- shadow pairs (mlgate.lifecycle.shadow) ----------------------------------------------------


class ShadowPair:
    """The capture side of one shadowed call: set by the shadow hook in the caller's context
    (:data:`SHADOW_PAIR`), filled by the edge's capture call when it captures the primary's
    answer (its event id and request), read by the shadow's task to capture the shadow's answer
    under the same event id. Only shadowed calls of a model with capture on make one."""

    __slots__ = (
        "event_id",
        "key_id",
        "model",
        "primary",
        "request_body",
        "request_id",
        "request_type",
        "route",
        "shadow",
    )

    def __init__(self, model: str, primary: int, shadow: int) -> None:
        self.model = model
        self.primary = primary
        self.shadow = shadow
        self.event_id: str | None = None
        self.request_body = b""
        self.request_type = ""
        self.route = ""
        self.request_id = ""
        self.key_id: str | None = None


#: The current request's shadow pair, if its prediction was shadowed (a request task's own context).
SHADOW_PAIR: ContextVar[ShadowPair | None] = ContextVar("mlgate_shadow_pair", default=None)


# -- the component -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Stats:
    written: int = 0
    dropped: int = 0
    files: int = 0
    failures: int = 0
    last_error: str | None = None
    retention_deleted: int = 0
    retention_runs: int = 0


class Capture:
    """One per process: the sampling table, the bounded queue and its background writer."""

    def __init__(self, *, settings: Settings, store: ArtifactStore, engine: Engine, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.metrics = metrics
        cfg = settings.capture
        #: the global sample rate (a model without its own)
        self.default = float(cfg.sample)
        #: the effective sample rate of every model with its own setting: the hot path's table
        self.rates: dict[str, float] = {}
        self.models: dict[str, ModelCapture] = {}
        self.stats = _Stats()
        self._queue: deque[_Pending] = deque()
        self._queued_bytes = 0
        self._dropped: dict[tuple[str, str], Any] = {}
        self._written: dict[str, Any] = {}
        self._seq = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._last_refresh = 0.0
        self._last_retention = 0.0
        self._retention_full_done = False
        self._changes = 0  # this process's settings changes (a refresh read before one is stale)
        self._lock = asyncio.Lock()

    # -- the hot path ------------------------------------------------------------------------

    def rate(self, model: str) -> float:
        """The fraction of ``model``'s answers captured (one dict lookup)."""
        return self.rates.get(model, self.default)

    def offer(
        self,
        model: str,
        version: str | int | None,
        request_body: bytes,
        request_type: str,
        response_body: bytes,
        response_type: str,
        *,
        route: str,
        request_id: str,
        key_id: str | None = None,
        status: int = 200,
        event_id: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> bool:
        """Queue one sampled exchange (O(1), never blocks); False if it was dropped (counted).
        ``event_id`` (default: a fresh one) and ``extra`` custom attributes pair a shadowed call's
        two records."""
        attributes = (model, str(version or ""), route, request_id, key_id or "", str(status))
        return self._enqueue(
            _Pending(
                "model",
                model,
                str(version or "0"),
                time.time(),
                request_body,
                request_type,
                response_body,
                response_type,
                attributes,
                len(request_body) + len(response_body),
                event_id,
                extra,
            )
        )

    def offer_review(
        self,
        workflow: str,
        execution_id: str,
        *,
        execution_input: Any,
        state: Any,
        error: str | None,
        cause: str | None,
    ) -> bool:
        """Queue a failed execution for review (always, not sampled): the image the workflow read
        as the record's input (BASE64), its last state data (without the image) as the output,
        and the execution's id, input (redacted), error and cause in ``customAttributes``."""
        try:
            # The input goes into customAttributes as text, which the writer does not parse:
            # redacted here (a failed execution is rare; the global rules, as for its record).
            cleaned_input, _ = redact(execution_input, self.settings.capture.redact)
            input_text = orjson.dumps(cleaned_input, default=str).decode()
            state_body = orjson.dumps(without_images(state), default=str)
        except (TypeError, orjson.JSONEncodeError):
            input_text, state_body = "null", b"null"
        image = image_in(state)
        if image is not None:
            request_body, request_type = image
        else:
            request_body, request_type = input_text.encode(), "application/json"
        attributes = (workflow, execution_id, error or "", cause or "", input_text)
        return self._enqueue(
            _Pending(
                "review",
                workflow,
                "",
                time.time(),
                request_body,
                request_type,
                state_body,
                "application/json",
                attributes,
                len(request_body) + len(state_body) + len(input_text),
            )
        )

    # -- workflows (mlgate.workflows.actions.WorkflowObserver) ---------------------------------

    def model_invoked(self, workflow: str, model: str, version: int, payload: Any, output: Any) -> None:
        """A workflow task's model call, sampled like an HTTP one (route ``workflow:<name>``)."""
        rate = self.rates.get(model, self.default)
        if rate <= 0.0 or (rate < 1.0 and _draws.random() >= rate):
            return
        try:
            request_body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
            response_body = orjson.dumps(output, option=orjson.OPT_SERIALIZE_NUMPY)
        except (TypeError, orjson.JSONEncodeError):
            self._drop(model, "encode_failed")
            return
        self.offer(
            model,
            version,
            request_body,
            "application/json",
            response_body,
            "application/json",
            route=f"workflow:{workflow}",
            request_id=current_request_id(),
        )

    def execution_failed(
        self,
        workflow: str,
        execution_id: str,
        *,
        execution_input: Any,
        state: Any,
        error: str | None,
        cause: str | None,
    ) -> None:
        """An execution a Fail state ended: kept for review (:meth:`offer_review`)."""
        self.offer_review(
            workflow, execution_id, execution_input=execution_input, state=state, error=error, cause=cause
        )

    def _enqueue(self, item: _Pending) -> bool:
        cfg = self.settings.capture
        label = item.model if item.kind == "model" else REVIEW_MODEL
        if item.size > cfg.max_record_bytes:
            self._drop(label, "too_large")
            return False
        if len(self._queue) >= cfg.queue_size:
            self._drop(label, "queue_full")
            return False
        if self._queued_bytes + item.size > cfg.queue_bytes:
            self._drop(label, "queue_bytes")
            return False
        self._queue.append(item)
        self._queued_bytes += item.size
        if len(self._queue) == cfg.file_records and self._wake is not None:
            self._wake.set()  # a full file is waiting: write it now rather than at the next tick
        return True

    def _drop(self, model: str, reason: str, n: int = 1) -> None:
        self.stats.dropped += n
        child = self._dropped.get((model, reason))
        if child is None:
            child = self.metrics.capture_dropped.labels(model, reason)
            if len(self._dropped) < _MAX_LABEL_SETS:
                self._dropped[(model, reason)] = child
        child.inc(n)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- settings ----------------------------------------------------------------------------

    def _apply(self, models: dict[str, ModelCapture]) -> None:
        self.models = models
        self.rates = {m: s.sample for m, s in models.items() if s.sample is not None}

    async def refresh(self) -> None:
        """Read every model's settings again (another process may have changed them)."""
        changes = self._changes
        models = await asyncio.to_thread(load_settings, self.engine)
        if changes == self._changes:  # else this process changed one meanwhile: read again next time
            self._apply(models)
        self._last_refresh = time.monotonic()

    def effective(self, model: str) -> dict[str, Any]:
        """A model's settings as applied: its own where set, else the global ones."""
        own = self.models.get(model, ModelCapture())
        cfg = self.settings.capture
        return {
            "sample": own.sample if own.sample is not None else cfg.sample,
            "redact": list(own.redact) if own.redact is not None else [],
            "global_redact": list(cfg.redact),
            "retention_days": own.retention_days if own.retention_days is not None else cfg.retention_days,
        }

    async def configure(self, model: str, value: ModelCapture) -> None:
        """Store ``model``'s settings; this process applies them at once, others within 5 s."""
        await asyncio.to_thread(store_settings, self.engine, model, value)
        self._changes += 1
        models = dict(self.models)
        models[model] = value
        self._apply(models)

    def _rules(self, item: _Pending) -> tuple[str, ...]:
        own = self.models.get(item.model) if item.kind == "model" else None
        extra = own.redact if own is not None and own.redact else ()
        return (*self.settings.capture.redact, *extra)

    # -- the background task -------------------------------------------------------------------

    async def start(self) -> None:
        """Read the per-model settings, then start the writer (flush, refresh, retention)."""
        try:
            await self.refresh()
        except Exception:  # capture is never a reason not to serve
            log.exception("capture: cannot read per-model settings; using the global ones")
        self._closing = False
        self._wake = asyncio.Event()
        self._last_retention = time.monotonic() - RETENTION_EVERY_S + 60.0  # first run a minute in
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mlgate-capture")

    async def stop(self) -> None:
        """Write out everything queued, then stop."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()  # whatever arrived after the task's last flush

    async def _run(self) -> None:
        cfg = self.settings.capture
        tick = min(cfg.flush_s, REFRESH_S)
        next_flush = time.monotonic() + cfg.flush_s
        assert self._wake is not None
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick)
            self._wake.clear()
            now = time.monotonic()
            try:
                if self._closing or now >= next_flush or len(self._queue) >= cfg.file_records:
                    await self.flush()
                    next_flush = time.monotonic() + cfg.flush_s
                if now - self._last_refresh >= REFRESH_S:
                    await self.refresh()
                if now - self._last_retention >= RETENTION_EVERY_S:
                    self._last_retention = now
                    await self.apply_retention()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the writer die: log, and go on at the next tick
                log.exception("capture: background task error")
                self._last_refresh = now  # retried at the next interval, not at every tick
        await self.flush()

    async def flush(self) -> int:
        """Write everything queued now; the number of records written.

        Records are encoded on the event loop, :data:`ENCODE_SLICE` at a time with a yield
        between slices, and only each object's store write goes to a worker thread. Encoding
        in a thread instead (CPU-bound Python) would hold the GIL against the loop: each time
        the loop released it for a socket call it would wait up to the switch interval (5 ms)
        to get it back — measured, capture at 100 % then cost 25 % of W1 throughput."""
        async with self._lock:
            if not self._queue:
                return 0
            batch, self._queue = self._queue, deque()
            self._queued_bytes = 0
            return await self._write(batch)

    async def _write(self, batch: deque[_Pending]) -> int:
        """Encode and write a batch: one object per (prefix, hour), ``file_records`` records and
        about :data:`FILE_BYTES` at most. Each raw item is let go once encoded (``batch`` is
        emptied), so the writer holds the raw batch, one object's lines and that object's
        bytes — not the whole batch encoded twice over."""
        groups: dict[tuple[str, str, str], list[_Pending]] = {}
        hours: dict[int, str] = {}  # a batch spans an hour or two: each formatted once
        while batch:
            item = batch.popleft()
            if item.kind == "model":
                prefix, label = capture_prefix(item.model, item.version), item.model
            else:
                prefix, label = review_prefix(item.model), REVIEW_MODEL
            at = int(item.when) // 3600
            hour = hours.get(at)
            if hour is None:
                hour = hours[at] = datetime.fromtimestamp(at * 3600, UTC).strftime("%Y/%m/%d/%H")
            groups.setdefault((prefix, hour, label), []).append(item)
        size = self.settings.capture.file_records
        written = encoded = 0
        for (prefix, hour, label), items in groups.items():
            items.sort(key=lambda it: it.when)  # stable: one instant's records stay in order
            items.reverse()  # popped from the end: oldest first
            rules = self._rules(items[-1])  # one model (or workflow) per group
            chunk: list[bytes] = []
            chunk_bytes, first = 0, 0.0
            while items:
                item = items.pop()
                line = self._encode(item, rules)
                encoded += 1
                if encoded % ENCODE_SLICE == 0:
                    await asyncio.sleep(0)  # let requests in between slices
                if line is None:
                    continue
                if not chunk:
                    first = item.when
                chunk.append(line)
                chunk_bytes += len(line) + 1
                del item, line
                if len(chunk) >= size or chunk_bytes >= FILE_BYTES:
                    written += await asyncio.to_thread(self._put, prefix, hour, label, first, chunk)
                    chunk, chunk_bytes = [], 0
            if chunk:
                written += await asyncio.to_thread(self._put, prefix, hour, label, first, chunk)
        self.stats.written += written
        return written

    def _encode(self, item: _Pending, rules: tuple[str, ...]) -> bytes | None:
        """One record's JSON line; None (dropped, counted) if it cannot be encoded."""
        try:
            names = _MODEL_ATTRIBUTES if item.kind == "model" else _REVIEW_ATTRIBUTES
            attributes = dict(zip(names, item.attributes, strict=True))
            if item.extra:
                attributes.update(item.extra)
            record = build_record(
                request_body=item.request_body,
                request_type=item.request_type,
                response_body=item.response_body,
                response_type=item.response_type,
                when=item.when,
                attributes=attributes,
                rules=rules,
                inference_id=attributes.get("requestId") or None,
                event_id=item.event_id,
            )
            return orjson.dumps(record)
        except Exception:
            log.exception("capture: cannot encode a record of %s", item.model)
            self._drop(item.model if item.kind == "model" else REVIEW_MODEL, "encode_failed")
            return None

    def _put(self, prefix: str, hour: str, label: str, when: float, chunk: list[bytes]) -> int:
        """Write one object of ``chunk``'s lines (its first record at ``when``); records written."""
        first = datetime.fromtimestamp(when, UTC)
        name = (
            f"{first:%Y%m%dT%H%M%S}{first.microsecond // 1000:03d}Z"
            f"-{os.getpid()}-{_INSTANCE}-{next(self._seq):06d}.jsonl"
        )
        key = f"{prefix}/{hour}/{name}"
        try:
            self.store.put_bytes(key, b"\n".join([*chunk, b""]))  # one copy, a newline after each
        except Exception as exc:
            log.warning("capture: cannot write %s (%d records dropped): %s", key, len(chunk), exc)
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self._drop(label, "write_failed", len(chunk))
            return 0
        self.stats.files += 1
        child = self._written.get(label)
        if child is None:
            child = self.metrics.capture_records.labels(label)
            if len(self._written) < _MAX_LABEL_SETS:
                self._written[label] = child
        child.inc(len(chunk))
        return len(chunk)

    # -- retention -----------------------------------------------------------------------------

    async def apply_retention(self, now: datetime | None = None) -> int:
        """Delete capture objects past their model's retention (a worker thread); how many."""
        deleted = await asyncio.to_thread(self._retention, now or datetime.now(UTC))
        self.stats.retention_runs += 1
        self.stats.retention_deleted += deleted
        return deleted

    def _roots_known(self) -> list[tuple[str, str | None]]:
        """(prefix, model) of every capture root the database knows (model versions, workflows)."""
        with self.engine.connect() as conn:
            versions = conn.execute(select(model_versions.c.model, model_versions.c.version)).all()
            names = conn.execute(select(workflows.c.name)).scalars().all()
        roots: list[tuple[str, str | None]] = [(capture_prefix(m, v), m) for m, v in versions]
        roots.extend((review_prefix(n), None) for n in names)
        return roots

    def _retention(self, now: datetime) -> int:
        cfg = self.settings.capture
        deleted = 0
        full = not self._retention_full_done
        for root, model in self._roots_known():
            own = self.models.get(model) if model is not None else None
            days = (
                own.retention_days
                if own is not None and own.retention_days is not None
                else cfg.retention_days
            )
            if not days or days <= 0:
                continue
            cutoff = now - timedelta(days=float(days))
            # An object's hour partition ends an hour after its start: expired when that end is past.
            if full:  # once per process: everything under the root (catches lowered retentions)
                candidates = self.store.list(root + "/")
            else:  # afterwards only the days that just expired: two days of prefixes per root
                candidates = []
                for back in range(3):
                    day = (cutoff - timedelta(days=back)).strftime("%Y/%m/%d")
                    candidates.extend(self.store.list(f"{root}/{day}/"))
            for key in candidates:
                hour = partition_of(key)
                if hour is None or hour + timedelta(hours=1) > cutoff:
                    continue
                try:
                    self.store.delete(key)
                    deleted += 1
                except Exception:
                    log.warning("capture: cannot delete expired %s", key, exc_info=True)
        self._retention_full_done = True
        if deleted:
            log.info("capture: retention deleted %d objects", deleted)
        return deleted
