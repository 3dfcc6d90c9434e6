"""Tenants are isolated (issue 13, invariant 5): one execution's bad event fails that execution
alone; what is accepted can be stored; payloads are capped; history has retention; names and
errors never reveal another tenant's executions; a workflow reads only the buckets its mapping
allows. Run against SQLite and PostgreSQL (PostgreSQL refuses NUL in text columns)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from mlgate.errors import Conflict, InvalidInput, PayloadTooLarge
from mlgate.repository import Repository
from mlgate.settings import WorkflowSettings
from mlgate.store import FileArtifactStore
from mlgate.workflows.actions import Actions, DataBuckets
from mlgate.workflows.engine import TaskCall
from mlgate.workflows.mapping import parse_mapping
from mlgate.workflows.service import UNSTORABLE_CAUSE, WorkflowService
from mlgate.workflows.store import EventLike, Finish, WorkflowStore
from tests.unit.fakes import SAFETY_S

#: a Fail state whose cause comes from the input (AWS's CausePath): NUL reaches a text column
FAIL_FROM_INPUT = {
    "StartAt": "F",
    "States": {"F": {"Type": "Fail", "ErrorPath": "$.error", "CausePath": "$.cause"}},
}
#: a Pass state that nests its input 3 levels deeper: deep-but-accepted input grows past storable
NEST = {
    "StartAt": "N",
    "States": {"N": {"Type": "Pass", "Parameters": {"a": {"b": {"c.$": "$"}}}, "End": True}},
}
#: a task that returns what it is asked to (a payload over the cap, here)
GROW = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "mlgate:python:grow", "End": True}}}
#: a state machine that catches everything: States.DataLimitExceeded is still terminal
GROW_CAUGHT = {
    "StartAt": "T",
    "States": {
        "T": {
            "Type": "Task",
            "Resource": "mlgate:python:grow",
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
            "End": True,
        },
        "Caught": {"Type": "Succeed"},
    },
}
GATED = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "mlgate:python:gated", "End": True}}}
ECHO = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "mlgate:python:echo", "End": True}}}
CAP = 4096


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(params=["sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository]:
    if request.param == "sqlite":
        repository = Repository.open(f"sqlite:///{tmp_path / 'wf.db'}")
        yield repository
        repository.close()
        return
    from tests.services import postgres_schema

    with postgres_schema("iso") as (url, _):
        repository = Repository.open(url)
        yield repository
        repository.close()


class Harness:
    def __init__(self, store: WorkflowStore) -> None:
        self.store = store
        self.gate = asyncio.Event()

    def service(self, **kwargs: Any) -> WorkflowService:
        async def gated(x: Any) -> Any:
            await self.gate.wait()
            return x

        functions = {"echo": lambda x: x, "gated": gated, "grow": lambda n: "x" * int(n)}
        kwargs.setdefault("flush_interval_s", 0.02)
        kwargs.setdefault("heartbeat_s", 3600)
        kwargs.setdefault("settings", WorkflowSettings(max_payload_bytes=CAP))
        actions = Actions(dataplane=None, buckets=None, functions=functions)
        return WorkflowService(self.store, actions=actions, **kwargs)


def scenario(
    store: WorkflowStore, body: Callable[[WorkflowService, Harness], Awaitable[Any]], **kwargs: Any
) -> Any:
    async def main() -> Any:
        h = Harness(store)
        service = h.service(**kwargs)
        for name, doc in {
            "fail": FAIL_FROM_INPUT,
            "nest": NEST,
            "grow": GROW,
            "grow-caught": GROW_CAUGHT,
            "gated": GATED,
            "echo": ECHO,
        }.items():
            service.deploy_sync(name, doc)
        await service.start()
        try:
            return await asyncio.wait_for(body(service, h), 3 * SAFETY_S)
        finally:
            h.gate.set()
            await service.stop()

    return asyncio.run(main())


def assert_full_history(events: Sequence[EventLike], last: str = "ExecutionSucceeded") -> None:
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "ExecutionStarted" and events[-1].type == last


# -- one execution's bad event fails that execution alone ---------------------------------------


def test_a_poisoned_execution_fails_alone_and_the_others_keep_their_history(repo: Repository) -> None:
    """NUL in an error/cause (refused by PostgreSQL) and a value nested past what JSON can hold,
    while other executions run and write in the same batches."""
    store = WorkflowStore(repo.engine)

    async def body(service: WorkflowService, h: Harness) -> None:
        others = [
            await service.start_execution("gated", {"i": i}, mode="async", owner="bob") for i in range(4)
        ]
        poisoned = await asyncio.gather(
            service.start_execution("fail", {"error": "Bad\x00", "cause": "nul \x00 here"}, owner="eve"),
            service.start_execution("nest", nested(249), owner="eve"),
        )
        h.gate.set()
        done = [await service.start_execution("echo", {"after": True}, owner="bob")]
        for other in others:
            run = service._runs.get(other.id)
            if run is not None and run.task is not None:
                done.append(await run.task)
        nul, deep = poisoned
        assert (nul.status, nul.error, nul.cause) == ("FAILED", "Bad\ufffd", "nul \ufffd here")
        assert (deep.status, deep.error) == ("FAILED", "States.Runtime")
        assert deep.cause is not None and deep.cause.startswith(UNSTORABLE_CAUSE)
        assert_full_history(await service.history(deep.id), "ExecutionFailed")
        for record in done:
            assert record.status == "SUCCEEDED", record
            assert_full_history(await service.history(record.id))
        assert [e.status for e in await service.list_executions(status="RUNNING")] == []

    scenario(store, body)


class RefusingStore(WorkflowStore):
    """The database refuses every write that holds an event of ``victim``."""

    victim = ""

    def record(self, events: Any = (), finishes: Sequence[Finish] = ()) -> list[bool]:
        pending = list(events)
        ids = {eid for eid, _ in pending} | {f.execution_id for f in finishes if f.events}
        if self.victim in ids:
            raise sa_exc.DataError("INSERT …", {}, ValueError("refused"))
        return super().record(pending, finishes)


def test_a_refused_batch_is_retried_per_execution(repo: Repository) -> None:
    store = RefusingStore(repo.engine)

    async def body(service: WorkflowService, h: Harness) -> None:
        others = [
            await service.start_execution("gated", {"i": i}, mode="async", owner="bob") for i in range(3)
        ]
        victim = await service.start_execution("gated", {"v": 1}, mode="async", owner="eve")
        store.victim = victim.id
        h.gate.set()
        ended = [await service._runs[r.id].task for r in [*others, victim] if r.id in service._runs]  # type: ignore[misc]
        by_id = {r.id: r for r in ended}
        for other in others:
            record = by_id.get(other.id) or await service.describe(other.id)
            assert record.status == "SUCCEEDED"
            assert_full_history(await service.history(other.id))
        failed = await service.describe(victim.id)
        assert (failed.status, failed.error) == ("FAILED", "States.Runtime")
        assert failed.cause == f"{UNSTORABLE_CAUSE}: the database refused its data (DataError)"

    scenario(store, body)


# -- what is accepted can be stored; payloads are capped ----------------------------------------


def test_inputs_that_cannot_be_stored_or_are_too_large_are_refused_before_anything_is_stored(
    repo: Repository,
) -> None:
    store = WorkflowStore(repo.engine)

    async def body(service: WorkflowService, h: Harness) -> None:
        with pytest.raises(InvalidInput, match="cannot be stored"):
            await service.start_execution("echo", nested(251), owner="eve")
        with pytest.raises(PayloadTooLarge, match=f"limit is {CAP}") as too_large:
            await service.start_execution("echo", {"x": "é" * CAP}, owner="eve")
        assert too_large.value.status == 413
        assert await service.list_executions() == []
        ok = await service.start_execution("echo", {"x": "y" * (CAP - 100)}, owner="eve")
        assert ok.status == "SUCCEEDED"

    scenario(store, body)


def test_a_state_over_the_cap_fails_with_data_limit_exceeded_even_when_caught(repo: Repository) -> None:
    store = WorkflowStore(repo.engine)

    async def body(service: WorkflowService, h: Harness) -> None:
        for workflow in ("grow", "grow-caught"):
            done = await service.start_execution(workflow, CAP + 1, owner="eve")
            assert (done.status, done.error) == ("FAILED", "States.DataLimitExceeded"), done
            assert done.cause is not None and f"{CAP}-byte limit" in done.cause
            events = await service.history(done.id)
            assert_full_history(events, "ExecutionFailed")
            assert max(len(str(e.details)) for e in events) < CAP
        small = await service.start_execution("grow", CAP // 2, owner="eve")
        assert small.status == "SUCCEEDED"

    scenario(store, body)


# -- retention ------------------------------------------------------------------------------------


def test_purge_by_count_and_age_never_touches_running(repo: Repository) -> None:
    store = WorkflowStore(repo.engine)

    async def body(service: WorkflowService, h: Harness) -> None:
        running = await service.start_execution("gated", {}, mode="async", owner="bob")
        ended = [await service.start_execution("echo", {"i": i}, owner="bob") for i in range(5)]
        assert await service.purge("echo", keep=3) == 2
        kept = {e.id for e in await service.list_executions(workflow="echo")}
        assert kept == {e.id for e in ended[2:]}
        assert await service.history(ended[2].id)
        assert await service.purge("gated", keep=0) == 0  # RUNNING: never
        future = ended[-1].started_at + timedelta(seconds=1)
        assert await service.purge("echo", before=future) == 3
        assert await service.list_executions(workflow="echo") == []
        assert [e.id for e in await service.list_executions()] == [running.id]

    scenario(store, body)


def test_retention_runs_in_the_background(repo: Repository) -> None:
    store = WorkflowStore(repo.engine)
    settings = WorkflowSettings(
        max_payload_bytes=CAP, history_max_executions_per_workflow=2, purge_interval_s=0.1
    )

    async def body(service: WorkflowService, h: Harness) -> None:
        for i in range(5):
            await service.start_execution("echo", {"i": i}, owner="bob")
        deadline = asyncio.get_running_loop().time() + SAFETY_S
        while len(await service.list_executions(workflow="echo")) > 2:
            assert asyncio.get_running_loop().time() < deadline, "retention did not run"
            await asyncio.sleep(0.05)

    scenario(store, body, settings=settings)


# -- names and errors never reveal another tenant's executions -----------------------------------


def test_execution_names_are_per_tenant_and_never_collide(repo: Repository) -> None:
    store = WorkflowStore(repo.engine)

    async def body(service: WorkflowService, h: Harness) -> None:
        mine = await service.start_execution("echo", {"secret": 1}, name="job-1", owner="ana")
        theirs = await service.start_execution("echo", {}, name="job-1", owner="eve")  # no collision
        assert theirs.id != mine.id
        with pytest.raises(Conflict) as own:
            await service.start_execution("echo", {}, name="job-1", owner="ana")
        assert own.value.details == {"executionId": mine.id}
        await service.start_execution("echo", {}, name="job-2")
        with pytest.raises(Conflict):  # no owner is one owner too
            await service.start_execution("echo", {}, name="job-2")

    scenario(store, body)


# -- a workflow reads only the buckets its mapping allows ---------------------------------------


def test_store_get_reads_only_the_buckets_the_mapping_lists(tmp_path: Path) -> None:
    files = FileArtifactStore(tmp_path / "store")
    for bucket in ("fotos", "fotos-2026", "privado"):
        folder = tmp_path / "store" / "buckets" / bucket
        folder.mkdir(parents=True)
        (folder / "k.txt").write_bytes(b"hola")
    actions = Actions(dataplane=None, buckets=DataBuckets(files))
    arn = "arn:aws:lambda:us-east-1:1:function:get"
    mapping = parse_mapping(
        {"buckets": ["fotos-*"], "resources": {arn: {"action": "store.get", "bucket": "fotos"}}}
    )
    open_mapping = parse_mapping({"resources": {arn: {"action": "store.get"}}})

    def get(resource: str, data: Any, m: Any = mapping) -> Any:
        async def main() -> Any:
            try:
                return await actions.run(TaskCall(resource, data, "S", "e", {}), m)
            except Exception as exc:  # TaskFailure
                return exc

        return asyncio.run(main())

    for resource in (arn, "mlgate:store:get"):
        assert get(resource, {"s3_bucket": "fotos-2026", "s3_key": "k.txt"})["size"] == 4
        denied = get(resource, {"s3_bucket": "privado", "s3_key": "k.txt"})
        assert getattr(denied, "error", None) == "Store.AccessDenied", denied
        denied = get(resource, {"bucket": "privado", "key": "k.txt"})
        assert getattr(denied, "error", None) == "Store.AccessDenied", denied
    assert get(arn, {"s3_key": "k.txt"})["s3_bucket"] == "fotos"  # the entry's fixed bucket
    assert get(arn, {"s3_bucket": "privado", "s3_key": "k.txt"}, open_mapping)["size"] == 4
    with pytest.raises(InvalidInput):
        parse_mapping({"buckets": "fotos", "resources": {}})
