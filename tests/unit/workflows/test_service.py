"""WorkflowService: sync and async executions, stop, crash recovery, shutdown, nesting, batching, metrics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mlgate.errors import ConfigurationError, Conflict, InvalidInput, NotFound, Overloaded
from mlgate.repository import Repository
from mlgate.telemetry.metrics import Metrics
from mlgate.types import BundledWorkflow
from mlgate.workflows.actions import Actions
from mlgate.workflows.service import INTERRUPTED_CAUSE, INTERRUPTED_ERROR, WorkflowService, runner_id
from mlgate.workflows.store import WorkflowStore
from tests.unit.fakes import SAFETY_S, wait_until


def task(resource: str, **extra: Any) -> dict[str, Any]:
    return {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": resource, "End": True, **extra}}}


ECHO = task("mlgate:python:echo")
BOOM = task("mlgate:python:boom")
GATED = task("mlgate:python:gated")
WAIT = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": True}}}
PARENT = task("mlgate:workflow:start", Parameters={"workflow": "echo", "input.$": "$"})
PARENT_OF_WAIT = task("mlgate:workflow:start", Parameters={"workflow": "wait", "input.$": "$"})
SELF = task("mlgate:workflow:start", Parameters={"workflow": "self", "input.$": "$"})


class Env:
    def __init__(self, tmp: Path) -> None:
        self.repo = Repository.open(f"sqlite:///{tmp / 'wf.db'}")
        self.store = WorkflowStore(self.repo.engine)
        self.gate = asyncio.Event()
        self.metrics = Metrics()

    def functions(self) -> dict[str, Callable[[Any], Any]]:
        async def gated(x: Any) -> Any:
            await self.gate.wait()
            return {"released": x}

        def boom(_: Any) -> Any:
            raise ValueError("kaboom")

        return {"echo": lambda x: x, "boom": boom, "gated": gated}

    def service(self, **kwargs: Any) -> WorkflowService:
        kwargs.setdefault("flush_interval_s", 0.02)
        kwargs.setdefault("heartbeat_s", 3600)
        actions = Actions(dataplane=None, buckets=None, functions=self.functions())
        return WorkflowService(self.store, actions=actions, metrics=self.metrics, **kwargs)

    def deploy_all(self, service: WorkflowService) -> None:
        for name, doc in {
            "echo": ECHO,
            "boom": BOOM,
            "gated": GATED,
            "wait": WAIT,
            "parent": PARENT,
            "parent-of-wait": PARENT_OF_WAIT,
            "self": SELF,
        }.items():
            service.deploy_sync(name, doc)

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.repo.close()


def scenario(env: Env, body: Callable[[WorkflowService], Awaitable[Any]], **kwargs: Any) -> Any:
    async def main() -> Any:
        env.gate = asyncio.Event()
        service = env.service(**kwargs)
        env.deploy_all(service)
        await service.start()
        try:
            return await asyncio.wait_for(body(service), 3 * SAFETY_S)
        finally:
            env.gate.set()
            await service.stop()

    return asyncio.run(main())


def types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


# -- sync and async -------------------------------------------------------------------------


def test_sync_start_returns_the_ended_execution(env: Env) -> None:
    async def body(service: WorkflowService) -> None:
        data = {"s3_key": "moto.jpg", "n": [1, 2]}
        done = await service.start_execution("echo", data, owner="ana")
        assert (done.status, done.output, done.error, done.owner) == ("SUCCEEDED", data, None, "ana")
        assert done.stopped_at is not None and done.stopped_at >= done.started_at
        assert await service.describe(done.id) == done
        events = await service.history(done.id)
        assert types(events) == [
            "ExecutionStarted",
            "TaskStateEntered",
            "TaskScheduled",
            "TaskStarted",
            "TaskSucceeded",
            "TaskStateExited",
            "ExecutionSucceeded",
        ]
        assert [e.id for e in events] == list(range(1, 8))
        failed = await service.start_execution("boom", {})
        assert (failed.status, failed.error, failed.cause, failed.output) == (
            "FAILED",
            "ValueError",
            "kaboom",
            None,
        )
        assert types(await service.history(failed.id))[-1] == "ExecutionFailed"
        named = await service.start_execution("echo", {}, name="run-1")
        assert named.name == "run-1"
        with pytest.raises(Conflict):
            await service.start_execution("echo", {}, name="run-1")
        with pytest.raises(NotFound):
            await service.start_execution("ghost", {})
        with pytest.raises(InvalidInput):
            await service.start_execution("echo", {}, mode="later")  # type: ignore[arg-type]

    scenario(env, body)
    assert env.sample("mlgate_workflow_executions_total", workflow="echo", status="SUCCEEDED", error="") == 2
    assert (
        env.sample("mlgate_workflow_executions_total", workflow="boom", status="FAILED", error="ValueError")
        == 1
    )
    assert (
        env.sample("mlgate_workflow_execution_duration_seconds_count", workflow="echo", status="SUCCEEDED")
        == 2
    )
    assert env.sample("mlgate_workflow_executions_running") == 0


def test_async_start_returns_at_once_and_history_is_flushed_while_running(env: Env) -> None:
    async def body(service: WorkflowService) -> None:
        started = await service.start_execution("gated", {"x": 1}, mode="async", owner="beto")
        assert started.status == "RUNNING"
        assert service.running == 1
        assert env.sample("mlgate_workflow_executions_running") == 1
        assert (await service.describe(started.id)).status == "RUNNING"

        async def flushed() -> bool:
            return "TaskStarted" in types(await service.history(started.id))

        for _ in range(200):  # the writer flushes every 20 ms without being asked
            if await flushed():
                break
            await asyncio.sleep(0.01)
        assert await flushed()
        env.gate.set()
        await wait_until(lambda: service.running == 0, "the execution to end")
        done = await service.describe(started.id)
        assert (done.status, done.output) == ("SUCCEEDED", {"released": {"x": 1}})
        assert types(await service.history(started.id))[-1] == "ExecutionSucceeded"

    scenario(env, body)


def test_a_sync_caller_going_away_does_not_abort_the_execution(env: Env) -> None:
    async def body(service: WorkflowService) -> None:
        waiter = asyncio.ensure_future(service.start_execution("gated", {}))
        await wait_until(lambda: service.running == 1, "the execution to start")
        waiter.cancel()  # the HTTP client hung up
        with pytest.raises(asyncio.CancelledError):
            await waiter
        env.gate.set()
        await wait_until(lambda: service.running == 0, "the execution to end")
        [row] = await service.list_executions(workflow="gated")
        assert row.status == "SUCCEEDED"

    scenario(env, body)


# -- stop -------------------------------------------------------------------------------------


def test_stop_aborts_with_history(env: Env) -> None:
    async def body(service: WorkflowService) -> None:
        run = await service.start_execution("wait", {}, mode="async")
        await wait_until(lambda: service.running == 1, "start")
        await asyncio.sleep(0.05)
        stopped = await service.stop_execution(run.id, error="Ops.Cancelled", cause="no longer needed")
        assert (stopped.status, stopped.error, stopped.cause) == (
            "ABORTED",
            "Ops.Cancelled",
            "no longer needed",
        )
        assert stopped.stopped_at is not None
        events = await service.history(run.id)
        assert types(events)[:2] == ["ExecutionStarted", "WaitStateEntered"]
        assert events[-1].type == "ExecutionAborted"
        assert events[-1].details["cause"] == "no longer needed"
        with pytest.raises(Conflict):
            await service.stop_execution(run.id)
        with pytest.raises(NotFound):
            await service.stop_execution("0" * 32)
        # stopped right after an async start, before it ran a step
        early = await service.start_execution("wait", {}, mode="async")
        assert (await service.stop_execution(early.id)).status == "ABORTED"

    scenario(env, body)
    assert (
        env.sample(
            "mlgate_workflow_executions_total", workflow="wait", status="ABORTED", error="Ops.Cancelled"
        )
        == 1
    )


def test_stop_from_another_process(env: Env) -> None:
    async def body(runner: WorkflowService) -> None:
        other = env.service()  # another server process on the same database
        run = await runner.start_execution("wait", {}, mode="async")
        stopped = await other.stop_execution(run.id, cause="from elsewhere")
        assert stopped.status == "ABORTED"
        await runner.beat()  # its heartbeat notices and cancels the local run
        await wait_until(lambda: runner.running == 0, "the local run to be cancelled")
        done = await runner.describe(run.id)
        assert (done.status, done.cause) == ("ABORTED", "from elsewhere")
        assert types(await runner.history(run.id))[-1] == "ExecutionAborted"

    scenario(env, body)


def test_stopping_a_parent_stops_its_sync_child(env: Env) -> None:
    async def body(service: WorkflowService) -> None:
        parent = await service.start_execution("parent-of-wait", {}, mode="async")
        await wait_until(lambda: service.running == 2, "the child to start")
        [child] = await service.list_executions(workflow="wait")
        assert child.parent_id == parent.id
        assert (await service.stop_execution(parent.id)).status == "ABORTED"
        await wait_until(lambda: service.running == 0, "both to end")
        assert (await service.describe(child.id)).status == "ABORTED"

    scenario(env, body)


# -- nesting ----------------------------------------------------------------------------------


def test_child_workflows_share_the_owner_and_nest_to_a_limit(env: Env) -> None:
    async def body(service: WorkflowService) -> None:
        done = await service.start_execution("parent", {"a": 1}, owner="ana")
        assert (done.status, done.output) == ("SUCCEEDED", {"a": 1})
        [child] = await service.list_executions(workflow="echo")
        assert (child.parent_id, child.owner, child.status) == (done.id, "ana", "SUCCEEDED")
        deep = await service.start_execution("self", {})
        assert (deep.status, deep.error) == ("FAILED", "Mlgate.MaxDepthExceeded")
        assert len(await service.list_executions(workflow="self")) == 4  # the top one and 3 nested
        missing = WorkflowService(env.store, actions=Actions(dataplane=None, buckets=None))
        missing.deploy_sync(
            "orphan", task("mlgate:workflow:start", Parameters={"workflow": "nope", "input": {}})
        )
        orphan = await missing.start_execution("orphan", {})
        assert (orphan.status, orphan.error) == ("FAILED", "Mlgate.NoSuchWorkflow")

    scenario(env, body, max_depth=3)


# -- crash recovery and shutdown --------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_start_marks_executions_a_crash_left_running_failed(env: Env) -> None:
    env.store.deploy("echo", ECHO)
    host = runner_id().split(":")[0]
    now = datetime.now(UTC)
    crashed = env.store.start_execution(
        workflow="echo", revision=1, input={}, runner=f"{host}:{dead_pid()}:old", started_at=now
    )
    env.store.append_events(crashed.id, [])
    silent = env.store.start_execution(
        workflow="echo", revision=1, input={}, runner="elsewhere:1:x", started_at=now - timedelta(hours=1)
    )
    alive = env.store.start_execution(
        workflow="echo", revision=1, input={}, runner="elsewhere:2:y", started_at=now
    )

    async def body(service: WorkflowService) -> None:
        for gone in (crashed, silent):
            got = await service.describe(gone.id)
            assert (got.status, got.error, got.cause) == ("FAILED", INTERRUPTED_ERROR, INTERRUPTED_CAUSE)
            assert types(await service.history(gone.id)) == ["ExecutionFailed"]
        # another machine's execution with a fresh heartbeat is left alone
        assert (await service.describe(alive.id)).status == "RUNNING"

    scenario(env, body, lease_s=60)
    assert INTERRUPTED_CAUSE == "interrupted by server restart"


def test_shutdown_waits_then_aborts(env: Env) -> None:
    async def main() -> None:
        service = env.service(shutdown_grace_s=0.2)
        env.deploy_all(service)
        await service.start()
        quick = await service.start_execution("echo", {}, mode="async")
        slow = await service.start_execution("wait", {}, mode="async")
        await service.stop()
        assert (await service.describe(quick.id)).status == "SUCCEEDED"
        ended = await service.describe(slow.id)
        assert (ended.status, ended.error) == ("ABORTED", "Mlgate.Shutdown")
        assert types(await service.history(slow.id))[-1] == "ExecutionAborted"
        with pytest.raises(Overloaded):
            await service.start_execution("echo", {})

    asyncio.run(main())


def test_running_executions_are_capped(env: Env) -> None:
    async def body(service: WorkflowService) -> None:
        await service.start_execution("gated", {}, mode="async")
        await service.start_execution("gated", {}, mode="async")
        with pytest.raises(Overloaded):
            await service.start_execution("gated", {}, mode="async")

    scenario(env, body, max_running=2)


# -- persistence is batched -------------------------------------------------------------------


def test_a_sync_execution_costs_two_transactions(env: Env) -> None:
    commits: list[int] = []

    async def body(service: WorkflowService) -> None:
        await service.start_execution("echo", {})  # compile cache warm-up
        sa.event.listen(env.repo.engine, "commit", lambda _c: commits.append(1))
        done = await service.start_execution("echo", {"n": 1})
        assert len(await service.history(done.id)) == 7

    scenario(env, body, flush_interval_s=60)
    assert len(commits) == 2  # the start row; the events with the end


# -- deploy -----------------------------------------------------------------------------------


def test_deploy_checks_resources_can_run_here(env: Env) -> None:
    service = env.service()
    with pytest.raises(InvalidInput) as err:
        service.deploy_sync("x", task("arn:aws:lambda:us-east-1:1:function:f"))
    assert "not in the mapping file" in err.value.details["errors"][0]
    with pytest.raises(InvalidInput):
        service.deploy_sync("x", ECHO, mapping={"resources": {"f": {"action": "teleport"}}})
    with pytest.raises(InvalidInput):
        service.deploy_sync("x", {"StartAt": "Nope", "States": {}})
    mapped = service.deploy_sync(
        "x",
        task("arn:aws:lambda:us-east-1:1:function:f"),
        mapping={"resources": {"f": {"action": "python", "function": "echo"}}},
        description="mapped",
    )
    assert (mapped.revision, mapped.description) == (1, "mapped")


def test_deploy_bundled_once_and_never_over_a_redeploy(env: Env, tmp_path: Path) -> None:
    definition = tmp_path / "echo.asl.json"
    definition.write_text(
        '{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "mlgate:python:echo", "End": true}}}'
    )
    service = env.service()
    bundled = [BundledWorkflow("shipped", definition, None, "shipped one")]
    assert [w.revision for w in service.deploy_bundled(bundled)] == [1]
    assert service.deploy_bundled(bundled) == []
    service.deploy_sync("shipped", WAIT)
    assert service.deploy_bundled(bundled) == []
    assert env.store.get("shipped").document() == WAIT  # the admin's redeploy stays
    broken = tmp_path / "broken.asl.json"
    broken.write_text('{"StartAt": "T", "States": {}}')
    with pytest.raises(ConfigurationError):
        service.deploy_bundled([BundledWorkflow("broken", broken)])
