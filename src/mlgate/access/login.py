"""Authentication work bounded before it is done: login throttling and the password-hash cap.

A password check costs argon2's ~0.15 CPU-s and 64 MB, so it is the one thing an
unauthenticated client can make the server do at will. Two bounds, both *before* the hash:

- **Throttle per client and per username.** Each attempt takes a token from the client's
  bucket (burst 10, one every 2 s) and the username's (burst 10, one every 10 s), in the
  shared limiter state (every process of this machine, or Redis/the database); while
  either is empty the answer is 429 with ``Retry-After`` — the right password included,
  and no hash is computed. A successful login gives its tokens back, so only failures
  count: a user who logs in often is never throttled, a guesser is, from any address.
- **A cap on concurrent hashes** per process (``MLGATE_AUTH__PASSWORD_HASHES``, default 1:
  one core of this 2-core machine), for logins and sign-ups alike; at most 16 wait per
  slot (~2.5 s of hashing), beyond that 503 + ``Retry-After: 1`` at once — so waiting logins
  never hold more than a quarter of the default 64 in-flight slots serving needs.

Example::

    guard = LoginGuard(limiter, hashes=1)
    await guard.admit(client="10.0.0.7", username="alice")   # Throttled (429) when over
    async with guard.hashing():                              # Overloaded (503) when crowded
        user = await asyncio.to_thread(users.authenticate, "alice", password)
    if user is not None:
        await guard.succeeded(client="10.0.0.7", username="alice")
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mlgate.access.limiter_storage import LimiterStorage
from mlgate.errors import Overloaded, Throttled

__all__ = ["CLIENT_BURST", "CLIENT_RATE", "USER_BURST", "USER_RATE", "WAITING_PER_SLOT", "LoginGuard"]

#: Failed logins a client address may make: a burst, then one every 2 s.
CLIENT_BURST, CLIENT_RATE = 10, 0.5
#: Failed logins on one username, from anywhere: a burst, then one every 10 s.
USER_BURST, USER_RATE = 10, 0.1
#: Requests that may wait per hashing slot before the next ones are refused at once.
WAITING_PER_SLOT = 16


class LoginGuard:
    """Throttles and caps password checks (see the module)."""

    def __init__(self, limiter: LimiterStorage, *, hashes: int = 1) -> None:
        self._limiter = limiter
        self._slots = asyncio.Semaphore(hashes)
        self._max_waiting = hashes * WAITING_PER_SLOT
        self._waiting = 0

    async def admit(self, *, client: str, username: str | None) -> None:
        """Take one attempt from the client's and the username's budgets; :class:`Throttled`
        (nothing taken from the second) when either is spent. ``username`` None (an API-key
        sign-in): the client's budget only — no name a client can type reaches it."""
        now = time.time()
        for key, rate, burst in self._buckets(client, username):
            decision = await self._limiter.take(key, rate=rate, burst=burst, now=now)
            if not decision.allowed:
                raise Throttled("Too many failed logins", retry_after=decision.retry_after)

    async def succeeded(self, *, client: str, username: str | None) -> None:
        """A right password: its attempt is given back (only failures count)."""
        for key, rate, burst in self._buckets(client, username):
            await self._limiter.refund(key, None, rate=rate, burst=burst, window_end=0.0, cost=1)

    @asynccontextmanager
    async def hashing(self) -> AsyncIterator[None]:
        """Hold one of the process's hashing slots; :class:`Overloaded` if too many wait."""
        if self._slots.locked() and self._waiting >= self._max_waiting:
            raise Overloaded("too many password checks at once: retry shortly", retry_after=1.0)
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    @staticmethod
    def _buckets(client: str, username: str | None) -> tuple[tuple[str, float, int], ...]:
        buckets: tuple[tuple[str, float, int], ...] = (
            (f"login:client:{client[:64]}", CLIENT_RATE, CLIENT_BURST),
        )
        if username is None:
            return buckets
        # Usernames hashed: any length or character an attacker types becomes a fixed-size key.
        user = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return (*buckets, (f"login:user:{user}", USER_RATE, USER_BURST))
