"""Run workflow executions: deploy, start (sync or async), describe, list, history, stop.

One :class:`WorkflowService` per server process. Every execution runs in its own asyncio task
(a sync start just waits for it, shielded, so a client that hangs up does not abort it).

Persistence is batched: the interpreter's events are buffered per execution and written by
one writer task — every ``flush_interval_s``, when a buffer grows past ``flush_events``, and
at the end of an execution together with its final status, so a short execution costs two
transactions (its start row and its end). Concurrent executions share the writer's
transactions (group commit).

Crashes: a running execution's row names its *runner* (``host:pid:instance``) and carries a
heartbeat, refreshed every ``heartbeat_s``. On start, and on every heartbeat, RUNNING rows
whose runner is a dead process on this host, or whose heartbeat is older than ``lease_s``,
are marked FAILED with error ``States.Runtime`` and cause ``interrupted by server restart``
(executions are not resumed: a task may have had effects we cannot know about). A stop
request for an execution running in another process marks it ABORTED in the database; that
process notices at its next heartbeat and cancels it. Shutdown waits ``shutdown_grace_s``
for running executions, then aborts the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import orjson
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from mlgate.dataplane import DataPlane
from mlgate.errors import (
    ConfigurationError,
    Conflict,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
)
from mlgate.settings import S3Settings, WorkflowSettings
from mlgate.store import ArtifactStore
from mlgate.telemetry.metrics import Metrics
from mlgate.types import BundledWorkflow, Service
from mlgate.workflows import arns
from mlgate.workflows.actions import Actions, ChildOutcome, ChildStarter, DataBuckets, WorkflowObserver
from mlgate.workflows.engine import (
    Clock,
    ExecutionResult,
    HistoryEvent,
    Interpreter,
    SystemClock,
    TaskCall,
    TaskFailure,
    TaskInvoker,
)
from mlgate.workflows.failures import DATA_LIMIT_EXCEEDED, RUNTIME
from mlgate.workflows.mapping import ResourceMapping, parse_mapping
from mlgate.workflows.spec import StateMachine, parse_definition
from mlgate.workflows.store import (
    EventLike,
    ExecutionEvent,
    ExecutionRecord,
    ExecutionSummary,
    Finish,
    PreparedEvent,
    Status,
    StoredJson,
    WorkflowRecord,
    WorkflowStore,
    clean_text,
)

__all__ = [
    "INTERRUPTED_CAUSE",
    "INTERRUPTED_ERROR",
    "UNSTORABLE_CAUSE",
    "TaskActions",
    "WorkflowService",
    "create_workflow_service",
    "runner_id",
]

log = logging.getLogger("mlgate.workflows")

INTERRUPTED_ERROR = "States.Runtime"
INTERRUPTED_CAUSE = "interrupted by server restart"
SHUTDOWN_ERROR = "Mlgate.Shutdown"
#: The cause of an execution failed because one of its history events could not be stored.
UNSTORABLE_CAUSE = "history event could not be stored"
_PAYLOAD_KEYS = ("input", "output", "parameters")
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_FINAL_EVENTS = frozenset({"ExecutionSucceeded", "ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut"})
_HOST = socket.gethostname()


def runner_id() -> str:
    """``host:pid:instance`` of this process (the instance part tells restarts with a reused pid apart)."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _json_bytes(value: Any) -> bytes:
    """UTF-8 JSON, exactly as the store writes it (:func:`mlgate.workflows.store.dumps`)."""
    return orjson.dumps(value, default=str, option=_JSON_OPTIONS)


def _transient(exc: BaseException) -> bool:
    """A database that is unreachable or busy (retry the batch), not one refusing the data."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)


def _refusal(exc: BaseException) -> str:
    """Why the database refused an execution's events, without its internals (SQL, values)."""
    if isinstance(exc, sa_exc.DBAPIError):
        return f"the database refused its data ({type(exc).__name__})"
    return f"it cannot be written ({type(exc).__name__})"


def _runner_is_dead(runner: str) -> bool:
    """True when ``runner`` was a process on this host that no longer exists."""
    parts = runner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, someone else's
        return False
    return False


class TaskActions(Protocol):
    """What the service needs from :class:`mlgate.workflows.actions.Actions`."""

    def invoker(
        self, mapping: ResourceMapping, *, start_child: ChildStarter | None = None
    ) -> TaskInvoker: ...

    def check(self, doc: Mapping[str, Any], mapping: ResourceMapping) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class _Compiled:
    record: WorkflowRecord
    machine: StateMachine
    mapping: ResourceMapping


@dataclass(slots=True)
class _Run:
    record: ExecutionRecord
    depth: int
    pending: list[EventLike] = field(default_factory=list)
    last_id: int = 0
    last_type: str = ""
    #: the execution (never cancelled) and, inside it, the interpreter (cancelled to stop it)
    task: asyncio.Task[ExecutionRecord] | None = None
    inner: asyncio.Task[ExecutionResult] | None = None
    interpreter: Interpreter | None = None
    #: why it is being cancelled: (status, error, cause)
    abort: tuple[Status, str | None, str | None] | None = None
    #: the input of the state it entered last, and whether that was a Fail state (its verdict)
    state_input: Any = None
    in_fail_state: bool = False
    #: a limit it broke (an event too large or that cannot be stored): (error, cause); it FAILS
    fault: tuple[str, str] | None = None
    started: float = field(default_factory=time.perf_counter)


class _Writer:
    """One task writing every buffered event and every finish, batched into few transactions."""

    def __init__(
        self,
        store: WorkflowStore,
        runs: Mapping[str, _Run],
        *,
        interval: float,
        on_unstorable: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.runs = runs
        self.interval = interval
        #: told (execution id, cause) when an execution was failed because its events were refused
        self.on_unstorable = on_unstorable
        self._finishes: list[tuple[Finish, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lock = asyncio.Lock()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="mlgate-workflow-writer")

    def wake(self) -> None:
        self._wake.set()

    async def finish(self, finish: Finish) -> bool:
        if self._task is None or self._task.done():
            # Not started (tests, tools) or stopped: write directly.
            return (await asyncio.to_thread(self.store.record, [], [finish]))[0]
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._finishes.append((finish, future))
        self._wake.set()
        return await future

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.flush()
            if self._closing and not self._finishes:
                return

    async def flush(self) -> None:
        # One flush at a time: an execution's earlier events always commit before its end.
        async with self._lock:
            await self._flush()

    async def _flush(self) -> None:
        events: list[tuple[str, EventLike]] = []
        for run in self.runs.values():
            if run.pending:
                batch, run.pending = run.pending, []
                events.extend((run.record.id, e) for e in batch)
        finishes, self._finishes = self._finishes, []
        if not events and not finishes:
            return
        for attempt in range(3):
            try:
                applied = await asyncio.to_thread(self.store.record, events, [f for f, _ in finishes])
                break
            except Exception as exc:
                if not _transient(exc):
                    # The data of some execution was refused: write each execution on its own,
                    # so only the one(s) whose events cannot be stored fail.
                    await self._one_by_one(events, finishes)
                    return
                if attempt == 2:
                    log.exception("workflow history write failed; %d events lost", len(events))
                    for _, future in finishes:
                        if not future.done():
                            future.set_exception(exc)
                    return
                await asyncio.sleep(0.1 * 2**attempt)
        for (_, future), ok in zip(finishes, applied, strict=True):
            if not future.done():
                future.set_result(ok)

    async def _one_by_one(
        self, events: list[tuple[str, EventLike]], finishes: list[tuple[Finish, asyncio.Future[bool]]]
    ) -> None:
        grouped: dict[str, list[tuple[str, EventLike]]] = {}
        for execution_id, event in events:
            grouped.setdefault(execution_id, []).append((execution_id, event))
        ends = {f.execution_id: (f, future) for f, future in finishes}
        for execution_id in list(dict.fromkeys([*grouped, *ends])):
            end = ends.get(execution_id)
            try:
                applied = await asyncio.to_thread(
                    self.store.record, grouped.get(execution_id, []), [end[0]] if end else []
                )
            except Exception as exc:
                if _transient(exc):
                    log.exception("workflow history write failed for execution %s", execution_id)
                    if end is not None and not end[1].done():
                        end[1].set_exception(exc)
                    continue
                await self._fail_unstorable(execution_id, exc)
                if end is not None and not end[1].done():
                    end[1].set_result(False)  # the execution reads its FAILED row back
                continue
            if end is not None and not end[1].done():
                end[1].set_result(applied[0])

    async def _fail_unstorable(self, execution_id: str, exc: BaseException) -> None:
        """Fail the one execution whose events the database refused (its other events stay)."""
        cause = f"{UNSTORABLE_CAUSE}: {_refusal(exc)}"
        log.warning("workflow execution %s failed: %s", execution_id, cause, exc_info=exc)
        try:
            await asyncio.to_thread(
                self.store.end_running,
                [execution_id],
                status="FAILED",
                error=RUNTIME,
                cause=cause,
                event_type="ExecutionFailed",
            )
        except Exception:
            log.exception("could not mark workflow execution %s FAILED", execution_id)
        if self.on_unstorable is not None:
            self.on_unstorable(execution_id, cause)


class WorkflowService:
    """Deploys workflows and runs their executions in this process."""

    def __init__(
        self,
        store: WorkflowStore,
        *,
        actions: TaskActions,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        runner: str | None = None,
        flush_interval_s: float = 0.25,
        flush_events: int = 256,
        heartbeat_s: float = 10.0,
        lease_s: float = 60.0,
        shutdown_grace_s: float = 5.0,
        max_running: int = 1000,
        max_depth: int = 5,
        max_events: int = 25_000,
        definition_ttl_s: float = 1.0,
        settings: WorkflowSettings | None = None,
        arn_region: str = arns.REGION,
        arn_account: str = arns.ACCOUNT,
    ) -> None:
        self.store = store
        #: the region and account of the ARNs in ``$$`` (the Step Functions API's: MLGATE_SFN__*)
        self.arn_region = arn_region
        self.arn_account = arn_account
        self.actions = actions
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics
        self.runner = runner or runner_id()
        self.flush_events = flush_events
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self.shutdown_grace_s = shutdown_grace_s
        self.max_running = max_running
        self.max_depth = max_depth
        self.max_events = max_events
        self.settings = settings or WorkflowSettings()
        self.max_payload_bytes = self.settings.max_payload_bytes
        self._runs: dict[str, _Run] = {}
        self._writer = _Writer(
            store, self._runs, interval=flush_interval_s, on_unstorable=self._on_unstorable
        )
        self._retention: asyncio.Task[None] | None = None
        self.definition_ttl_s = definition_ttl_s
        self._compiled: OrderedDict[str, tuple[float, _Compiled]] = OrderedDict()
        self._heartbeat: asyncio.Task[None] | None = None
        self._accepting = True
        #: told of executions a Fail state ended (data capture's review records); None: nobody
        self.observer: WorkflowObserver | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Mark executions a crash left RUNNING as FAILED, then start the writer and the heartbeat."""
        self._accepting = True
        await self.recover()
        self._writer.start()
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(
                self._heartbeat_loop(), name="mlgate-workflow-heartbeat"
            )
        if self._retention is None:
            self._retention = asyncio.get_running_loop().create_task(
                self._retention_loop(), name="mlgate-workflow-retention"
            )

    async def stop(self) -> None:
        """Stop accepting executions; wait ``shutdown_grace_s`` for running ones, abort the rest."""
        self._accepting = False
        tasks = [r.task for r in self._runs.values() if r.task is not None]
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=self.shutdown_grace_s)
            for run in list(self._runs.values()):
                if run.task in still:
                    self._cancel(run, "ABORTED", SHUTDOWN_ERROR, "the server shut down while it was running")
            if still:
                await asyncio.wait(still, timeout=max(self.shutdown_grace_s, 5.0))
        for background in (self._heartbeat, self._retention):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        self._heartbeat = self._retention = None
        await self._writer.close()

    @property
    def running(self) -> int:
        """Executions running in this process."""
        return len(self._runs)

    async def recover(self) -> list[str]:
        """Mark RUNNING executions whose runner is gone as FAILED (``States.Runtime``); returns their ids."""
        rows = await asyncio.to_thread(self.store.running)
        now = self.clock.now()
        stale = now - timedelta(seconds=self.lease_s)
        dead = [
            r.id
            for r in rows
            if r.runner != self.runner
            and (
                (r.runner is not None and _runner_is_dead(r.runner))
                or (r.heartbeat_at or r.started_at) < stale
            )
        ]
        if not dead:
            return []
        changed = await asyncio.to_thread(
            self.store.end_running,
            dead,
            status="FAILED",
            error=INTERRUPTED_ERROR,
            cause=INTERRUPTED_CAUSE,
            event_type="ExecutionFailed",
            now=now,
        )
        if changed:
            log.warning(
                "marked %d interrupted workflow executions FAILED: %s", len(changed), ", ".join(changed)
            )
        return changed

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.beat()
            except Exception:
                log.exception("workflow heartbeat failed")

    async def beat(self) -> None:
        """Refresh this process's heartbeats; cancel executions stopped elsewhere; sweep dead ones."""
        mine = list(self._runs)
        if mine:
            alive = await asyncio.to_thread(self.store.heartbeat, mine, now=self.clock.now())
            for execution_id in mine:
                run = self._runs.get(execution_id)
                if execution_id not in alive and run is not None and run.abort is None:
                    self._cancel(run, "ABORTED", None, "stopped from another server process")
        await self.recover()

    # -- retention ----------------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_interval_s)
            try:
                await self.apply_retention()
            except Exception:
                log.exception("workflow history retention failed")

    async def apply_retention(self) -> int:
        """Delete what the retention settings say is too old or too many; returns how many."""
        age, count = self.settings.history_max_age_days, self.settings.history_max_executions_per_workflow
        if not age and not count:
            return 0
        before = self.clock.now() - timedelta(days=age) if age else None
        deleted = 0
        for workflow in await asyncio.to_thread(self.store.list_workflows):
            deleted += await asyncio.to_thread(
                self.store.purge, workflow.name, before=before, keep=count or None
            )
        if deleted:
            log.info("workflow history retention deleted %d finished executions", deleted)
        return deleted

    async def purge(self, workflow: str, *, before: datetime | None = None, keep: int | None = None) -> int:
        """Delete ``workflow``'s finished executions started before ``before`` and/or beyond the
        newest ``keep``; :class:`NotFound` for an unknown workflow."""
        await asyncio.to_thread(self.store.get, workflow)
        return await asyncio.to_thread(self.store.purge, workflow, before=before, keep=keep)

    # -- workflows ----------------------------------------------------------------------------

    def deploy_sync(
        self,
        name: str,
        definition: Mapping[str, Any] | str,
        *,
        mapping: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> WorkflowRecord:
        """Validate (definition, mapping, and that every resource can run here) and deploy."""
        machine = parse_definition(definition if isinstance(definition, str) else dict(definition))
        resources = parse_mapping(mapping)
        problems = self.actions.check(machine.raw, resources)
        if problems:
            raise InvalidInput("the workflow cannot run here", details={"errors": problems})
        record = self.store.deploy(name, definition, mapping=mapping, description=description)
        self._compiled.pop(name, None)  # this process runs the new revision at once
        return record

    async def deploy(
        self,
        name: str,
        definition: Mapping[str, Any] | str,
        *,
        mapping: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> WorkflowRecord:
        return await asyncio.to_thread(
            self.deploy_sync, name, definition, mapping=mapping, description=description
        )

    def deploy_bundled(self, bundled: Sequence[BundledWorkflow]) -> list[WorkflowRecord]:
        """Deploy services' shipped workflows that are not deployed yet (a redeploy is never overwritten)."""
        existing = {w.name for w in self.store.list_workflows()}
        out: list[WorkflowRecord] = []
        for b in bundled:
            if b.name in existing:
                continue
            try:
                definition = b.definition.read_text(encoding="utf-8")
                mapping = orjson.loads(b.mapping.read_bytes()) if b.mapping is not None else None
                out.append(self.deploy_sync(b.name, definition, mapping=mapping, description=b.description))
            except (OSError, orjson.JSONDecodeError, InvalidInput) as exc:
                detail = getattr(exc, "details", None) or str(exc)
                raise ConfigurationError(f"shipped workflow {b.name!r} cannot be deployed: {detail}") from exc
            except Conflict:
                continue  # deployed by another process at the same moment
        return out

    async def get(self, name: str) -> WorkflowRecord:
        return await asyncio.to_thread(self.store.get, name)

    async def list_workflows(self) -> list[WorkflowRecord]:
        return await asyncio.to_thread(self.store.list_workflows)

    async def _compile(self, name: str) -> _Compiled:
        """The parsed current revision; re-read at most every ``definition_ttl_s`` (redeploys elsewhere)."""
        now = time.monotonic()
        hit = self._compiled.get(name)
        if hit is not None and now - hit[0] < self.definition_ttl_s:
            return hit[1]
        record = await asyncio.to_thread(self.store.get, name)
        if hit is not None and hit[1].record.revision == record.revision:
            compiled = hit[1]
        else:
            compiled = _Compiled(record, parse_definition(record.definition), parse_mapping(record.mapping))
        self._compiled[name] = (now, compiled)
        self._compiled.move_to_end(name)
        while len(self._compiled) > 256:
            self._compiled.popitem(last=False)
        return compiled

    # -- executions ---------------------------------------------------------------------------

    async def start_execution(
        self,
        workflow: str,
        input: Any,
        *,
        mode: Literal["sync", "async"] = "sync",
        name: str | None = None,
        owner: str | None = None,
        parent_id: str | None = None,
        depth: int = 0,
    ) -> ExecutionRecord:
        """Start an execution. ``sync`` returns it ended; ``async`` returns it RUNNING at once."""
        if mode not in ("sync", "async"):
            raise InvalidInput("mode must be 'sync' or 'async'")
        run = await self._launch(workflow, input, name=name, owner=owner, parent_id=parent_id, depth=depth)
        if mode == "async":
            return run.record
        assert run.task is not None
        # Shielded: a sync caller that goes away (client disconnect) leaves the execution running.
        return await asyncio.shield(run.task)

    async def _launch(
        self,
        workflow: str,
        input: Any,
        *,
        name: str | None,
        owner: str | None,
        parent_id: str | None,
        depth: int,
    ) -> _Run:
        if not self._accepting:
            raise Overloaded("the server is shutting down; retry on another instance", retry_after=1.0)
        if len(self._runs) >= self.max_running:
            raise Overloaded(
                f"{self.max_running} workflow executions are running; retry shortly", retry_after=1.0
            )
        stored = input if isinstance(input, StoredJson) else self.check_input(input)
        compiled = await self._compile(workflow)
        record = await asyncio.to_thread(
            self.store.start_execution,
            workflow=workflow,
            revision=compiled.record.revision,
            input=stored,
            name=name,
            owner=owner,
            parent_id=parent_id,
            runner=self.runner,
            started_at=self.clock.now(),
        )
        run = _Run(record, depth)
        self._runs[record.id] = run
        if self.metrics is not None:
            self.metrics.workflow_running.inc()
        run.task = asyncio.get_running_loop().create_task(
            self._execute(run, compiled), name=f"mlgate-workflow-{record.id}"
        )
        return run

    def check_input(self, value: Any) -> StoredJson:
        """An execution input as it will be stored: what is accepted here can always be stored
        and answered (a history answer holds it 4 levels deep: ``{"events": [{"details":
        {"input": …}}]}``). :class:`PayloadTooLarge` over ``max_payload_bytes``;
        :class:`InvalidInput` for a value JSON cannot hold."""
        try:
            text = _json_bytes([[[[value]]]])[4:-4]  # the same bytes, checked with the headroom
        except orjson.JSONEncodeError as exc:
            raise InvalidInput(f"the execution input cannot be stored: {exc}") from None
        if len(text) > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"the execution input is {len(text)} bytes as JSON; the limit is "
                f"{self.max_payload_bytes} (MLGATE_WORKFLOWS__MAX_PAYLOAD_BYTES)",
                details={"size": len(text), "limit": self.max_payload_bytes},
            )
        return StoredJson(value, text.decode())

    def _on_event(self, run: _Run, event: HistoryEvent) -> None:
        prepared = self._prepare(run, event)
        if run.fault is not None and event.type in _FINAL_EVENTS and event.type != "ExecutionFailed":
            # ended because of the fault: the history ends the way the execution does
            error, cause = run.fault
            details = {"error": error, "cause": cause}
            text = _json_bytes(details).decode()
            prepared = PreparedEvent(event.id, "ExecutionFailed", event.timestamp, None, details, text)
        run.pending.append(prepared)
        if event.type.endswith("StateEntered"):
            run.state_input = event.details.get("input")
            run.in_fail_state = event.type == "FailStateEntered"
        run.last_id = event.id
        run.last_type = prepared.type
        if len(run.pending) >= self.flush_events:
            self._writer.wake()
        if event.id > self.max_events and run.abort is None:
            self._fault(run, RUNTIME, f"the execution history passed {self.max_events} events")

    def _prepare(self, run: _Run, event: HistoryEvent) -> PreparedEvent:
        """Serialise (and measure) an event in its own execution: a value that cannot be stored,
        or a state payload over ``max_payload_bytes``, fails this execution and no other."""
        fault: tuple[str, str] | None = None
        try:
            # details sit 3 levels deep in a history answer: checked with that headroom
            data = _json_bytes([[[event.details]]])[3:-3]
        except orjson.JSONEncodeError as exc:
            fault = (RUNTIME, f"{UNSTORABLE_CAUSE}: {exc}")
        else:
            if len(data) <= self.max_payload_bytes:
                return PreparedEvent(
                    event.id, event.type, event.timestamp, event.state, event.details, data.decode()
                )
            for key in _PAYLOAD_KEYS:
                if key in event.details:
                    size = len(_json_bytes(event.details[key]))
                    if size > self.max_payload_bytes:
                        where = f"state {event.state!r}" if event.state else "the execution"
                        fault = (
                            DATA_LIMIT_EXCEEDED,
                            f"{where}: its {key} is {size} bytes as JSON, over the "
                            f"{self.max_payload_bytes}-byte limit",
                        )
                        break
            if fault is None:
                return PreparedEvent(
                    event.id, event.type, event.timestamp, event.state, event.details, data.decode()
                )
        # The event is kept with its payload replaced by the reason it was not stored.
        details = {"error": fault[0], "cause": fault[1]}
        self._fault(run, *fault)
        return PreparedEvent(
            event.id, event.type, event.timestamp, event.state, details, _json_bytes(details).decode()
        )

    def _fault(self, run: _Run, error: str, cause: str) -> None:
        """The execution broke a limit: it ends FAILED with ``error`` (terminal, never caught)."""
        if run.fault is None and run.abort is None:
            run.fault = (error, cause)
            self._cancel(run, "FAILED", error, cause)

    def _on_unstorable(self, execution_id: str, cause: str) -> None:
        run = self._runs.get(execution_id)
        if run is not None:
            self._fault(run, RUNTIME, cause)

    async def _execute(self, run: _Run, compiled: _Compiled) -> ExecutionRecord:
        record = run.record
        invoker = self.actions.invoker(compiled.mapping, start_child=self._child_starter(run))

        def on_event(event: HistoryEvent) -> None:
            self._on_event(run, event)

        interpreter = Interpreter(
            compiled.machine,
            invoke=invoker,
            clock=self.clock,
            on_event=on_event,
            execution_id=record.id,
            execution_name=record.name,
            state_machine_name=record.workflow,
            state_machine_id=arns.state_machine_arn(
                record.workflow, region=self.arn_region, account=self.arn_account
            ),
            execution_arn=arns.execution_arn(
                record.workflow, record.name, region=self.arn_region, account=self.arn_account
            ),
            role_arn=arns.role_arn(account=self.arn_account),
        )
        run.interpreter = interpreter
        status: Status
        output: Any = None
        error: str | None = None
        cause: str | None = None
        try:
            if run.abort is not None:  # stopped before it began
                raise asyncio.CancelledError
            run.inner = asyncio.get_running_loop().create_task(interpreter.run(record.input))
            result: ExecutionResult = await run.inner
            status, output, error, cause = result.status, result.output, result.error, result.cause
            if run.abort is not None and status == "ABORTED":
                status, error, cause = run.abort
        except asyncio.CancelledError:
            if run.abort is None:  # the loop itself is going away
                raise
            status, error, cause = run.abort
        except Exception as exc:
            log.exception("workflow %s execution %s: interpreter error", record.workflow, record.id)
            status, error, cause = "FAILED", "States.Runtime", f"{type(exc).__name__}: {exc}"
        if run.fault is not None:  # a limit it broke ends it FAILED, however the interpreter ended
            status = "FAILED"
            error, cause = run.fault
        if status != "SUCCEEDED":
            output = None
        try:
            return await self._end(run, status, output, error, cause)
        finally:
            self._runs.pop(record.id, None)
            if self.metrics is not None:
                self.metrics.workflow_running.dec()

    async def _end(
        self, run: _Run, status: Status, output: Any, error: str | None, cause: str | None
    ) -> ExecutionRecord:
        now = self.clock.now()
        error, cause = clean_text(error), clean_text(cause)  # as the store keeps them
        if run.last_type not in _FINAL_EVENTS:
            kind = {
                "SUCCEEDED": "ExecutionSucceeded",
                "FAILED": "ExecutionFailed",
                "TIMED_OUT": "ExecutionTimedOut",
                "ABORTED": "ExecutionAborted",
            }[status]
            details: dict[str, Any] = (
                {"output": output} if status == "SUCCEEDED" else {"error": error, "cause": cause}
            )
            self._on_event(
                run, HistoryEvent(id=run.last_id + 1, type=kind, timestamp=now, state=None, details=details)
            )
        events, run.pending = run.pending, []
        finish = Finish(run.record.id, status, output, error, cause, now, tuple(events))
        applied = await self._writer.finish(finish)
        if applied:
            ended = replace(
                run.record, status=status, output=output, error=error, cause=cause, stopped_at=now
            )
        else:  # stopped or swept by someone else first: theirs is the truth
            ended = await asyncio.to_thread(self.store.describe, run.record.id)
        if ended.status == "FAILED" and run.in_fail_state and self.observer is not None:
            # The workflow's own verdict (a Fail state, e.g. the confidence gate): kept for review
            # with what it read. Broken executions (task errors, limits) are not.
            try:
                self.observer.execution_failed(
                    ended.workflow,
                    ended.id,
                    execution_input=run.record.input,
                    state=run.state_input,
                    error=ended.error,
                    cause=ended.cause,
                )
            except Exception:
                log.exception("workflow execution %s: data capture failed", ended.id)
        if self.metrics is not None:
            self.metrics.workflow_executions.labels(
                ended.workflow, ended.status, (ended.error or "")[:64]
            ).inc()
            self.metrics.workflow_duration.labels(ended.workflow, ended.status).observe(
                time.perf_counter() - run.started
            )
        return ended

    def _child_starter(self, parent: _Run) -> ChildStarter:
        async def start_child(workflow: str, data: Any, call: TaskCall) -> ChildOutcome:
            if parent.depth + 1 > self.max_depth:
                raise TaskFailure(
                    "Mlgate.MaxDepthExceeded",
                    f"workflows may nest {self.max_depth} deep (state {call.state_name!r})",
                )
            try:
                child = await self._launch(
                    workflow,
                    data,
                    name=None,
                    owner=parent.record.owner,
                    parent_id=parent.record.id,
                    depth=parent.depth + 1,
                )
            except NotFound as exc:
                raise TaskFailure("Mlgate.NoSuchWorkflow", exc.message) from None
            except PayloadTooLarge as exc:
                raise TaskFailure(DATA_LIMIT_EXCEEDED, exc.message) from None
            except InvalidInput as exc:
                raise TaskFailure("Mlgate.InvalidParameters", exc.message) from None
            assert child.task is not None
            try:
                ended = await asyncio.shield(child.task)
            except asyncio.CancelledError:
                # The parent was stopped: its .sync children stop with it.
                self._cancel(child, "ABORTED", None, f"parent execution {parent.record.id} was stopped")
                raise
            return ChildOutcome(ended.id, ended.status, ended.output, ended.error, ended.cause)

        return start_child

    def _cancel(self, run: _Run, status: Status, error: str | None, cause: str | None) -> None:
        if run.abort is None:
            run.abort = (status, error, cause)
        if run.interpreter is not None:
            run.interpreter.stop(error, cause)  # it emits ExecutionAborted and returns ABORTED
        elif run.inner is not None and not run.inner.done():
            run.inner.cancel()

    async def stop_execution(
        self, execution_id: str, *, error: str | None = None, cause: str | None = None
    ) -> ExecutionRecord:
        """Abort a RUNNING execution (here or in another process); :class:`Conflict` if it has ended."""
        run = self._runs.get(execution_id)
        if run is not None and run.task is not None:
            self._cancel(run, "ABORTED", error, cause or "stopped by request")
            return await asyncio.shield(run.task)
        changed = await asyncio.to_thread(
            self.store.end_running,
            [execution_id],
            status="ABORTED",
            error=error or "",
            cause=cause or "stopped by request",
            event_type="ExecutionAborted",
            now=self.clock.now(),
        )
        record = await asyncio.to_thread(self.store.describe, execution_id)
        if not changed:
            raise Conflict(f"execution {execution_id} is not running (it is {record.status})")
        return record

    async def describe(self, execution_id: str) -> ExecutionRecord:
        return await asyncio.to_thread(self.store.describe, execution_id)

    async def wait(self, execution_id: str, *, poll_s: float = 0.5) -> ExecutionRecord:
        """The execution once it has ended: its task when it runs here (shielded: a waiter that
        gives up leaves it running), else the database polled every ``poll_s``."""
        run = self._runs.get(execution_id)
        if run is not None and run.task is not None:
            return await asyncio.shield(run.task)
        while True:
            record = await self.describe(execution_id)
            if record.status != "RUNNING":
                return record
            await asyncio.sleep(poll_s)

    def forget(self, name: str) -> None:
        """Drop ``name``'s cached definition at once (the workflow was deleted)."""
        self._compiled.pop(name, None)

    async def list_executions(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        owner: str | None = None,
        limit: int = 100,
    ) -> list[ExecutionSummary]:
        return await asyncio.to_thread(
            lambda: self.store.list_executions(workflow=workflow, status=status, owner=owner, limit=limit)
        )

    async def history(
        self, execution_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[ExecutionEvent]:
        """Stored events (a running execution's newest ones are written within ``flush_interval_s``)."""
        return await asyncio.to_thread(lambda: self.store.history(execution_id, after=after, limit=limit))

    async def flush(self) -> None:
        """Write buffered events now (tests, and before reading a running execution's history)."""
        await self._writer.flush()


def create_workflow_service(
    *,
    engine: Engine,
    store: ArtifactStore,
    s3: S3Settings | None,
    dataplane: DataPlane | None,
    metrics: Metrics | None,
    services: Sequence[Service] = (),
    settings: WorkflowSettings | None = None,
    observer: WorkflowObserver | None = None,
    arn_region: str = arns.REGION,
    arn_account: str = arns.ACCOUNT,
) -> WorkflowService:
    """The service a server runs: actions over its dataplane and store, services' functions;
    ``observer`` (data capture) is told of model invocations and of executions failed for review."""
    functions = {name: fn for s in services for name, fn in s.functions.items()}
    actions = Actions(
        dataplane=dataplane, buckets=DataBuckets(store, s3=s3), functions=functions, observer=observer
    )
    service = WorkflowService(
        WorkflowStore(engine),
        actions=actions,
        metrics=metrics,
        settings=settings,
        arn_region=arn_region,
        arn_account=arn_account,
    )
    service.observer = observer
    return service
