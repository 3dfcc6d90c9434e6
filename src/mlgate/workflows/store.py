"""Workflows, executions and event histories in the registry database (SQLite or PostgreSQL).

Deploying validates the definition (:func:`mlgate.workflows.spec.parse_definition`) and
bumps the workflow's ``revision`` when anything changed. Executions are rows that start
``RUNNING`` and are finished exactly once: every finishing write is conditional on the row
still being ``RUNNING``, so a stop, a crash sweep and the execution's own end cannot
overwrite each other. Events are written in batches (:meth:`WorkflowStore.record` takes
events and finishes of many executions in one transaction); events that arrive for an
execution that is no longer running are dropped, so a late flush never collides with the
event a stop or a sweep appended.

Example::

    store = WorkflowStore(repository.engine)
    store.deploy("vehiculos", definition_json, mapping=mapping)
    run = store.start_execution(workflow="vehiculos", revision=1, input={"s3_key": "a.jpg"})
    store.record([(run.id, event)], [Finish(run.id, "SUCCEEDED", output={...})])
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import orjson
from sqlalchemy import Connection, Engine, Row, and_, bindparam, delete, func, insert, select, update
from sqlalchemy import exc as sa_exc

from mlgate.db.engine import write_tx
from mlgate.db.tables import execution_events, executions, utcnow, workflows
from mlgate.errors import Conflict, InvalidInput, NotFound
from mlgate.types import NAME_PATTERN
from mlgate.workflows.spec import parse_definition

__all__ = [
    "EXECUTION_NAME_MAX",
    "FINAL_STATUSES",
    "STATUSES",
    "EventLike",
    "ExecutionEvent",
    "ExecutionRecord",
    "ExecutionSummary",
    "Finish",
    "PreparedEvent",
    "RunningExecution",
    "Status",
    "StoredJson",
    "WorkflowRecord",
    "WorkflowStore",
    "check_execution_name",
    "clean_text",
    "dumps",
]

Status = Literal["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"]
STATUSES: tuple[Status, ...] = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
FINAL_STATUSES = frozenset(STATUSES[1:])
#: Step Functions' limit on execution names (letters, digits, ``-`` and ``_`` here).
EXECUTION_NAME_MAX = 80
MAX_LIST = 1000
MAX_HISTORY = 100_000
_PURGE_BATCH = 500
_ERROR_MAX = 256
_CAUSE_MAX = 32_768


def dumps(value: Any) -> str:
    """Compact JSON text (orjson; numpy values and datetimes supported, anything else as str)."""
    return orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def clean_text(text: str | None) -> str | None:
    """``text`` as every backend stores it: NUL (PostgreSQL refuses it in text columns) and
    lone surrogates (not UTF-8) become U+FFFD. Used for the columns that are not JSON."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


class EventLike(Protocol):
    """What :meth:`WorkflowStore.record` stores: the interpreter's ``HistoryEvent`` fits."""

    @property
    def id(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def timestamp(self) -> datetime: ...
    @property
    def state(self) -> str | None: ...
    @property
    def details(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class ExecutionEvent:
    """One stored history event; ``id`` is its sequence number in the execution (1, 2, …)."""

    id: int
    type: str
    timestamp: datetime
    state: str | None
    details: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event whose ``details`` are already JSON text (serialised, and measured, by the
    execution that emitted it: a value that cannot be stored fails that execution alone)."""

    id: int
    type: str
    timestamp: datetime
    state: str | None
    details: Mapping[str, Any]
    text: str


@dataclass(frozen=True, slots=True)
class StoredJson:
    """A value with its JSON text, serialised once: measured and stored from the same text."""

    value: Any
    text: str


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """A deployed workflow: its current definition (JSON text) and resource mapping."""

    name: str
    definition: str
    mapping: Mapping[str, Any] | None
    description: str
    revision: int
    created_at: datetime
    updated_at: datetime

    def document(self) -> dict[str, Any]:
        """The definition as a JSON object."""
        doc: dict[str, Any] = orjson.loads(self.definition)
        return doc


@dataclass(frozen=True, slots=True)
class ExecutionSummary:
    """An execution without its input and output (what listings return)."""

    id: str
    workflow: str
    name: str
    revision: int
    status: Status
    error: str | None
    cause: str | None
    owner: str | None
    parent_id: str | None
    started_at: datetime
    stopped_at: datetime | None


@dataclass(frozen=True, slots=True)
class ExecutionRecord(ExecutionSummary):
    """An execution with its input and (once it succeeded) output."""

    input: Any = None
    output: Any = None


@dataclass(frozen=True, slots=True)
class RunningExecution:
    """A RUNNING row as the crash sweep sees it."""

    id: str
    runner: str | None
    heartbeat_at: datetime | None
    started_at: datetime


@dataclass(frozen=True, slots=True)
class Finish:
    """Finish an execution (applied only while it is still RUNNING)."""

    execution_id: str
    status: Status
    output: Any = None
    error: str | None = None
    cause: str | None = None
    stopped_at: datetime | None = None
    #: the final events of this execution, written in the same transaction
    events: Sequence[EventLike] = field(default_factory=tuple)


def _check_workflow_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidInput(
            "workflow names are lowercase letters, digits, '-' and '_' (1-64, starting with a letter)"
        )


def check_execution_name(name: str) -> None:
    """Execution names: 1-80 letters, digits, ``-`` and ``_``."""
    if not (
        isinstance(name, str)
        and 0 < len(name) <= EXECUTION_NAME_MAX
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)
    ):
        raise InvalidInput(f"execution names are 1-{EXECUTION_NAME_MAX} letters, digits, '-' and '_'")


def _status(status: str) -> Status:
    for s in STATUSES:
        if s == status:
            return s
    raise InvalidInput(f"unknown execution status {status!r}; one of {', '.join(STATUSES)}")


def _clip(text: str | None, limit: int) -> str | None:
    text = clean_text(text)
    return text if text is None or len(text) <= limit else text[: limit - 1] + "…"


class WorkflowStore:
    """Deployed workflows, executions and their histories (sync; call from a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- workflows ---------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        definition: Mapping[str, Any] | str,
        *,
        mapping: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> WorkflowRecord:
        """Create ``name`` or give it a new revision; the same content again changes nothing.

        The definition is validated first (:class:`InvalidInput` with ``details["errors"]``).
        ``description=None`` keeps the current one.
        """
        _check_workflow_name(name)
        parse_definition(definition if isinstance(definition, str) else dict(definition))
        text = definition if isinstance(definition, str) else dumps(definition)
        mapping_text = None if mapping is None else dumps(mapping)
        try:
            return self._deploy(name, text, mapping_text, description)
        except sa_exc.IntegrityError:  # created concurrently by another process: now it exists
            return self._deploy(name, text, mapping_text, description)

    def _deploy(
        self, name: str, text: str, mapping_text: str | None, description: str | None
    ) -> WorkflowRecord:
        with write_tx(self._engine) as conn:
            row = conn.execute(select(workflows).where(workflows.c.name == name).with_for_update()).first()
            now = utcnow()
            if row is None:
                values = {
                    "name": name,
                    "definition": text,
                    "mapping": mapping_text,
                    "description": description or "",
                    "revision": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                conn.execute(insert(workflows).values(**values))
                return _workflow(values)
            return _redeploy(conn, row, text, mapping_text, description, now)

    def get(self, name: str) -> WorkflowRecord:
        """One workflow; :class:`NotFound`."""
        with self._engine.connect() as conn:
            row = conn.execute(_GET_WORKFLOW, {"name": name}).first()
        if row is None:
            raise NotFound(f"no workflow {name!r}", details={"workflow": name})
        return _workflow(dict(row._mapping))

    def list_workflows(self) -> list[WorkflowRecord]:
        """Every workflow, by name."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(workflows).order_by(workflows.c.name)).all()
        return [_workflow(dict(r._mapping)) for r in rows]

    # -- executions --------------------------------------------------------------------------

    def start_execution(
        self,
        *,
        workflow: str,
        revision: int,
        input: Any,
        name: str | None = None,
        owner: str | None = None,
        parent_id: str | None = None,
        runner: str | None = None,
        execution_id: str | None = None,
        started_at: datetime | None = None,
    ) -> ExecutionRecord:
        """Insert a RUNNING execution; :class:`Conflict` when the workflow already has this name."""
        execution_id = execution_id or uuid.uuid4().hex
        name = execution_id if name is None else name
        check_execution_name(name)
        started = started_at or utcnow()
        try:
            input_text = input.text if isinstance(input, StoredJson) else dumps(input)
        except orjson.JSONEncodeError as exc:
            raise InvalidInput(f"the input cannot be stored: {exc}") from None
        values = {
            "id": execution_id,
            "workflow": workflow,
            "name": name,
            "revision": revision,
            "status": "RUNNING",
            "input": str(input_text),
            "owner": owner,
            "parent_id": parent_id,
            "runner": runner,
            "started_at": started,
            "heartbeat_at": started if runner else None,
        }
        try:
            with write_tx(self._engine) as conn:
                # One prepared INSERT on the hot path; the foreign key and the unique name
                # constraint do the checking, explained below only when they refuse.
                conn.execute(_INSERT_EXECUTION, values)
        except sa_exc.IntegrityError as exc:
            raise self._start_refused(workflow, name, owner) from exc
        return ExecutionRecord(
            id=execution_id,
            workflow=workflow,
            name=name,
            revision=revision,
            status="RUNNING",
            error=None,
            cause=None,
            owner=owner,
            parent_id=parent_id,
            started_at=started,
            stopped_at=None,
            input=input.value if isinstance(input, StoredJson) else input,
        )

    def _start_refused(self, workflow: str, name: str, owner: str | None) -> Exception:
        with self._engine.connect() as conn:
            if conn.execute(select(workflows.c.name).where(workflows.c.name == workflow)).first() is None:
                return NotFound(f"no workflow {workflow!r}", details={"workflow": workflow})
            taken = conn.execute(
                select(executions.c.id).where(
                    and_(
                        executions.c.workflow == workflow,
                        func.coalesce(executions.c.owner, "") == (owner or ""),
                        executions.c.name == name,
                    )
                )
            ).first()
        # Names are unique per owner: the execution in the way is always the caller's own.
        details = {"executionId": taken.id} if taken is not None else None
        return Conflict(f"workflow {workflow!r} already has an execution named {name!r}", details=details)

    def record(
        self, events: Iterable[tuple[str, EventLike]] = (), finishes: Sequence[Finish] = ()
    ) -> list[bool]:
        """Write events of many executions and finish some, in one transaction.

        Events of executions that are no longer RUNNING are dropped. Returns, per finish,
        whether it applied (False: the execution had already been finished by someone else).
        """
        pending = [(eid, e) for eid, e in events]
        pending += [(f.execution_id, e) for f in finishes for e in f.events]
        if not pending and not finishes:
            return []
        with write_tx(self._engine) as conn:
            ids = list({eid for eid, _ in pending} | {f.execution_id for f in finishes})
            running = set(conn.execute(_RUNNING_AMONG, {"ids": ids}).scalars())
            rows = [_event_row(eid, e) for eid, e in pending if eid in running]
            if rows:
                conn.execute(_INSERT_EVENT, rows)
            applied: list[bool] = []
            for f in finishes:
                if f.execution_id not in running:
                    applied.append(False)
                    continue
                result = conn.execute(
                    _FINISH,
                    {
                        "eid": f.execution_id,
                        "status": _status(f.status),
                        "output": None if f.output is None else dumps(f.output),
                        "error": _clip(f.error, _ERROR_MAX),
                        "cause": _clip(f.cause, _CAUSE_MAX),
                        "stopped_at": f.stopped_at or utcnow(),
                    },
                )
                applied.append(result.rowcount == 1)
                running.discard(f.execution_id)  # its later events in this batch are dropped
        return applied

    def append_events(self, execution_id: str, events: Sequence[EventLike]) -> None:
        """Append events of one execution (dropped if it is no longer RUNNING)."""
        self.record([(execution_id, e) for e in events])

    def finish(
        self,
        execution_id: str,
        status: Status,
        *,
        output: Any = None,
        error: str | None = None,
        cause: str | None = None,
        stopped_at: datetime | None = None,
        events: Sequence[EventLike] = (),
    ) -> bool:
        """Finish one execution if it is still RUNNING; False when it was already finished."""
        if status == "RUNNING":
            raise InvalidInput("an execution cannot be finished as RUNNING")
        finish = Finish(execution_id, status, output, error, cause, stopped_at, tuple(events))
        return self.record(finishes=[finish])[0]

    def describe(self, execution_id: str) -> ExecutionRecord:
        """One execution with its input and output; :class:`NotFound`."""
        with self._engine.connect() as conn:
            row = conn.execute(select(executions).where(executions.c.id == execution_id)).first()
        if row is None:
            raise NotFound(f"no execution {execution_id!r}")
        summary = _summary(row)
        return ExecutionRecord(
            **{f: getattr(summary, f) for f in ExecutionSummary.__slots__},
            input=_loads(row.input),
            output=_loads(row.output),
        )

    def list_executions(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        owner: str | None = None,
        limit: int = 100,
    ) -> list[ExecutionSummary]:
        """Executions, newest first, filtered by workflow, status and starter (``owner``)."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST}")
        columns = [c for c in executions.c if c.name not in ("input", "output")]
        query = select(*columns)
        if workflow is not None:
            query = query.where(executions.c.workflow == workflow)
        if status is not None:
            query = query.where(executions.c.status == _status(status))
        if owner is not None:
            query = query.where(executions.c.owner == owner)
        query = query.order_by(executions.c.started_at.desc(), executions.c.id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [_summary(r) for r in conn.execute(query)]

    def history(self, execution_id: str, *, after: int = 0, limit: int | None = None) -> list[ExecutionEvent]:
        """Events of an execution in order (those with id > ``after``); :class:`NotFound`."""
        if after < 0 or (limit is not None and not 1 <= limit <= MAX_HISTORY):
            raise InvalidInput(f"after must be >= 0 and limit between 1 and {MAX_HISTORY}")
        with self._engine.connect() as conn:
            if conn.execute(select(executions.c.id).where(executions.c.id == execution_id)).first() is None:
                raise NotFound(f"no execution {execution_id!r}")
            query = (
                select(execution_events)
                .where(and_(execution_events.c.execution_id == execution_id, execution_events.c.seq > after))
                .order_by(execution_events.c.seq)
            )
            if limit is not None:
                query = query.limit(limit)
            return [
                ExecutionEvent(r.seq, r.type, r.timestamp, r.state, orjson.loads(r.details))
                for r in conn.execute(query)
            ]

    # -- liveness and crash recovery ---------------------------------------------------------

    def running(self) -> list[RunningExecution]:
        """Every RUNNING execution, for the crash sweep."""
        query = select(
            executions.c.id, executions.c.runner, executions.c.heartbeat_at, executions.c.started_at
        ).where(executions.c.status == "RUNNING")
        with self._engine.connect() as conn:
            return [
                RunningExecution(r.id, r.runner, r.heartbeat_at, r.started_at) for r in conn.execute(query)
            ]

    def heartbeat(self, execution_ids: Collection[str], *, now: datetime | None = None) -> set[str]:
        """Mark these executions alive; returns those still RUNNING (the rest were stopped elsewhere)."""
        if not execution_ids:
            return set()
        ids = list(execution_ids)
        with write_tx(self._engine) as conn:
            conn.execute(
                update(executions)
                .where(and_(executions.c.id.in_(ids), executions.c.status == "RUNNING"))
                .values(heartbeat_at=now or utcnow())
            )
            return set(
                conn.execute(
                    select(executions.c.id).where(
                        and_(executions.c.id.in_(ids), executions.c.status == "RUNNING")
                    )
                ).scalars()
            )

    def end_running(
        self,
        execution_ids: Collection[str],
        *,
        status: Status,
        error: str,
        cause: str,
        event_type: str,
        now: datetime | None = None,
    ) -> list[str]:
        """Finish executions that are not running here (a crash, a stop from another process).

        Each one that was still RUNNING gets ``status`` and a closing event (``event_type``, with
        ``{"error", "cause"}``) after its last stored event. Returns the ids that changed.
        """
        if not execution_ids:
            return []
        when = now or utcnow()
        changed: list[str] = []
        with write_tx(self._engine) as conn:
            for execution_id in sorted(set(execution_ids)):
                result = conn.execute(
                    update(executions)
                    .where(and_(executions.c.id == execution_id, executions.c.status == "RUNNING"))
                    .values(
                        status=_status(status),
                        error=_clip(error, _ERROR_MAX),
                        cause=_clip(cause, _CAUSE_MAX),
                        stopped_at=when,
                    )
                )
                if result.rowcount != 1:
                    continue
                last = conn.execute(
                    select(func.max(execution_events.c.seq)).where(
                        execution_events.c.execution_id == execution_id
                    )
                ).scalar()
                conn.execute(
                    insert(execution_events).values(
                        execution_id=execution_id,
                        seq=(last or 0) + 1,
                        type=event_type,
                        timestamp=when,
                        state=None,
                        details=dumps({"error": error, "cause": cause}),
                    )
                )
                changed.append(execution_id)
        return changed

    # -- retention ---------------------------------------------------------------------------

    def purge(
        self,
        workflow: str,
        *,
        before: datetime | None = None,
        keep: int | None = None,
        batch: int = _PURGE_BATCH,
    ) -> int:
        """Delete finished executions of ``workflow`` (with their histories); never a RUNNING one.

        ``before``: those started before it. ``keep``: the newest ``keep`` executions (RUNNING
        ones count) are kept, the oldest finished ones beyond are deleted. Deletes in
        transactions of at most ``batch`` executions; returns how many were deleted.
        """
        if keep is not None and keep < 0:
            raise InvalidInput("keep must be >= 0")
        finished = and_(executions.c.workflow == workflow, executions.c.status != "RUNNING")
        victims: list[str] = []
        with self._engine.connect() as conn:
            if before is not None:
                victims += conn.execute(
                    select(executions.c.id).where(and_(finished, executions.c.started_at < before))
                ).scalars()
            if keep is not None:
                total = conn.execute(
                    select(func.count()).select_from(executions).where(executions.c.workflow == workflow)
                ).scalar_one()
                excess = total - keep - len(victims)
                if excess > 0:
                    query = select(executions.c.id).where(finished)
                    if before is not None:  # those before it are victims already
                        query = query.where(executions.c.started_at >= before)
                    oldest = query.order_by(executions.c.started_at, executions.c.id).limit(excess)
                    victims += conn.execute(oldest).scalars()
        deleted = 0
        for start in range(0, len(victims), batch):
            ids = victims[start : start + batch]
            with write_tx(self._engine) as conn:
                conn.execute(delete(execution_events).where(execution_events.c.execution_id.in_(ids)))
                result = conn.execute(
                    delete(executions).where(and_(executions.c.id.in_(ids), executions.c.status != "RUNNING"))
                )
                deleted += result.rowcount
        return deleted


def _redeploy(
    conn: Connection,
    row: Row[Any],
    text: str,
    mapping_text: str | None,
    description: str | None,
    now: datetime,
) -> WorkflowRecord:
    keep = description if description is not None else row.description
    if (row.definition, row.mapping, row.description) == (text, mapping_text, keep):
        return _workflow(dict(row._mapping))
    values = {
        "definition": text,
        "mapping": mapping_text,
        "description": keep,
        "revision": row.revision + 1,
        "updated_at": now,
    }
    conn.execute(update(workflows).where(workflows.c.name == row.name).values(**values))
    return _workflow({**row._mapping, **values})


# Prepared once: building statements (and their cache keys) costs more than SQLite's work.
_INSERT_EXECUTION = insert(executions)
_INSERT_EVENT = insert(execution_events)
_GET_WORKFLOW = select(workflows).where(workflows.c.name == bindparam("name"))
_RUNNING_AMONG = select(executions.c.id).where(
    and_(executions.c.id.in_(bindparam("ids", expanding=True)), executions.c.status == "RUNNING")
)
_FINISH = (
    update(executions)
    .where(and_(executions.c.id == bindparam("eid"), executions.c.status == "RUNNING"))
    .values(
        status=bindparam("status"),
        output=bindparam("output"),
        error=bindparam("error"),
        cause=bindparam("cause"),
        stopped_at=bindparam("stopped_at"),
    )
)


def _event_row(execution_id: str, event: EventLike) -> dict[str, Any]:
    text = event.text if isinstance(event, PreparedEvent) else dumps(dict(event.details))
    return {
        "execution_id": execution_id,
        "seq": event.id,
        "type": event.type,
        "timestamp": event.timestamp,
        "state": clean_text(event.state),
        "details": text,
    }


def _workflow(row: Mapping[str, Any]) -> WorkflowRecord:
    return WorkflowRecord(
        name=row["name"],
        definition=row["definition"],
        mapping=_loads(row["mapping"]),
        description=row["description"],
        revision=row["revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _summary(row: Row[Any]) -> ExecutionSummary:
    return ExecutionSummary(
        id=row.id,
        workflow=row.workflow,
        name=row.name,
        revision=row.revision,
        status=_status(row.status),
        error=row.error,
        cause=row.cause,
        owner=row.owner,
        parent_id=row.parent_id,
        started_at=row.started_at,
        stopped_at=row.stopped_at,
    )
