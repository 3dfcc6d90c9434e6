from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mlgate.access.keys import MAX_GRACE_SECONDS, KeyStore, hash_key
from mlgate.errors import InvalidInput
from mlgate.repository import Repository


def _store(tmp_path: Path) -> KeyStore:
    return KeyStore(Repository.open(f"sqlite:///{tmp_path / 'k.db'}").engine)


def test_secret_shown_once_and_stored_as_hash(tmp_path: Path) -> None:
    keys = _store(tmp_path)
    new = keys.create(name="ci", role="user")
    assert new.secret.startswith(f"mlg_{new.key.id}_")
    found = keys.verify(new.secret)
    assert found is not None
    assert found.id == new.key.id
    assert found.role == "user"
    with keys._engine.connect() as conn:  # the secret is nowhere in the database
        dump = "\n".join(str(tuple(r)) for r in conn.execute(sa.text("select * from api_keys")))
    assert new.secret not in dump
    assert new.secret.split("_", 2)[2] not in dump


def test_secret_with_underscores_verifies_by_prefix(tmp_path: Path) -> None:
    keys = _store(tmp_path)
    configured = "mlg_abcdef01_part_with_underscores_and_more_than_24"
    created = keys.ensure_admin(configured=configured)
    assert created is not None
    assert created.key.id == "abcdef01"
    found = keys.verify(configured)
    assert found is not None
    assert found.role == "admin"
    assert keys.verify(configured + "x") is None
    assert keys.verify("mlg_abcdef01_wrong") is None
    assert keys.ensure_admin(configured=configured) is None  # idempotent


def test_bootstrap_created_once(tmp_path: Path) -> None:
    keys = _store(tmp_path)
    first = keys.ensure_admin(configured=None)
    assert first is not None
    assert keys.ensure_admin(configured=None) is None
    assert keys.verify(first.secret) is not None


def test_expired_key_refused(tmp_path: Path) -> None:
    keys = _store(tmp_path)
    old = keys.create(name="old", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert keys.verify(old.secret) is None
    assert keys.verify("not-a-key") is None


# -- the verification cache and key management (backend-independent parts) -----------------


class Ticker:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _count_queries(engine: sa.Engine) -> list[int]:
    counter = [0]

    def on_execute(*_args: object) -> None:
        counter[0] += 1

    sa.event.listen(engine, "before_cursor_execute", on_execute)
    return counter


def test_verify_cached_skips_the_database_within_ttl(tmp_path: Path) -> None:
    ticker = Ticker()
    keys = KeyStore(_store(tmp_path)._engine, monotonic=ticker)
    new = keys.create(name="svc")
    assert keys.verify_cached(new.secret) is not None
    queries = _count_queries(keys._engine)
    for _ in range(100):
        assert keys.verify_cached(new.secret) is not None
    assert queries[0] == 0
    ticker.now += 5.0  # ttl passed: one fresh read
    assert keys.verify_cached(new.secret) is not None
    assert queries[0] > 0


def test_disable_elsewhere_is_seen_within_ttl(tmp_path: Path) -> None:
    ticker = Ticker()
    engine = _store(tmp_path)._engine
    here = KeyStore(engine, monotonic=ticker)
    elsewhere = KeyStore(engine)
    new = here.create(name="svc")
    assert here.verify_cached(new.secret) is not None
    elsewhere.set_disabled(new.key.id, True)
    assert here.verify(new.secret) is None  # the uncached path sees it at once
    ticker.now += 4.9
    assert here.verify_cached(new.secret) is not None  # documented delay: the generation's ttl (5 s)
    ticker.now += 0.2
    assert here.verify_cached(new.secret) is None
    assert here.verify_cached(new.secret, cache=False) is None


def test_own_writes_invalidate_the_cache(tmp_path: Path) -> None:
    keys = _store(tmp_path)
    new = keys.create(name="svc")
    assert keys.verify_cached(new.secret) is not None
    keys.set_disabled(new.key.id, True)
    assert keys.verify_cached(new.secret) is None
    keys.set_disabled(new.key.id, False)
    assert keys.verify_cached(new.secret) is not None
    keys.set_expiry(new.key.id, datetime.now(UTC) - timedelta(seconds=1))
    assert keys.verify_cached(new.secret) is None
    keys.set_expiry(new.key.id, None)
    assert keys.verify_cached(new.secret) is not None
    rotated = keys.rotate(new.key.id)
    assert keys.verify_cached(new.secret) is None
    assert keys.verify_cached(rotated.secret) is not None


def test_unknown_secrets_are_not_cached(tmp_path: Path) -> None:
    keys = _store(tmp_path)
    for i in range(50):
        assert keys.verify_cached(f"mlg_{i:08x}_guess") is None
        assert keys.verify_cached(f"random-guess-{i}") is None
    assert len(keys._cache) == 0


def test_cache_holds_hashes_not_secrets(tmp_path: Path) -> None:
    keys = _store(tmp_path)
    new = keys.create(name="svc")
    keys.verify_cached(new.secret)
    (token,) = list(keys._cache)  # a salted digest: neither the secret nor its stored hash
    assert new.secret.encode() not in token
    assert token.hex() != hash_key(new.secret)
    assert token != _store(tmp_path)._cache_token(new.secret)  # another process, another salt
    assert new.secret not in repr(new)
    assert new.secret not in repr(keys._cache)


def test_expiry_is_exact_even_when_cached(tmp_path: Path) -> None:
    moment = [datetime(2026, 3, 4, 12, tzinfo=UTC)]
    keys = KeyStore(_store(tmp_path)._engine, clock=lambda: moment[0])
    new = keys.create(name="svc", expires_at=moment[0] + timedelta(seconds=10))
    assert keys.verify_cached(new.secret) is not None
    moment[0] += timedelta(seconds=10)
    assert keys.verify_cached(new.secret) is None


def test_rotate_refuses_bad_grace(tmp_path: Path) -> None:
    keys = _store(tmp_path)
    new = keys.create(name="svc")
    for grace in (-1, MAX_GRACE_SECONDS + 1):
        with pytest.raises(InvalidInput, match="grace_seconds"):
            keys.rotate(new.key.id, grace_seconds=grace)
    with pytest.raises(InvalidInput, match="grace_seconds"):
        keys.rotate(new.key.id, grace_seconds=1.5)  # type: ignore[arg-type]
    assert keys.verify(new.secret) is not None  # nothing happened


def test_owner_and_name_validation_messages(tmp_path: Path) -> None:
    keys = _store(tmp_path)
    with pytest.raises(InvalidInput, match="owner must be a string of 1 to 64"):
        keys.create(name="k", owner="x" * 65)
    with pytest.raises(InvalidInput, match="owner must not contain control characters"):
        keys.create(name="k", owner="al\x00ice")
    with pytest.raises(InvalidInput, match="key name"):
        keys.create(name="x" * 129)
    with pytest.raises(InvalidInput, match="role"):
        keys.create(name="k", role="root")
    key = keys.create(name="k").key
    with pytest.raises(InvalidInput, match="timezone-aware"):
        keys.set_expiry(key.id, datetime(2030, 1, 1))
