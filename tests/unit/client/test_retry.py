"""The retry policy against scripted answers (httpx.MockTransport), deterministic: the random
source, the sleep and the clock are injected, so every wait is known exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mlgate.client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    ModelLoadError,
    Overloaded,
    QuotaExceeded,
    RetryBudget,
    RetryPolicy,
    Throttled,
    Timeout,
)
from mlgate.client._retry import Attempts

T = [20.0] * 60
THROTTLED = (429, {"message": "Too Many Requests"}, {"retry-after": "1", "retry-after-ms": "100"})
OK: tuple[int, Any, dict[str, str]] = (
    200,
    {"model_name": "temperatura", "model_version": 1, "outputs": 20.1},
    {},
)


class Fake:
    """A clock that only moves when slept on, and the record of every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


Step = tuple[int, Any, dict[str, str]] | Exception


class Script:
    """Answers requests in order (the last one repeats) and records them."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        status, body, headers = step
        return httpx.Response(status, json=body, headers=headers)


@pytest.fixture
def fake() -> Fake:
    return Fake()


def client(
    fake: Fake, script: Script, *, policy: RetryPolicy | None = None, budget: RetryBudget | None = None
) -> Client:
    return Client(
        "http://mlgate.test",
        api_key="mlg_test",
        retry=policy or RetryPolicy(random=lambda: 0.5),
        budget=budget or RetryBudget(clock=fake.clock),
        transport=httpx.MockTransport(script),
        sleep=fake.sleep,
        clock=fake.clock,
    )


@pytest.fixture
def make(fake: Fake) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def build(*steps: Step, **kw: Any) -> Client:
        c = client(fake, Script(*steps), **kw)
        made.append(c)
        return c

    yield build
    for c in made:
        c.close()


def script_of(c: Client) -> Script:
    transport = c._http._transport
    assert isinstance(transport, httpx.MockTransport)
    handler = transport.handler
    assert isinstance(handler, Script)
    return handler


def test_a_throttled_call_waits_the_precise_hint_then_succeeds(
    fake: Fake, make: Callable[..., Client]
) -> None:
    c = make(THROTTLED, THROTTLED, OK)
    assert c.predict("temperatura", {"temperaturas": T})["outputs"] == 20.1
    assert len(script_of(c).requests) == 3
    # 100 ms (not Retry-After's whole second), plus half of the 10 % jitter (random = 0.5)
    assert fake.sleeps == pytest.approx([0.105, 0.105])


def test_without_the_precise_hint_retry_after_is_honoured(fake: Fake, make: Callable[..., Client]) -> None:
    c = make(
        (429, {"error": "Too Many Requests"}, {"retry-after": "1"}),
        (200, {"statusCode": 200, "body": {}}, {}),
    )
    assert c.temperatura(T) == {}
    assert fake.sleeps == pytest.approx([1.05])


def test_an_exhausted_quota_raises_at_once_with_its_reset(fake: Fake, make: Callable[..., Client]) -> None:
    headers = {"retry-after": "86400", "retry-after-ms": "86399500", "x-quota-reset": "1750086400"}
    c = make((429, {"message": "Limit Exceeded"}, headers), OK)
    with pytest.raises(QuotaExceeded) as raised:
        c.predict("temperatura", {"temperaturas": T})
    assert len(script_of(c).requests) == 1 and fake.sleeps == []
    assert raised.value.reset_at == 1750086400.0
    assert raised.value.retry_after == pytest.approx(86399.5)


def test_the_shed_503_is_retried_a_model_that_cannot_load_is_not(
    fake: Fake, make: Callable[..., Client]
) -> None:
    shed = (503, {"error": {"code": "overloaded", "message": "server is at capacity"}}, {"retry-after": "1"})
    c = make(shed, OK)
    assert c.predict("m", [1])["outputs"] == 20.1
    assert fake.sleeps == pytest.approx([1.05])
    broken = make((503, {"error": {"code": "model_load_error", "message": "no"}}, {}), OK)
    with pytest.raises(ModelLoadError):
        broken.predict("m", [1])
    assert len(script_of(broken).requests) == 1


def test_attempts_are_capped(fake: Fake, make: Callable[..., Client]) -> None:
    c = make(THROTTLED, policy=RetryPolicy(max_attempts=3, random=lambda: 0.0))
    with pytest.raises(Throttled) as raised:
        c.predict("m", [1])
    assert len(script_of(c).requests) == 3
    assert fake.sleeps == pytest.approx([0.1, 0.1])
    assert raised.value.retry_after == pytest.approx(0.1)


def test_a_hint_too_long_to_wait_for_is_raised(fake: Fake, make: Callable[..., Client]) -> None:
    c = make((429, {"message": "Too Many Requests"}, {"retry-after": "600"}), OK)
    with pytest.raises(Throttled):
        c.predict("m", [1])
    assert fake.sleeps == []


def test_waits_stop_at_max_elapsed(fake: Fake, make: Callable[..., Client]) -> None:
    hint = (503, {"error": {"code": "overloaded", "message": "busy"}}, {"retry-after": "4"})
    c = make(hint, policy=RetryPolicy(max_attempts=100, max_elapsed=10.0, random=lambda: 0.0))
    with pytest.raises(Overloaded):
        c.predict("m", [1])
    assert fake.sleeps == [4.0, 4.0]  # a third wait would end past 10 s


def test_connect_errors_are_retried_for_any_call_with_backoff(
    fake: Fake, make: Callable[..., Client]
) -> None:
    refused = httpx.ConnectError("refused")
    c = make(refused, refused, refused, OK, policy=RetryPolicy(random=lambda: 1.0, base=0.1, cap=0.3))
    assert c.predict("m", [1])["outputs"] == 20.1  # a POST: nothing was sent, safe to retry
    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.3])  # base * 2**n, capped


def test_a_lost_answer_is_retried_only_when_the_call_may_run_twice(
    fake: Fake, make: Callable[..., Client]
) -> None:
    lost = httpx.ReadTimeout("no answer")
    post = make(lost, OK)
    with pytest.raises(Timeout) as raised:
        post.predict("m", [1])  # the model may have run: not sent again
    assert raised.value.code == "client_timeout" and raised.value.status is None
    assert len(script_of(post).requests) == 1
    get = make(lost, (200, {"models": [{"name": "m"}]}, {}))
    assert get.list_models() == [{"name": "m"}]
    assert len(script_of(get).requests) == 2
    unsafe = make(lost, OK, policy=RetryPolicy(retry_unsafe=True, random=lambda: 0.5))
    assert unsafe.predict("m", [1])["outputs"] == 20.1
    dropped = make(httpx.RemoteProtocolError("closed"), OK)
    with pytest.raises(ConnectionFailed):
        dropped.predict("m", [1])


def test_a_502_or_504_is_retried_for_idempotent_calls_only(fake: Fake, make: Callable[..., Client]) -> None:
    gateway: tuple[int, Any, dict[str, str]] = (
        502,
        {"error": {"code": "store_error", "message": "store down"}},
        {},
    )
    listing = make(gateway, (200, {"models": []}, {}))
    assert listing.list_models() == []
    post = make((504, {"error": {"code": "timeout", "message": "slow"}}, {}), OK)
    with pytest.raises(Timeout):
        post.predict("m", [1])
    assert len(script_of(post).requests) == 1


def test_the_budget_caps_retries_across_calls(fake: Fake, make: Callable[..., Client]) -> None:
    budget = RetryBudget(ratio=0.0, per_second=0.0, capacity=3, clock=fake.clock)
    c = make(THROTTLED, policy=RetryPolicy(max_attempts=100, random=lambda: 0.0), budget=budget)
    with pytest.raises(Throttled):
        c.predict("m", [1])
    assert len(script_of(c).requests) == 4  # the first try and the budget's 3 retries
    with pytest.raises(Throttled):
        c.predict("m", [1])
    assert len(script_of(c).requests) == 5  # spent: no retry at all


def test_the_budget_earns_per_request_and_per_second() -> None:
    now = [0.0]
    budget = RetryBudget(ratio=0.5, per_second=2.0, capacity=4, clock=lambda: now[0])
    assert [budget.withdraw() for _ in range(5)] == [True, True, True, True, False]
    budget.deposit()
    budget.deposit()  # two requests: one retry
    assert budget.withdraw() and not budget.withdraw()
    now[0] += 1.0  # one second: two retries
    assert budget.withdraw() and budget.withdraw() and not budget.withdraw()
    now[0] += 100.0  # never more than the capacity
    assert budget.balance == 4.0


def test_a_paced_sequential_client_never_runs_out_of_budget(fake: Fake) -> None:
    """60 calls on a 10/s key: each throttled once, each retry 0.1 s later — the default budget
    (20 % of requests + 10/s) refills faster than such retries spend it."""
    script = Script(*([OK] * 10 + [THROTTLED, OK] * 50))
    with client(fake, script) as c:
        for _ in range(60):
            c.predict("temperatura", {"temperaturas": T})
    assert len(script.requests) == 110
    assert len(fake.sleeps) == 50


@pytest.mark.parametrize("retry", range(1, 12))
def test_full_jitter_stays_within_its_bounds(retry: int) -> None:
    ceiling = min(5.0, 0.1 * 2 ** (retry - 1))
    assert RetryPolicy(random=lambda: 0.0).backoff(retry) == 0.0
    assert RetryPolicy(random=lambda: 0.999999).backoff(retry) == pytest.approx(ceiling, rel=1e-5)
    assert 0.0 <= RetryPolicy().backoff(retry) <= ceiling


def test_a_hint_is_never_shortened_and_jittered_by_at_most_ten_percent() -> None:
    assert RetryPolicy(random=lambda: 0.0).after_hint(0.1) == 0.1
    assert RetryPolicy(random=lambda: 1.0).after_hint(0.1) == pytest.approx(0.11)
    for _ in range(100):
        assert 0.1 <= RetryPolicy().after_hint(0.1) <= 0.11


def test_no_retry_policy_sends_once(fake: Fake) -> None:
    script = Script(THROTTLED, OK)
    with (
        Client(
            "http://mlgate.test", retry=None, transport=httpx.MockTransport(script), sleep=fake.sleep
        ) as c,
        pytest.raises(Throttled),
    ):
        c.predict("m", [1])
    assert len(script.requests) == 1


def test_attempts_alone() -> None:
    policy = RetryPolicy(max_attempts=2, random=lambda: 0.0)
    attempts = Attempts(policy, None, idempotent=False)
    assert attempts.after_exception(httpx.ConnectTimeout("slow connect")) == 0.0
    assert attempts.after_exception(httpx.ConnectTimeout("slow connect")) is None  # 2 attempts made


def test_the_async_client_retries_the_same_way(fake: Fake) -> None:
    script = Script(THROTTLED, (429, {"message": "Limit Exceeded"}, {"retry-after": "5"}), OK)

    async def run() -> None:
        async with AsyncClient(
            "http://mlgate.test",
            api_key="k",
            retry=RetryPolicy(random=lambda: 0.0),
            budget=RetryBudget(clock=fake.clock),
            transport=httpx.MockTransport(script),
            sleep=fake.asleep,
            clock=fake.clock,
        ) as c:
            with pytest.raises(QuotaExceeded):
                await c.predict("m", [1])
            assert (await c.predict("m", [1]))["outputs"] == 20.1

    asyncio.run(run())
    assert len(script.requests) == 3
    assert fake.sleeps == pytest.approx([0.1])
