from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from mlgate.access.keys import KeyStore
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
