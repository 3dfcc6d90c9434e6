"""One counter for "who may call what changed": the access caches' validity, cheap at any scale.

The gateway caches, per process, each key's row (verification), each key's plan
attachments and the plans. A cache entry that expired on its own timer would have to be
re-read once per ttl *per active key* — with 5,000 keys in rotation that is most of a
request's cost (bench/findings.md, "Gateway at scale"). Instead, every change that can
revoke or re-plan a call (a key disabled, expired or rotated, an attachment, a plan
changed or deleted, a user disabled, enabled or re-roled) bumps
``registry_state.access_generation`` in the same transaction, and a cache entry stays
valid while the generation it was read under is the current one. Each process reads the
counter at most once per ``ttl`` (5 s): one read per ttl, whatever the number of keys, and
a change made elsewhere is still seen within the ttl. A change made through this process
is seen at once (:meth:`AccessGeneration.changed`).

Example::

    generation = AccessGeneration(engine)
    with write_tx(engine) as conn:
        conn.execute(...)                 # disable a key
        generation.bump(conn)
    generation.changed()                  # this process: at once
    generation.current()                  # others: within ttl seconds
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlgate.db.tables import registry_state

__all__ = ["AccessGeneration"]


class AccessGeneration:
    """The database's access generation, re-read at most once per ``ttl`` seconds."""

    def __init__(
        self, engine: Engine, *, ttl: float = 5.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._engine = engine
        self._ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._value = -1
        self._read_at = float("-inf")
        self._local = 0  # bumped by changed(): makes entries read before a local change stale at once

    @property
    def ttl(self) -> float:
        return self._ttl

    def current(self) -> tuple[int, int]:
        """The generation cache entries are checked against: ``(database's, this process's)``."""
        now = self._monotonic()
        if now - self._read_at < self._ttl:
            return self._value, self._local
        with self._engine.connect() as conn:
            value = int(
                conn.scalar(sa.select(registry_state.c.access_generation).where(registry_state.c.id == 1))
                or 0
            )
        with self._lock:
            self._value, self._read_at = value, now
            return value, self._local

    def bump(self, conn: sa.Connection) -> None:
        """Record a change, inside the transaction that makes it."""
        conn.execute(
            sa.update(registry_state)
            .where(registry_state.c.id == 1)
            .values(access_generation=registry_state.c.access_generation + 1)
        )

    def changed(self) -> None:
        """A change was committed through this process: every entry cached before it is stale."""
        with self._lock:
            self._local += 1
            self._read_at = float("-inf")
