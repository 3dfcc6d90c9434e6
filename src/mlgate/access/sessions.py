"""Signed-in dashboard sessions: a random cookie value, kept server-side as its sha256 only.

A session names its caller (an API key's id, or a user's name) and expires after the
configured life (``MLGATE_AUTH__DASHBOARD_SESSION_MINUTES``, default 8 h). Every use checks
that the caller may still call: a disabled, expired or rotated key, or a disabled, deleted or
replaced user ends its sessions' access at once, like their keys and tokens.

Resolving a session is cheap: the checked caller is cached in this process while the access
generation (:mod:`mlgate.access.generation`: every disable, rotation or role change bumps it)
is the one it was read under, and for at most :data:`CACHE_TTL_S` — so a logout made through
another process is seen within that time, one made through this process at once. Expiry is
checked against the clock on every use.

Example::

    sessions = SessionStore(engine, keys=keys, users=users, life_s=8 * 3600)
    cookie, session = sessions.create(kind="key", caller_id=key.id, username=key.owner, role=key.role)
    sessions.resolve(cookie)          # the Caller, or None (unknown, expired, revoked)
    sessions.delete(cookie)           # logout
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlgate.access.generation import AccessGeneration
from mlgate.access.keys import KeyStore
from mlgate.access.users import UserStore
from mlgate.db import write_tx
from mlgate.db.tables import dashboard_sessions
from mlgate.errors import NotFound
from mlgate.types import Caller

__all__ = [
    "CACHE_TTL_S",
    "COOKIE_NAME",
    "DASHBOARD_HEADER",
    "MAX_PER_CALLER",
    "Session",
    "SessionStore",
    "dashboard_cookie",
    "hash_session",
]

#: The session cookie's name.
COOKIE_NAME = "mlgate_session"
#: How long a resolved session is trusted in this process without reading the database again.
CACHE_TTL_S = 5.0
#: Live sessions one caller (a key, a user) may hold; signing in again ends the oldest.
MAX_PER_CALLER = 20
_CACHE_MAX = 4096
_VALUE_MAX = 128  # a cookie value longer than any we issue is not even hashed


def hash_session(value: str) -> str:
    """The stored form of a cookie value: its sha256, hex."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """One signed-in session (its cookie value is never kept)."""

    id_hash: str
    kind: Literal["key", "user"]
    caller_id: str
    username: str | None
    role: str
    created_at: float
    expires_at: float

    def public(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.caller_id,
            "username": self.username,
            "role": self.role,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }


@dataclass(slots=True)
class _Entry:
    session: Session
    caller: Caller
    generation: tuple[int, int]
    checked_at: float


class SessionStore:
    """Dashboard sessions in the registry database (table ``dashboard_sessions``)."""

    def __init__(
        self,
        engine: Engine,
        *,
        keys: KeyStore,
        users: UserStore,
        life_s: float = 8 * 3600.0,
        generation: AccessGeneration | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._users = users
        self.life_s = float(life_s)
        self._access = generation if generation is not None else AccessGeneration(engine)
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, _Entry] = OrderedDict()

    # -- sign-in and sign-out -------------------------------------------------------------

    def create(
        self, *, kind: Literal["key", "user"], caller_id: str, username: str | None, role: str
    ) -> tuple[str, Session]:
        """A new session: ``(cookie value, session)``. Expired sessions are swept on the way."""
        value = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(hash_session(value), kind, caller_id, username, role, now, now + self.life_s)
        with write_tx(self._engine) as conn:
            conn.execute(dashboard_sessions.delete().where(dashboard_sessions.c.expires_at <= now))
            conn.execute(
                dashboard_sessions.insert().values(
                    id_hash=session.id_hash,
                    kind=kind,
                    caller_id=caller_id,
                    username=username,
                    role=role,
                    created_at=session.created_at,
                    expires_at=session.expires_at,
                )
            )
            # At most MAX_PER_CALLER live sessions per caller: the oldest end (a key signing in
            # in a loop must not grow the table).
            t = dashboard_sessions
            mine = (t.c.kind == kind, t.c.caller_id == caller_id)
            keep = (
                sa.select(t.c.id_hash)
                .where(*mine)
                .order_by(t.c.created_at.desc(), t.c.id_hash)
                .limit(MAX_PER_CALLER)
                .scalar_subquery()
            )
            ended = [
                row.id_hash
                for row in conn.execute(sa.select(t.c.id_hash).where(*mine, t.c.id_hash.not_in(keep)))
            ]
            if ended:
                conn.execute(t.delete().where(t.c.id_hash.in_(ended)))
        if ended:
            with self._lock:
                for digest in ended:
                    self._cache.pop(digest, None)
        return value, session

    def delete(self, value: str) -> bool:
        """Sign out: the session is gone (True if there was one)."""
        if not _plausible(value):
            return False
        digest = hash_session(value)
        with self._lock:
            self._cache.pop(digest, None)
        with write_tx(self._engine) as conn:
            deleted = conn.execute(dashboard_sessions.delete().where(dashboard_sessions.c.id_hash == digest))
        return bool(deleted.rowcount)

    # -- use -------------------------------------------------------------------------------

    def resolve(self, value: str) -> Caller | None:
        """The caller of a live session whose caller may still call, else None."""
        found = self.lookup(value)
        return None if found is None else found[1]

    def cached(self, value: str) -> tuple[bool, Caller | None]:
        """Without I/O (but the access generation's read once per its ttl): ``(True, caller or
        None)`` when the answer is known, ``(False, None)`` when :meth:`resolve` must read."""
        if not _plausible(value):
            return True, None
        digest = hash_session(value)
        with self._lock:
            entry = self._cache.get(digest)
        if entry is None or self._monotonic() - entry.checked_at >= CACHE_TTL_S:
            return False, None
        if entry.generation != self._access.current():
            return False, None
        return True, (entry.caller if entry.session.expires_at > self._clock() else None)

    async def resolve_async(self, value: str) -> Caller | None:
        """:meth:`resolve` for the event loop: a recent hit answers at once, a miss reads in a thread."""
        known, caller = self.cached(value)
        if known:
            return caller
        return await asyncio.to_thread(self.resolve, value)

    def lookup(self, value: str) -> tuple[Session, Caller] | None:
        """``(session, caller)`` for a live session (see :meth:`resolve`)."""
        if not _plausible(value):
            return None
        digest = hash_session(value)
        now = self._clock()
        generation = self._access.current()
        tick = self._monotonic()
        with self._lock:
            entry = self._cache.get(digest)
            if entry is not None:
                if entry.generation == generation and tick - entry.checked_at < CACHE_TTL_S:
                    self._cache.move_to_end(digest)
                    return (entry.session, entry.caller) if entry.session.expires_at > now else None
                del self._cache[digest]
        session = self._read(digest)
        if session is None or session.expires_at <= now:
            return None
        caller = self._check(session)
        if caller is None:
            return None
        with self._lock:
            self._cache[digest] = _Entry(session, caller, generation, tick)
            if len(self._cache) > _CACHE_MAX:
                self._cache.popitem(last=False)
        return session, caller

    def _read(self, digest: str) -> Session | None:
        with self._engine.connect() as conn:
            query = sa.select(dashboard_sessions).where(dashboard_sessions.c.id_hash == digest)
            row = conn.execute(query).first()
        if row is None or row.kind not in ("key", "user"):
            return None
        return Session(
            row.id_hash, row.kind, row.caller_id, row.username, row.role, row.created_at, row.expires_at
        )

    def _check(self, session: Session) -> Caller | None:
        """The session's caller as it is now (its current role), or None if it may no longer call."""
        if session.kind == "key":
            try:
                key = self._keys.get(session.caller_id)
            except NotFound:
                return None
            if not key.active_at(datetime.now(UTC)):
                return None
            if key.owner and self._users.get_active(key.owner) is None:  # a disabled owner revokes it
                return None
            return Caller(kind="key", id=key.id, username=key.owner, role=key.role)
        user = self._users.get_active(session.caller_id)
        if user is None or (session.username is not None and user.username != session.username):
            return None
        return Caller(kind="user", id=user.username, username=user.username, role=user.role)


def _plausible(value: str) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _VALUE_MAX and value.isascii()


#: The header the dashboard sends with every API call: a custom header cannot be sent
#: cross-site without a CORS preflight, so a session cookie alone never authorizes a request.
DASHBOARD_HEADER = b"x-mlgate-dashboard"
_COOKIE_PREFIX = COOKIE_NAME.encode() + b"="


def dashboard_cookie(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> str | None:
    """The session cookie's value when a request may use it as its credential, else None.

    Only the read-only API calls the dashboard makes qualify: ``GET`` (or ``HEAD``) on
    ``/v1/...`` with ``X-Mlgate-Dashboard: 1`` (the caller checks that no other credential
    was sent). ``headers``: lower-case names, as the edge parses them.
    """
    if method not in ("GET", "HEAD") or not path.startswith("/v1/"):
        return None
    marked = False
    value: str | None = None
    for name, raw in headers:
        if name == DASHBOARD_HEADER:
            marked = raw.strip() == b"1"
        elif name == b"cookie" and value is None:
            for part in raw.split(b";"):
                part = part.strip()
                if part.startswith(_COOKIE_PREFIX):
                    value = part[len(_COOKIE_PREFIX) :].decode("latin-1")
                    break
    return value if marked and value else None
