"""API keys: random, shown once, stored only as a sha256 hash, compared in constant time.

A key looks like ``mlg_<prefix>_<secret>``; the 8-hex ``prefix`` is its public id (shown
in listings and logs), the secret has 256 bits of entropy, so a fast hash is enough
(no password stretching needed for random keys).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlgate.db.engine import write_tx
from mlgate.db.tables import api_keys
from mlgate.errors import InvalidInput

__all__ = ["ApiKey", "KeyStore", "NewKey", "hash_key"]

ROLES = ("admin", "user")


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    role: str
    owner: str | None
    created_at: datetime
    expires_at: datetime | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly created key: ``secret`` is shown once and never stored."""

    key: ApiKey
    secret: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse(secret: str) -> str | None:
    parts = secret.split("_", 2)  # the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != "mlg" or len(parts[1]) != 8:
        return None
    return parts[1]


class KeyStore:
    """Keys in the registry database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

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
        with write_tx(self._engine) as conn:
            return _insert(conn, None, name=name, role=role, owner=owner, expires_at=expires_at)

    def ensure_admin(self, *, configured: str | None) -> NewKey | None:
        """Create the bootstrap admin key on first start; return it only when newly created.

        ``configured`` installs that secret (hashed) instead of a random one. Runs in one
        write transaction so two starting workers cannot both create one.
        """
        with write_tx(self._engine) as conn:
            if configured is not None:
                where = api_keys.c.key_hash == hash_key(configured)
            else:
                where = api_keys.c.role == "admin"
            if conn.execute(sa.select(api_keys.c.id).where(where)).first() is not None:
                return None
            return _insert(
                conn, configured, name="bootstrap-admin", role="admin", owner=None, expires_at=None
            )

    def verify(self, secret: str) -> ApiKey | None:
        """The active key matching ``secret``, or None (unknown, disabled, expired)."""
        digest = hash_key(secret)
        prefix = _parse(secret)
        query = sa.select(api_keys)
        query = (
            query.where(api_keys.c.prefix == prefix) if prefix else query.where(api_keys.c.key_hash == digest)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        expires = row.expires_at
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if row.disabled or (expires is not None and expires <= datetime.now(UTC)):
            return None
        return ApiKey(row.id, row.name, row.role, row.owner, row.created_at, expires, row.disabled)


def _insert(
    conn: sa.Connection,
    secret: str | None,
    *,
    name: str,
    role: str,
    owner: str | None,
    expires_at: datetime | None,
) -> NewKey:
    prefix = (_parse(secret) if secret else None) or secrets.token_hex(4)
    secret = secret or f"mlg_{prefix}_{secrets.token_urlsafe(32)}"
    now = datetime.now(UTC)
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
        )
    )
    return NewKey(ApiKey(prefix, name, role, owner, now, expires_at, False), secret)
