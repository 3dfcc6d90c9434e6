"""Dashboard sessions (mlgate.access.sessions): stored as a hash, expiring, revoked with their
caller, cached briefly; and which requests may use the cookie as a credential."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from mlgate.access.generation import AccessGeneration
from mlgate.access.keys import KeyStore
from mlgate.access.sessions import CACHE_TTL_S, SessionStore, dashboard_cookie, hash_session
from mlgate.access.users import UserStore
from mlgate.db.tables import dashboard_sessions
from mlgate.repository import Repository


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Repository, KeyStore, UserStore, SessionStore, Clock, Clock]]:
    repository = Repository.open(f"sqlite:///{tmp_path / 's.db'}")
    access = AccessGeneration(repository.engine)
    keys = KeyStore(repository.engine, generation=access)
    fast = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8 * 1024),))
    users = UserStore(repository.engine, hasher=fast, generation=access)
    clock, tick = Clock(), Clock()
    sessions = SessionStore(
        repository.engine, keys=keys, users=users, life_s=3600, generation=access, clock=clock, monotonic=tick
    )
    yield repository, keys, users, sessions, clock, tick
    repository.engine.dispose()


def test_a_key_session_is_stored_as_a_hash_and_expires(parts) -> None:  # type: ignore[no-untyped-def]
    repository, keys, _, sessions, clock, tick = parts
    key = keys.create(name="ops", role="admin").key
    value, session = sessions.create(kind="key", caller_id=key.id, username=None, role="admin")
    with repository.engine.connect() as conn:
        rows = conn.execute(sa.select(dashboard_sessions)).all()
    assert [r.id_hash for r in rows] == [hash_session(value)]  # never the value itself
    assert value not in repr(rows)
    assert session.expires_at - session.created_at == 3600
    caller = sessions.resolve(value)
    assert caller is not None and (caller.kind, caller.id, caller.role) == ("key", key.id, "admin")
    assert sessions.resolve("nope") is None and sessions.resolve("x" * 500) is None
    clock.now += 3601  # expiry is exact, cache or not
    tick.now += 1
    assert sessions.resolve(value) is None
    # an expired session is swept at the next sign-in
    sessions.create(kind="key", caller_id=key.id, username=None, role="admin")
    with repository.engine.connect() as conn:
        assert hash_session(value) not in {r.id_hash for r in conn.execute(sa.select(dashboard_sessions))}


def test_disabling_the_key_or_its_owner_ends_the_session_at_once(parts) -> None:  # type: ignore[no-untyped-def]
    _, keys, users, sessions, _, _ = parts
    users.create("ana", "correct horse battery")
    key = keys.create(name="ana-key", owner="ana").key
    value, _ = sessions.create(kind="key", caller_id=key.id, username="ana", role="user")
    assert sessions.resolve(value) is not None
    assert sessions.cached(value)[0]  # a recent hit answers without reading
    users.set_disabled("ana", True)
    assert sessions.cached(value) == (False, None)
    assert sessions.resolve(value) is None
    users.set_disabled("ana", False)
    assert sessions.resolve(value) is not None
    keys.set_disabled(key.id, True)
    assert sessions.resolve(value) is None


def test_a_user_session_follows_the_account(parts) -> None:  # type: ignore[no-untyped-def]
    _, _, users, sessions, _, _ = parts
    users.create("bob", "correct horse battery")
    value, _ = sessions.create(kind="user", caller_id="bob", username="bob", role="user")
    caller = sessions.resolve(value)
    assert caller is not None and (caller.kind, caller.username, caller.role) == ("user", "bob", "user")
    users.set_role("bob", "admin")
    caller = sessions.resolve(value)
    assert caller is not None and caller.role == "admin"  # the live role, not the one at sign-in
    users.set_disabled("bob", True)
    assert asyncio.run(sessions.resolve_async(value)) is None


def test_logout_is_seen_at_once_here_and_within_the_cache_ttl_elsewhere(parts) -> None:  # type: ignore[no-untyped-def]
    repository, keys, users, sessions, clock, tick = parts
    key = keys.create(name="k").key
    value, _ = sessions.create(kind="key", caller_id=key.id, username=None, role="user")
    other = SessionStore(
        repository.engine, keys=keys, users=users, generation=AccessGeneration(repository.engine),
        clock=clock, monotonic=tick,
    )  # fmt: skip
    assert other.resolve(value) is not None
    assert sessions.delete(value) is True and sessions.delete(value) is False
    assert sessions.resolve(value) is None
    assert other.resolve(value) is not None  # its brief cache
    tick.now += CACHE_TTL_S
    assert other.resolve(value) is None


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("GET", "/v1/models", [(b"x-mlgate-dashboard", b"1"), (b"cookie", b"a=b; mlgate_session=v1")], "v1"),
        ("HEAD", "/v1/keys", [(b"cookie", b"mlgate_session=v2"), (b"x-mlgate-dashboard", b"1")], "v2"),
        ("GET", "/v1/models", [(b"cookie", b"mlgate_session=v1")], None),  # no header: no CSRF-free proof
        ("GET", "/v1/models", [(b"x-mlgate-dashboard", b"0"), (b"cookie", b"mlgate_session=v1")], None),
        ("POST", "/v1/keys", [(b"x-mlgate-dashboard", b"1"), (b"cookie", b"mlgate_session=v1")], None),
        ("DELETE", "/v1/models/m", [(b"x-mlgate-dashboard", b"1"), (b"cookie", b"mlgate_session=v1")], None),
        ("GET", "/metrics", [(b"x-mlgate-dashboard", b"1"), (b"cookie", b"mlgate_session=v1")], None),
        ("GET", "/v1/models", [(b"x-mlgate-dashboard", b"1"), (b"cookie", b"other=1")], None),
    ],
)
def test_which_requests_may_use_the_cookie(
    method: str, path: str, headers: list[tuple[bytes, bytes]], expected: str | None
) -> None:
    assert dashboard_cookie(method, path, headers) == expected
