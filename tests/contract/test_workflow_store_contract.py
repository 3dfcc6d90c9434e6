"""The WorkflowStore contract, run against SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from mlgate.errors import Conflict, InvalidInput, NotFound
from mlgate.repository import Repository
from mlgate.workflows.store import Finish, WorkflowStore

HELLO = {"StartAt": "Hi", "States": {"Hi": {"Type": "Pass", "Result": "hi", "End": True}}}
BYE = {"StartAt": "Bye", "States": {"Bye": {"Type": "Succeed"}}}
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    timestamp: datetime = T0
    state: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def repo(database_url: str) -> Iterator[Repository]:
    repository = Repository.open(database_url)
    yield repository
    repository.close()


@pytest.fixture
def store(repo: Repository) -> WorkflowStore:
    return WorkflowStore(repo.engine)


@pytest.fixture
def hello(store: WorkflowStore) -> WorkflowStore:
    store.deploy("hello", HELLO, description="says hi")
    return store


def transactions(repo: Repository) -> list[int]:
    """Counts COMMITs on the engine (to check that writes are batched)."""
    commits: list[int] = []
    sa.event.listen(repo.engine, "commit", lambda _conn: commits.append(1))
    return commits


# -- workflows --------------------------------------------------------------------------------


def test_deploy_creates_then_bumps_revision_only_on_change(store: WorkflowStore) -> None:
    first = store.deploy("hello", HELLO, mapping={"resources": {}}, description="v1")
    assert (first.name, first.revision, first.description) == ("hello", 1, "v1")
    assert first.document() == HELLO
    assert first.mapping == {"resources": {}}
    assert first.created_at.tzinfo is not None
    again = store.deploy("hello", HELLO, mapping={"resources": {}}, description="v1")
    assert again.revision == 1  # same content: nothing changes
    changed = store.deploy("hello", BYE, mapping={"resources": {}})
    assert changed.revision == 2
    assert changed.description == "v1"  # None keeps the description
    assert changed.created_at == first.created_at
    assert changed.updated_at >= first.updated_at
    got = store.get("hello")
    assert (got.revision, got.document(), got.description) == (2, BYE, "v1")
    assert store.deploy("hello", BYE, mapping=None).revision == 3  # dropping the mapping is a change
    assert store.get("hello").mapping is None


def test_deploy_keeps_definition_text_as_given(store: WorkflowStore) -> None:
    text = '{"StartAt": "Bye",\n  "States": {"Bye": {"Type": "Succeed"}}}'
    assert store.deploy("text", text).definition == text
    assert store.get("text").document() == BYE


def test_deploy_validates(store: WorkflowStore) -> None:
    bad = {"StartAt": "Nope", "States": {"A": {"Type": "Pass", "Next": "Ghost"}}}
    with pytest.raises(InvalidInput) as err:
        store.deploy("bad", bad)
    assert len(err.value.details["errors"]) >= 2  # every problem at once
    for name in ("Upper", "", "x" * 65, "1abc", "a b"):
        with pytest.raises(InvalidInput):
            store.deploy(name, HELLO)
    assert store.list_workflows() == []


def test_get_and_list(store: WorkflowStore) -> None:
    with pytest.raises(NotFound):
        store.get("ghost")
    store.deploy("zeta", HELLO)
    store.deploy("alpha", BYE)
    assert [w.name for w in store.list_workflows()] == ["alpha", "zeta"]


def test_concurrent_first_deploys_make_one_workflow(store: WorkflowStore) -> None:
    errors: list[BaseException] = []

    def deploy() -> None:
        try:
            store.deploy("race", HELLO)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deploy) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get("race").revision == 1


# -- executions -------------------------------------------------------------------------------


def test_start_describe_finish(hello: WorkflowStore) -> None:
    data = {"s3_key": "moto.jpg", "ñ": "ü", "n": [1, 2.5, None, True]}
    run = hello.start_execution(workflow="hello", revision=1, input=data, owner="ana", started_at=T0)
    assert len(run.id) == 32 and run.name == run.id
    assert (run.status, run.input, run.owner, run.started_at) == ("RUNNING", data, "ana", T0)
    got = hello.describe(run.id)
    assert (got.status, got.input, got.output, got.stopped_at) == ("RUNNING", data, None, None)
    stop = T0 + timedelta(seconds=2)
    assert hello.finish(run.id, "SUCCEEDED", output={"ok": [1, "é"]}, stopped_at=stop)
    done = hello.describe(run.id)
    assert (done.status, done.output, done.error, done.stopped_at) == (
        "SUCCEEDED",
        {"ok": [1, "é"]},
        None,
        stop,
    )
    # finished exactly once: a second finish (a late stop, a sweep) changes nothing
    assert not hello.finish(run.id, "ABORTED", error="x", cause="y")
    assert hello.describe(run.id).status == "SUCCEEDED"
    with pytest.raises(InvalidInput):
        hello.finish(run.id, "RUNNING")
    with pytest.raises(NotFound):
        hello.describe("0" * 32)


def test_execution_names_are_unique_per_workflow(hello: WorkflowStore) -> None:
    hello.deploy("other", BYE)
    first = hello.start_execution(workflow="hello", revision=1, input={}, name="nightly-1")
    with pytest.raises(Conflict) as err:
        hello.start_execution(workflow="hello", revision=1, input={}, name="nightly-1")
    assert err.value.details["executionId"] == first.id
    assert hello.start_execution(workflow="other", revision=1, input={}, name="nightly-1").name == "nightly-1"
    for bad in ("", "x" * 81, "a b", "a/b", "ñ"):
        with pytest.raises(InvalidInput):
            hello.start_execution(workflow="hello", revision=1, input={}, name=bad)
    with pytest.raises(NotFound):
        hello.start_execution(workflow="ghost", revision=1, input={})


def test_failure_fields_are_kept_and_clipped(hello: WorkflowStore) -> None:
    run = hello.start_execution(workflow="hello", revision=1, input={})
    hello.finish(run.id, "FAILED", error="E" * 1000, cause="c" * 100_000)
    got = hello.describe(run.id)
    assert got.status == "FAILED" and got.output is None
    assert got.error is not None and len(got.error) == 256
    assert got.cause is not None and len(got.cause) == 32_768


def test_record_batches_events_and_finishes_of_many_executions(
    repo: Repository, hello: WorkflowStore
) -> None:
    a = hello.start_execution(workflow="hello", revision=1, input={"i": 1})
    b = hello.start_execution(workflow="hello", revision=1, input={"i": 2})
    commits = transactions(repo)
    events = [(a.id, Event(i, "A")) for i in range(1, 40)] + [(b.id, Event(i, "B")) for i in range(1, 4)]
    final = Finish(a.id, "SUCCEEDED", output={"done": True}, events=[Event(40, "ExecutionSucceeded")])
    assert hello.record(events, [final]) == [True]
    assert len(commits) == 1
    assert [e.id for e in hello.history(a.id)] == list(range(1, 41))
    assert hello.describe(a.id).status == "SUCCEEDED"
    assert hello.describe(b.id).status == "RUNNING"
    assert hello.record() == []


def test_events_of_ended_executions_are_dropped(hello: WorkflowStore) -> None:
    run = hello.start_execution(workflow="hello", revision=1, input={})
    hello.append_events(run.id, [Event(1, "ExecutionStarted")])
    changed = hello.end_running(
        [run.id], status="ABORTED", error="", cause="stopped", event_type="ExecutionAborted"
    )
    assert changed == [run.id]
    # The runner's late flush reuses id 2: it is dropped, not a primary-key collision.
    hello.append_events(run.id, [Event(2, "TaskStateEntered"), Event(3, "TaskScheduled")])
    assert not hello.finish(run.id, "SUCCEEDED", output={}, events=[Event(4, "ExecutionSucceeded")])
    history = hello.history(run.id)
    assert [(e.id, e.type) for e in history] == [(1, "ExecutionStarted"), (2, "ExecutionAborted")]
    assert history[1].details == {"error": "", "cause": "stopped"}
    assert hello.describe(run.id).status == "ABORTED"


def test_history_order_details_and_paging(hello: WorkflowStore) -> None:
    run = hello.start_execution(workflow="hello", revision=1, input={})
    details = {"input": {"image_data": "QUJD" * 1000, "ñ": [1, 2]}, "scope": "Map[3]"}
    events = [Event(i, f"T{i}", T0 + timedelta(milliseconds=i), "state é", details) for i in (3, 1, 2)]
    hello.append_events(run.id, events)
    history = hello.history(run.id)
    assert [e.id for e in history] == [1, 2, 3]
    assert history[0].details == details
    assert history[0].state == "state é"
    assert history[0].timestamp == T0 + timedelta(milliseconds=1)
    assert [e.id for e in hello.history(run.id, after=1)] == [2, 3]
    assert [e.id for e in hello.history(run.id, after=1, limit=1)] == [2]
    with pytest.raises(NotFound):
        hello.history("f" * 32)


def test_list_executions_filters_newest_first(hello: WorkflowStore) -> None:
    hello.deploy("other", BYE)
    ids = []
    for i, (workflow, owner) in enumerate(
        [("hello", "ana"), ("other", "ana"), ("hello", "beto"), ("hello", "ana")]
    ):
        run = hello.start_execution(
            workflow=workflow,
            revision=1,
            input={"big": "x" * 10},
            owner=owner,
            started_at=T0 + timedelta(seconds=i),
        )
        ids.append(run.id)
    hello.finish(ids[0], "FAILED", error="E", cause="C")
    assert [e.id for e in hello.list_executions()] == ids[::-1]
    assert [e.id for e in hello.list_executions(workflow="hello")] == [ids[3], ids[2], ids[0]]
    assert [e.id for e in hello.list_executions(owner="ana")] == [ids[3], ids[1], ids[0]]
    assert [e.id for e in hello.list_executions(status="FAILED")] == [ids[0]]
    assert [e.id for e in hello.list_executions(workflow="hello", status="RUNNING", owner="ana")] == [ids[3]]
    assert [e.id for e in hello.list_executions(limit=2)] == [ids[3], ids[2]]
    summary = hello.list_executions(status="FAILED")[0]
    assert (summary.error, summary.cause, summary.owner) == ("E", "C", "ana")
    assert not hasattr(summary, "input")  # listings never load payloads
    with pytest.raises(InvalidInput):
        hello.list_executions(status="DONE")
    with pytest.raises(InvalidInput):
        hello.list_executions(limit=0)


# -- liveness ---------------------------------------------------------------------------------


def test_heartbeat_running_and_end_running(hello: WorkflowStore) -> None:
    mine = hello.start_execution(workflow="hello", revision=1, input={}, runner="h:1:a", started_at=T0)
    gone = hello.start_execution(workflow="hello", revision=1, input={}, runner="h:2:b", started_at=T0)
    done = hello.start_execution(workflow="hello", revision=1, input={}, runner="h:1:a", started_at=T0)
    hello.finish(done.id, "SUCCEEDED", output={})
    running = {r.id: r for r in hello.running()}
    assert set(running) == {mine.id, gone.id}
    assert running[gone.id].runner == "h:2:b"
    assert running[gone.id].heartbeat_at == T0
    later = T0 + timedelta(minutes=5)
    assert hello.heartbeat([mine.id, done.id], now=later) == {mine.id}
    assert {r.id: r.heartbeat_at for r in hello.running()}[mine.id] == later
    hello.append_events(
        gone.id, [Event(1, "ExecutionStarted"), Event(2, "TaskStateEntered", state="retrieve")]
    )
    changed = hello.end_running(
        [gone.id, done.id],
        status="FAILED",
        error="States.Runtime",
        cause="interrupted by server restart",
        event_type="ExecutionFailed",
        now=later,
    )
    assert changed == [gone.id]
    failed = hello.describe(gone.id)
    assert (failed.status, failed.error, failed.cause, failed.stopped_at) == (
        "FAILED",
        "States.Runtime",
        "interrupted by server restart",
        later,
    )
    assert [e.type for e in hello.history(gone.id)] == [
        "ExecutionStarted",
        "TaskStateEntered",
        "ExecutionFailed",
    ]
    assert hello.heartbeat([gone.id]) == set()
    assert hello.heartbeat([]) == set()
    assert hello.end_running([], status="FAILED", error="", cause="", event_type="ExecutionFailed") == []


def test_concurrent_writers_keep_every_event(hello: WorkflowStore) -> None:
    runs = [hello.start_execution(workflow="hello", revision=1, input={"i": i}) for i in range(4)]
    errors: list[BaseException] = []

    def write(execution_id: str) -> None:
        try:
            for start in range(1, 50, 7):
                hello.append_events(execution_id, [Event(i, "E") for i in range(start, start + 7)])
            hello.finish(execution_id, "SUCCEEDED", output={"id": execution_id})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(r.id,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for r in runs:
        assert [e.id for e in hello.history(r.id)] == list(range(1, 50))
        assert hello.describe(r.id).output == {"id": r.id}
