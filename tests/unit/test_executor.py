"""BoundedExecutor: at most ``max_concurrency`` functions at once; slots are freed only when work ends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import pytest

from mlgate.executor import BoundedExecutor
from tests.unit.fakes import SAFETY_S, FakePredict, settle, wait_until


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 3 * SAFETY_S))


def job(fake: FakePredict, value: Any) -> Any:
    return lambda: fake([value])[0]


def test_never_more_than_max_concurrency_functions_run_at_once() -> None:
    gate = threading.Event()
    fake = FakePredict(gate=gate)

    async def scenario() -> list[Any]:
        executor = BoundedExecutor(2, name="test")
        try:
            tasks = [asyncio.create_task(executor.run(job(fake, v))) for v in range(6)]
            await fake.running_at_least(2)
            await settle()
            assert fake.running == 2
            assert len(fake.batches) == 2  # the other four wait for a slot, not for a thread
            assert executor.busy == 2
            gate.set()
            results = await asyncio.gather(*tasks)
            assert executor.busy == 0
            return results
        finally:
            gate.set()
            executor.shutdown()

    assert run(scenario()) == [v * 2 for v in range(6)]
    assert sorted(fake.values) == list(range(6))
    assert fake.max_running == 2


def test_a_cancelled_caller_does_not_release_the_slot_early() -> None:
    gate = threading.Event()
    fake = FakePredict(gate=gate)

    async def scenario() -> None:
        executor = BoundedExecutor(1, name="test")
        try:
            abandoned = asyncio.create_task(executor.run(job(fake, 1)))
            await fake.started(1)
            abandoned.cancel()
            with pytest.raises(asyncio.CancelledError):
                await abandoned
            assert executor.busy == 1  # the function is still running in its thread
            later = asyncio.create_task(executor.run(job(fake, 2)))
            await settle()
            assert fake.batches == [[1]]  # so the next one may not start yet
            assert not later.done()
            gate.set()
            assert await later == 4
            assert executor.busy == 0
        finally:
            gate.set()
            executor.shutdown()

    run(scenario())
    assert fake.batches == [[1], [2]]
    assert fake.max_running == 1


def test_a_caller_cancelled_while_waiting_for_a_slot_neither_runs_nor_leaks_it() -> None:
    gate = threading.Event()
    fake = FakePredict(gate=gate)

    async def scenario() -> None:
        executor = BoundedExecutor(1, name="test")
        try:
            first = asyncio.create_task(executor.run(job(fake, 1)))
            await fake.started(1)
            waiting = asyncio.create_task(executor.run(job(fake, 2)))
            await settle()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            gate.set()
            assert await first == 2
            assert executor.busy == 0
            assert await executor.run(job(fake, 3)) == 6  # the slot is usable again
        finally:
            gate.set()
            executor.shutdown()

    run(scenario())
    assert fake.batches == [[1], [3]]


def test_an_exception_reaches_the_caller_and_frees_the_slot() -> None:
    def boom() -> None:
        raise ValueError("boom")

    async def scenario() -> None:
        executor = BoundedExecutor(1, name="test")
        try:
            with pytest.raises(ValueError, match="boom"):
                await executor.run(boom)
            await wait_until(lambda: executor.busy == 0, "the slot to be released")
            assert await executor.run(lambda: "ok") == "ok"
        finally:
            executor.shutdown()

    run(scenario())


def test_a_slot_acquired_but_not_used_can_be_given_back() -> None:
    async def scenario() -> None:
        executor = BoundedExecutor(1, name="test")
        try:
            await executor.acquire()
            assert executor.busy == 1
            executor.release_unused()
            assert executor.busy == 0
            assert await executor.run(lambda: 7) == 7
        finally:
            executor.shutdown()

    run(scenario())
