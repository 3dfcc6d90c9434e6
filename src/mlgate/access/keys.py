"""API keys: random, shown once, stored only as a sha256 hash, compared in constant time.

A key looks like ``mlg_<prefix>_<secret>``; the 8-hex ``prefix`` is its public id (shown
in listings and logs), the secret has 256 bits of entropy, so a fast hash is enough
(no password stretching needed for random keys). Secrets are never logged or stored:
:class:`NewKey` hides its secret from ``repr`` and the verification cache is keyed by
a BLAKE2b of the secret under a random per-process salt.

Keys can be disabled, given an expiry, and rotated (a new key with the same name, role,
owner, plan attachments and *lineage* — the first key of the chain, whose budget an
ownerless key keeps —; the old one disabled at once or after a grace period). A key whose
owner is disabled does not verify: disabling a user revokes every key they have,
in this process at once (:meth:`KeyStore.invalidate_owner`) and in others within the cache
ttl.

Example::

    keys = KeyStore(engine)
    new = keys.create(name="ci", owner="alice")
    print(new.secret)                      # the only time the secret is visible
    keys.verify_cached(new.secret)         # the hot path: at most one DB read per ttl
    rotated = keys.rotate(new.key.id, grace_seconds=3600)
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import os
import secrets
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from mlgate.access.generation import AccessGeneration
from mlgate.access.usage import user_subject
from mlgate.db.engine import write_tx
from mlgate.db.tables import api_keys, key_plans, users
from mlgate.errors import Conflict, InvalidInput, NotFound

__all__ = ["MAX_GRACE_SECONDS", "ROLES", "ApiKey", "KeyStore", "NewKey", "hash_key"]

ROLES = ("admin", "user")
#: Longest grace period :meth:`KeyStore.rotate` accepts (30 days).
MAX_GRACE_SECONDS = 30 * 24 * 3600
#: Entries of the in-process verification cache (least recently used evicted first): ~200 bytes
#: each, so 65,536 keys in rotation cost ~13 MB and never a database read per request.
_CACHE_MAX = 65_536
_NAME_MAX = 128
_OWNER_MAX = 64  # users.username
#: pg_advisory_xact_lock key serialising the bootstrap admin key across starting replicas
_BOOTSTRAP_LOCK = 0x6D6C_6761_7465_0001  # "mlgate" + 1


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    role: str
    owner: str | None
    created_at: datetime
    expires_at: datetime | None
    disabled: bool
    #: the id of the first key of its rotation chain (itself for a key never rotated)
    lineage: str = ""
    #: False when the key's owner is disabled (read by verification)
    owner_active: bool = True

    def active_at(self, moment: datetime) -> bool:
        """Whether the key is usable at ``moment`` (not disabled, not expired, owner active)."""
        return (
            not self.disabled and self.owner_active and (self.expires_at is None or self.expires_at > moment)
        )

    @property
    def budget(self) -> str:
        """Whose budget the key spends: its owner's (``user:<name>``, shared with the owner's other
        keys and tokens) or, for an ownerless key, its lineage's (so rotation mints nothing)."""
        return user_subject(self.owner) if self.owner else f"key:{self.lineage or self.id}"


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly created key: ``secret`` is shown once and never stored (nor in ``repr``)."""

    key: ApiKey
    secret: str = field(repr=False)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse(secret: str) -> str | None:
    parts = secret.split("_", 2)  # the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != "mlg" or len(parts[1]) != 8:
        return None
    return parts[1]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _CacheEntry:
    key: ApiKey
    generation: tuple[int, int]  # the access generation it was read under


class KeyStore:
    """Keys in the registry database, with a small in-process cache for the hot path.

    ``clock`` (aware UTC ``datetime``) decides expiry; ``monotonic`` times the access
    generation's reads (:mod:`mlgate.access.generation`). Both are injectable for tests.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        generation: AccessGeneration | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._access = generation if generation is not None else AccessGeneration(engine, monotonic=monotonic)
        self._cache: OrderedDict[bytes, _CacheEntry] = OrderedDict()
        self._salt = os.urandom(32)
        self._cache_lock = threading.Lock()
        # Bumped by every invalidation so a lookup that raced a write does not cache stale state.
        self._generation = 0

    # -- creation -------------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        role: str = "user",
        owner: str | None = None,
        expires_at: datetime | None = None,
    ) -> NewKey:
        """Create a random key; its secret is in the result and nowhere else."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        _check_text(name, "key name", _NAME_MAX)
        if owner is not None:
            _check_text(owner, "owner", _OWNER_MAX)
        _check_aware(expires_at)
        with write_tx(self._engine) as conn:
            return _insert(
                conn, None, name=name, role=role, owner=owner, expires_at=expires_at, now=self._clock()
            )

    def ensure_admin(self, *, configured: str | None) -> NewKey | None:
        """Create the bootstrap admin key on first start; return it only when newly created.

        ``configured`` installs that secret (hashed) instead of a random one. Runs in one
        write transaction so two starting workers cannot both create one: SQLite's is exclusive;
        on PostgreSQL (READ COMMITTED) a transaction-scoped advisory lock serialises replicas
        starting together on an empty database, and a unique violation still left (another
        writer without the lock) means the key is there: nothing created.
        """
        try:
            return self._ensure_admin(configured)
        except sa_exc.IntegrityError:
            if configured is None:
                raise
            return None

    def _ensure_admin(self, configured: str | None) -> NewKey | None:
        with write_tx(self._engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _BOOTSTRAP_LOCK})
            if configured is not None:
                where = api_keys.c.key_hash == hash_key(configured)
            else:
                where = api_keys.c.role == "admin"
            if conn.execute(sa.select(api_keys.c.id).where(where)).first() is not None:
                return None
            return _insert(
                conn,
                configured,
                name="bootstrap-admin",
                role="admin",
                owner=None,
                expires_at=None,
                now=self._clock(),
            )

    # -- reading --------------------------------------------------------------------------

    def list(self, *, owner: str | None = None) -> builtins.list[ApiKey]:
        """Every key (``owner`` None) or the keys of one owner, oldest first."""
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if owner is not None:
            query = query.where(api_keys.c.owner == owner)
        with self._engine.connect() as conn:
            return [_from_row(row) for row in conn.execute(query)]

    def get(self, key_id: str) -> ApiKey:
        """The key with id ``key_id`` (active or not); :class:`NotFound` if none."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}", details={"key_id": key_id})
        return _from_row(row)

    def verify(self, secret: str) -> ApiKey | None:
        """The active key matching ``secret``, or None (unknown, disabled, expired)."""
        key = self._lookup(secret, hash_key(secret))
        return key if key is not None and key.active_at(self._clock()) else None

    def verify_cached(self, secret: str, *, cache: bool = True) -> ApiKey | None:
        """:meth:`verify` with the key's row cached in this process while nothing changed.

        Keyed by a salted BLAKE2b of the secret (the secret itself is never kept; the salt is
        random per process). An entry stays valid while the access generation it was read
        under is current: a disable, a new expiry, a rotation or the owner's disable made
        through *this* process takes effect at once, one made by another process within the
        generation's ttl (5 s). Expiry is checked on every call against the clock, so it is
        exact. Unknown secrets are not cached (random guesses must not fill memory).
        ``cache=False`` reads the database.
        """
        if not cache:
            return self.verify(secret)
        token = self._cache_token(secret)
        current = self._access.current()
        with self._cache_lock:
            entry = self._cache.get(token)
            generation = self._generation
            if entry is not None and entry.generation == current:
                self._cache.move_to_end(token)
        if entry is not None and entry.generation == current:
            key: ApiKey | None = entry.key
        else:
            key = self._lookup(secret, hash_key(secret))
            if key is not None:
                with self._cache_lock:
                    if generation == self._generation:
                        self._cache[token] = _CacheEntry(key, current)
                        self._cache.move_to_end(token)
                        if len(self._cache) > _CACHE_MAX:
                            self._cache.popitem(last=False)
        return key if key is not None and key.active_at(self._clock()) else None

    def _cache_token(self, secret: str) -> bytes:
        """The cache key of ``secret``: a BLAKE2b under this store's random salt (~4x cheaper than
        the sha256 the database stores, which is computed only on a miss)."""
        return hashlib.blake2b(secret.encode(), digest_size=20, key=self._salt).digest()

    # -- changes --------------------------------------------------------------------------

    def set_disabled(self, key_id: str, disabled: bool) -> ApiKey:
        """Disable (or re-enable) a key; this process refuses it at once."""
        return self._update(key_id, disabled=bool(disabled))

    def set_expiry(self, key_id: str, expires_at: datetime | None) -> ApiKey:
        """Set (or clear, with None) when a key stops working; a timezone-aware moment."""
        _check_aware(expires_at)
        return self._update(key_id, expires_at=expires_at)

    def rotate(self, key_id: str, *, grace_seconds: int = 0) -> NewKey:
        """Replace a key by a new secret with a new id; the old key stops working.

        The new key keeps the old one's name, role, owner, expiry and plan attachments.
        With ``grace_seconds == 0`` the old key is disabled at once; otherwise it expires
        ``grace_seconds`` from now (never later than it would have anyway). A disabled or
        expired key cannot be rotated (:class:`Conflict`): re-enable it first, so rotation
        never revives a key an admin turned off.
        """
        if isinstance(grace_seconds, bool) or not isinstance(grace_seconds, int):
            raise InvalidInput("grace_seconds must be an integer")
        if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
            raise InvalidInput(f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS}")
        with write_tx(self._engine) as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id).with_for_update()).first()
            if row is None:
                raise NotFound(f"no API key with id {key_id!r}", details={"key_id": key_id})
            old = _from_row(row)
            now = self._clock()
            if not old.active_at(now):
                raise Conflict(
                    f"API key {key_id!r} is disabled or expired; enable it before rotating",
                    details={"key_id": key_id},
                )
            new = _insert(
                conn,
                None,
                name=old.name,
                role=old.role,
                owner=old.owner,
                expires_at=old.expires_at,
                now=now,
                lineage=old.lineage or old.id,
            )
            attached = conn.execute(
                sa.select(key_plans.c.scope, key_plans.c.plan).where(key_plans.c.key_id == key_id)
            ).all()
            if attached:
                conn.execute(
                    key_plans.insert(),
                    [{"key_id": new.key.id, "scope": a.scope, "plan": a.plan} for a in attached],
                )
            if grace_seconds == 0:
                values: dict[str, object] = {"disabled": True}
            else:
                until = now + timedelta(seconds=grace_seconds)
                if old.expires_at is not None:
                    until = min(until, old.expires_at)
                values = {"expires_at": until}
            conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(**values))
            self._access.bump(conn)
        self._invalidate(key_id)
        return new

    # -- internals ------------------------------------------------------------------------

    def _update(self, key_id: str, **values: object) -> ApiKey:
        with write_tx(self._engine) as conn:
            result = conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(**values))
            if result.rowcount == 0:
                raise NotFound(f"no API key with id {key_id!r}", details={"key_id": key_id})
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).one()
            self._access.bump(conn)
        self._invalidate(key_id)
        return _from_row(row)

    def invalidate_owner(self, owner: str) -> None:
        """Forget the cached keys of ``owner`` (their user was disabled or enabled through a
        store that does not share this one's access generation): re-read on their next call."""
        with self._cache_lock:
            self._generation += 1
            for digest in [d for d, e in self._cache.items() if e.key.owner == owner]:
                del self._cache[digest]

    def _invalidate(self, key_id: str) -> None:
        self._access.changed()
        with self._cache_lock:
            self._generation += 1

    def _lookup(self, secret: str, digest: str) -> ApiKey | None:
        """The key row matching ``secret`` whatever its state (with its owner's), or None if unknown."""
        prefix = _parse(secret)
        query = sa.select(api_keys, users.c.disabled.label("owner_disabled")).select_from(
            api_keys.outerjoin(users, users.c.username == api_keys.c.owner)
        )
        query = (
            query.where(api_keys.c.prefix == prefix) if prefix else query.where(api_keys.c.key_hash == digest)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        # a disabled owner revokes the key
        return _from_row(row, owner_active=not row.owner_disabled)


def _from_row(row: sa.Row[Any], *, owner_active: bool = True) -> ApiKey:
    expires = row.expires_at
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return ApiKey(
        row.id,
        row.name,
        row.role,
        row.owner,
        row.created_at,
        expires,
        bool(row.disabled),
        row.lineage or row.id,
        owner_active,
    )


def _check_text(value: object, what: str, max_len: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise InvalidInput(f"{what} must be a string of 1 to {max_len} characters")
    if value != value.strip() or any(unicodedata.category(ch).startswith("C") for ch in value):
        raise InvalidInput(f"{what} must not contain control characters or surrounding spaces")


def _check_aware(moment: datetime | None) -> None:
    if moment is not None and (not isinstance(moment, datetime) or moment.utcoffset() is None):
        raise InvalidInput("expires_at must be a timezone-aware datetime")


def _insert(
    conn: sa.Connection,
    secret: str | None,
    *,
    name: str,
    role: str,
    owner: str | None,
    expires_at: datetime | None,
    now: datetime,
    lineage: str | None = None,
) -> NewKey:
    prefix = _parse(secret) if secret else None
    if prefix is None:
        prefix = secrets.token_hex(4)
        # 32-bit ids: with many keys a collision is possible, so pick another rather than fail.
        while conn.execute(sa.select(api_keys.c.id).where(api_keys.c.id == prefix)).first() is not None:
            prefix = secrets.token_hex(4)
    secret = secret or f"mlg_{prefix}_{secrets.token_urlsafe(32)}"
    if expires_at is not None:
        expires_at = expires_at.astimezone(UTC)
    conn.execute(
        api_keys.insert().values(
            id=prefix,
            prefix=prefix,
            key_hash=hash_key(secret),
            name=name,
            role=role,
            owner=owner,
            created_at=now,
            expires_at=expires_at,
            disabled=False,
            lineage=lineage or prefix,
        )
    )
    return NewKey(ApiKey(prefix, name, role, owner, now, expires_at, False, lineage or prefix), secret)
