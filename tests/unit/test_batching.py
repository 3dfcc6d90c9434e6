"""Batcher: adaptive batches, bounded queue, timeouts that keep their slot, per-item retry."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest

from mlgate.batching import Batcher
from mlgate.errors import MlgateError, Overloaded, PredictionTimeout
from mlgate.types import BatchingConfig
from tests.unit.fakes import SAFETY_S, FakePredict, settle, wait_until


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 3 * SAFETY_S))


@asynccontextmanager
async def started(
    predict: FakePredict, *, on_batch: Callable[[int], None] | None = None, **config: Any
) -> AsyncIterator[Batcher]:
    """A running batcher; on exit the gate opens and running work ends before the loop does."""
    batcher = Batcher(predict, BatchingConfig(**config), name="test", on_batch=on_batch)
    batcher.start()
    try:
        yield batcher
    finally:
        if predict.gate is not None:
            predict.gate.set()
        with suppress(AssertionError):
            await wait_until(lambda: batcher.in_flight == 0 and batcher.queue_depth == 0)
        await batcher.stop()


def submit(batcher: Batcher, value: Any, timeout: float = SAFETY_S) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(batcher.submit(value, timeout=timeout))


def test_a_lone_request_runs_at_once_as_a_batch_of_one() -> None:
    predict = FakePredict()
    sizes: list[int] = []

    async def scenario() -> None:
        async with started(predict, on_batch=sizes.append, max_wait_ms=0) as batcher:
            assert await batcher.submit(21, timeout=SAFETY_S) == 42
            assert batcher.in_flight == 0
            assert batcher.queue_depth == 0

    run(scenario())
    assert predict.batches == [[21]]
    assert sizes == [1]


def test_requests_queued_behind_a_busy_worker_form_bounded_batches_answered_in_order() -> None:
    gate = threading.Event()
    predict = FakePredict(gate=gate)
    sizes: list[int] = []

    async def scenario() -> list[Any]:
        async with started(predict, on_batch=sizes.append, max_batch_size=3, max_concurrency=1) as batcher:
            first = submit(batcher, 0)
            await predict.started(1)
            rest = [submit(batcher, v) for v in range(1, 8)]
            await wait_until(lambda: batcher.queue_depth == 7, "7 queued requests")
            assert predict.batches == [[0]]  # nothing else starts while the only slot is busy
            gate.set()
            return await asyncio.gather(first, *rest)

    assert run(scenario()) == [v * 2 for v in range(8)]
    assert predict.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]
    assert all(len(b) <= 3 for b in predict.batches)
    assert sizes == [1, 3, 3, 1]


def test_max_wait_lets_a_lone_request_wait_for_company() -> None:
    predict = FakePredict()

    async def scenario() -> list[Any]:
        async with started(predict, max_wait_ms=50, max_batch_size=8) as batcher:
            a = submit(batcher, 1)
            await asyncio.sleep(0.005)
            b = submit(batcher, 2)
            return await asyncio.gather(a, b)

    assert run(scenario()) == [2, 4]
    assert predict.batches == [[1, 2]]


def test_without_max_wait_the_first_request_does_not_wait_for_the_second() -> None:
    predict = FakePredict()

    async def scenario() -> list[Any]:
        async with started(predict, max_wait_ms=0, max_batch_size=8) as batcher:
            a = submit(batcher, 1)
            await asyncio.sleep(0.005)
            b = submit(batcher, 2)
            return await asyncio.gather(a, b)

    assert run(scenario()) == [2, 4]
    assert predict.batches == [[1], [2]]


def test_a_lone_request_with_max_wait_still_runs_once_the_wait_is_over() -> None:
    predict = FakePredict()

    async def scenario() -> float:
        async with started(predict, max_wait_ms=20, max_batch_size=8) as batcher:
            t0 = time.monotonic()
            assert await batcher.submit(5, timeout=SAFETY_S) == 10
            return time.monotonic() - t0

    waited = run(scenario())
    assert predict.batches == [[5]]
    assert waited >= 0.015  # it did wait for company (upper bound left to the safety net)


def test_a_full_queue_answers_overloaded_with_retry_after() -> None:
    gate = threading.Event()
    predict = FakePredict(gate=gate)

    async def scenario() -> list[Any]:
        async with started(predict, max_queue=2, max_concurrency=1) as batcher:
            running = submit(batcher, 1)
            await predict.started(1)
            queued = [submit(batcher, 2), submit(batcher, 3)]
            await wait_until(lambda: batcher.queue_depth == 2, "2 queued requests")
            with pytest.raises(Overloaded) as err:
                await batcher.submit(4, timeout=SAFETY_S)
            assert err.value.status == 503
            assert err.value.code == "overloaded"
            assert err.value.retry_after >= 1
            gate.set()
            results = await asyncio.gather(running, *queued)
            # Once the queue drains, requests are accepted again.
            results.append(await batcher.submit(5, timeout=SAFETY_S))
            return results

    assert run(scenario()) == [2, 4, 6, 10]
    assert 4 not in predict.values


def test_a_timed_out_batch_keeps_its_slot_until_it_really_ends() -> None:
    gate = threading.Event()
    predict = FakePredict(gate=gate)

    async def scenario() -> None:
        async with started(predict, max_concurrency=1) as batcher:
            with pytest.raises(PredictionTimeout) as err:
                await batcher.submit(1, timeout=0.05)
            assert err.value.status == 504
            await predict.started(1)
            assert batcher.in_flight == 1  # the 504 did not free the slot
            later = submit(batcher, 2)
            await wait_until(lambda: batcher.queue_depth == 1, "the later request to queue")
            await settle()
            assert predict.batches == [[1]]  # the later request waits for the stuck batch
            assert batcher.in_flight == 1
            assert not later.done()
            gate.set()
            assert await later == 4
            assert batcher.in_flight == 0

    run(scenario())
    assert predict.batches == [[1], [2]]
    assert predict.max_running == 1


def test_in_flight_drops_to_zero_when_the_timed_out_work_ends() -> None:
    gate = threading.Event()
    predict = FakePredict(gate=gate)

    async def scenario() -> None:
        async with started(predict, max_concurrency=1) as batcher:
            with pytest.raises(PredictionTimeout):
                await batcher.submit(1, timeout=0.02)
            await predict.started(1)
            await settle()
            assert batcher.in_flight == 1
            gate.set()
            await wait_until(lambda: batcher.in_flight == 0, "the slot to be released")

    run(scenario())


def test_a_request_that_times_out_before_dispatch_never_reaches_the_model() -> None:
    gate = threading.Event()
    predict = FakePredict(gate=gate)

    async def scenario() -> list[Any]:
        async with started(predict, max_concurrency=1, max_batch_size=8) as batcher:
            first = submit(batcher, 1)
            await predict.started(1)
            with pytest.raises(PredictionTimeout):
                await batcher.submit(2, timeout=0.02)
            last = submit(batcher, 3)
            await wait_until(lambda: batcher.queue_depth == 2, "the abandoned and the last request")
            gate.set()
            return await asyncio.gather(first, last)

    assert run(scenario()) == [2, 6]
    assert predict.batches == [[1], [3]]
    assert 2 not in predict.values


def failing_on(bad: Any) -> Callable[[list[Any]], list[Any]]:
    def predict(batch: list[Any]) -> list[Any]:
        if bad in batch:
            raise ValueError(f"cannot predict {bad!r}")
        return [x * 2 for x in batch]

    return predict


def test_a_failing_batch_is_retried_item_by_item_so_only_the_bad_item_fails() -> None:
    gate = threading.Event()
    predict = FakePredict(failing_on(-1), gate=gate)

    async def scenario() -> list[Any]:
        async with started(predict, max_concurrency=1, max_batch_size=8) as batcher:
            first = submit(batcher, 0)
            await predict.started(1)
            tasks = [submit(batcher, v) for v in (1, -1, 2)]
            await wait_until(lambda: batcher.queue_depth == 3, "3 queued requests")
            gate.set()
            return await asyncio.gather(first, *tasks, return_exceptions=True)

    first, one, bad, two = run(scenario())
    assert (first, one, two) == (0, 2, 4)
    assert isinstance(bad, ValueError)
    assert "cannot predict -1" in str(bad)
    assert predict.batches == [[0], [1, -1, 2], [1], [-1], [2]]


def test_a_lone_failing_item_gets_its_exception_without_a_retry() -> None:
    predict = FakePredict(failing_on(-1))

    async def scenario() -> None:
        async with started(predict) as batcher:
            with pytest.raises(ValueError, match="cannot predict -1"):
                await batcher.submit(-1, timeout=SAFETY_S)

    run(scenario())
    assert predict.batches == [[-1]]


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(lambda batch: [x * 2 for x in batch] + [999], id="one-too-many"),
        pytest.param(lambda batch: [x * 2 for x in batch][1:], id="one-too-few"),
    ],
)
def test_predict_returning_the_wrong_number_of_outputs_fails_with_mlgate_error(
    wrong: Callable[[list[Any]], list[Any]],
) -> None:
    gate = threading.Event()
    predict = FakePredict(wrong, gate=gate)

    async def scenario() -> list[Any]:
        async with started(predict, max_concurrency=1, max_batch_size=8) as batcher:
            lone = submit(batcher, 0)  # a batch of one
            await predict.started(1)
            tasks = [submit(batcher, v) for v in (1, 2, 3)]  # a batch of three, then one by one
            await wait_until(lambda: batcher.queue_depth == 3, "3 queued requests")
            gate.set()
            return await asyncio.gather(lone, *tasks, return_exceptions=True)

    results = run(scenario())
    assert predict.batches[:2] == [[0], [1, 2, 3]]
    for result in results:
        assert isinstance(result, MlgateError), result
        assert "outputs for" in result.message


def test_stop_fails_queued_requests_with_overloaded_and_lets_running_work_finish() -> None:
    gate = threading.Event()
    predict = FakePredict(gate=gate)

    async def scenario() -> None:
        batcher = Batcher(predict, BatchingConfig(max_concurrency=1), name="test")
        batcher.start()
        try:
            running = submit(batcher, 1)
            await predict.started(1)
            queued = [submit(batcher, 2), submit(batcher, 3)]
            await wait_until(lambda: batcher.queue_depth == 2, "2 queued requests")
            await batcher.stop()
            assert batcher.queue_depth == 0
            for task in queued:
                with pytest.raises(Overloaded) as err:
                    await task
                assert err.value.retry_after >= 1
            gate.set()
            assert await running == 2
        finally:
            gate.set()
            with suppress(AssertionError):
                await wait_until(lambda: batcher.in_flight == 0)
            await batcher.stop()

    run(scenario())
    assert predict.batches == [[1]]


def test_cancelled_callers_are_skipped_and_the_running_batch_keeps_its_slot() -> None:
    """A caller that goes away (client disconnect): queued, its item is dropped from the next
    batch; running, its batch still holds the slot until it ends; later callers are served."""
    gate = threading.Event()
    predict = FakePredict(gate=gate)

    async def scenario() -> None:
        async with started(predict, max_wait_ms=0, max_concurrency=1) as batcher:
            running = submit(batcher, 1)
            await wait_until(lambda: predict.running == 1)
            queued = submit(batcher, 2)
            await wait_until(lambda: batcher.queue_depth == 1)
            running.cancel()
            queued.cancel()
            await settle()
            assert batcher.in_flight == 1  # the cancelled caller did not free the slot early
            later = submit(batcher, 3)
            gate.set()
            assert await later == 6
            for task in (running, queued):
                with pytest.raises(asyncio.CancelledError):
                    await task

    run(scenario())
    assert predict.batches == [[1], [3]]  # the cancelled queued item never ran


def test_each_request_times_out_on_its_own_deadline_whatever_the_order() -> None:
    """One timer serves deadlines that arrive in order; a shorter timeout after a longer one
    (out of order) still fires on time, and answered requests never time out later."""
    gate = threading.Event()
    predict = FakePredict(gate=gate)

    async def scenario() -> None:
        async with started(predict, max_concurrency=1, max_batch_size=1) as batcher:
            blocker = submit(batcher, 1, timeout=SAFETY_S)  # holds the only slot
            await predict.started(1)
            started_at = time.monotonic()
            long = submit(batcher, 2, timeout=0.6)
            short = submit(batcher, 3, timeout=0.1)  # earlier deadline than the one before it
            with pytest.raises(PredictionTimeout):
                await short
            assert time.monotonic() - started_at < 0.5  # not held back behind the 0.6 s deadline
            assert not long.done()
            with pytest.raises(PredictionTimeout):
                await long
            assert time.monotonic() - started_at >= 0.55
            gate.set()
            assert await blocker == 2
            quick = await batcher.submit(4, timeout=0.05)  # answered well before its deadline
            await asyncio.sleep(0.1)  # its deadline passes: nothing happens to an answered request
            assert quick == 8

    run(scenario())
    assert predict.batches == [[1], [4]]  # the timed-out requests never reached the model
