"""LoginGuard: throttle before the hash (successes free), a capped number of hashes at once."""

from __future__ import annotations

import asyncio

import pytest

from mlgate.access.limiter_memory import MemoryLimiterStorage
from mlgate.access.login import CLIENT_BURST, USER_BURST, WAITING_PER_SLOT, LoginGuard
from mlgate.errors import Overloaded, Throttled


def test_failures_are_throttled_per_client_and_per_username_successes_are_free() -> None:
    async def main() -> None:
        guard = LoginGuard(MemoryLimiterStorage())
        for _ in range(50):  # successes give their attempt back
            await guard.admit(client="1.1.1.1", username="ana")
            await guard.succeeded(client="1.1.1.1", username="ana")
        for _ in range(CLIENT_BURST):
            await guard.admit(client="1.1.1.1", username="ana")
        with pytest.raises(Throttled) as exc:
            await guard.admit(client="1.1.1.1", username="someone-else")  # the client is spent
        assert exc.value.retry_after > 0
        for i in range(USER_BURST):
            await guard.admit(client=f"2.2.2.{i}", username="bob")
        with pytest.raises(Throttled):
            await guard.admit(client="3.3.3.3", username="bob")  # the username is spent, from anywhere

    asyncio.run(main())


def test_hashes_beyond_the_slots_wait_and_beyond_the_waiting_room_are_refused() -> None:
    async def main() -> None:
        guard = LoginGuard(MemoryLimiterStorage(), hashes=1)
        release = asyncio.Event()
        running = 0
        peak = 0

        async def check() -> str:
            nonlocal running, peak
            try:
                async with guard.hashing():
                    running += 1
                    peak = max(peak, running)
                    await release.wait()
                    running -= 1
                return "hashed"
            except Overloaded:
                return "refused"

        tasks = [asyncio.create_task(check()) for _ in range(1 + WAITING_PER_SLOT + 5)]
        await asyncio.sleep(0.01)
        release.set()
        outcomes = await asyncio.gather(*tasks)
        assert outcomes.count("refused") == 5 and peak == 1

    asyncio.run(main())
