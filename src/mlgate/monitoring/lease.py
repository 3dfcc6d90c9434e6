"""Leases in the registry database: exactly one holder at a time across processes and replicas.

A holder calls :meth:`Lease.acquire` at least every ``ttl_s / 3``: it takes a free or expired
lease, or renews its own, in one conditional write, and answers whether it holds the lease now.
A holder that dies stops renewing, and another process takes over once ``ttl_s`` has passed.

Example::

    lease = Lease(engine, "alerts", holder=process_id(), ttl_s=30)
    if lease.acquire():
        evaluate()
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from mlgate.db.tables import monitor_leases

__all__ = ["Lease", "process_id"]

_INSTANCE = uuid.uuid4().hex[:8]


def process_id() -> str:
    """``host:pid:instance`` — unique per process, also across a fork (the pid differs)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{_INSTANCE}"


class Lease:
    """One named lease held by this process (see the module's docstring)."""

    def __init__(self, engine: Engine, name: str, *, holder: str | None = None, ttl_s: float = 30.0) -> None:
        self.engine = engine
        self.name = name
        self.holder = holder or process_id()
        self.ttl_s = ttl_s

    def acquire(self, now: float | None = None) -> bool:
        """Take or renew the lease; True if this process holds it until ``now + ttl_s``."""
        now = time.time() if now is None else now
        t = monitor_leases
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(t)
                .where(t.c.name == self.name, (t.c.holder == self.holder) | (t.c.expires_at < now))
                .values(holder=self.holder, expires_at=now + self.ttl_s)
            ).rowcount
            if taken:
                return True
            exists = conn.execute(select(t.c.holder).where(t.c.name == self.name)).first()
        if exists is not None:
            return False
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(t).values(name=self.name, holder=self.holder, expires_at=now + self.ttl_s)
                )
        except IntegrityError:  # another process inserted it first
            return False
        return True

    def release(self) -> None:
        """Give the lease up at once (on stop), if this process holds it."""
        t = monitor_leases
        with self.engine.begin() as conn:
            conn.execute(
                update(t).where(t.c.name == self.name, t.c.holder == self.holder).values(expires_at=0.0)
            )

    def holder_now(self, now: float | None = None) -> str | None:
        """Who holds the lease (None: nobody, or it expired)."""
        now = time.time() if now is None else now
        t = monitor_leases
        with self.engine.connect() as conn:
            row = conn.execute(select(t.c.holder, t.c.expires_at).where(t.c.name == self.name)).first()
        return row.holder if row is not None and row.expires_at >= now else None
