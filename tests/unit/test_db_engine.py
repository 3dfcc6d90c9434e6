"""Engine construction: SQLite pragmas and BEGIN modes, PostgreSQL driver pinning."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy import exc as sa_exc

from mlgate.db import create_engine_for, upgrade, write_tx
from mlgate.db.engine import BUSY_TIMEOUT_MS, normalize_url
from mlgate.errors import ConfigurationError
from mlgate.repository import Repository
from mlgate.types import Manifest


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'test.db'}")
    yield engine
    engine.dispose()


def record_statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    return seen


def test_sqlite_creates_parent_directory(tmp_path: Path, engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert (tmp_path / "nested" / "dir" / "test.db").is_file()


def test_sqlite_pragmas_set_on_every_connection(engine: Engine) -> None:
    for _ in range(2):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS == 30_000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        engine.dispose()  # the second round checks a brand-new DBAPI connection


def test_reads_begin_deferred_and_writes_begin_immediate(engine: Engine) -> None:
    seen = record_statements(engine)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    with write_tx(engine) as conn:
        conn.execute(text("SELECT 1"))
    with engine.connect() as conn:  # the write flag does not leak to the next pooled checkout
        conn.execute(text("SELECT 1"))
    begins = [s for s in seen if s.startswith("BEGIN")]
    assert begins == ["BEGIN DEFERRED", "BEGIN IMMEDIATE", "BEGIN DEFERRED"]


def test_write_tx_commits_and_rolls_back(engine: Engine) -> None:
    with write_tx(engine) as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))

    def failing_write() -> None:
        with write_tx(engine) as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_write()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM t")).scalars().all() == [1]


def test_foreign_keys_enforced(engine: Engine) -> None:
    with write_tx(engine) as conn:
        conn.execute(text("CREATE TABLE p (id INTEGER PRIMARY KEY)"))
        conn.execute(text("CREATE TABLE c (p INTEGER REFERENCES p(id))"))
    with pytest.raises(sa_exc.IntegrityError, match="FOREIGN KEY"), write_tx(engine) as conn:
        conn.execute(text("INSERT INTO c VALUES (42)"))


def test_second_writer_waits_instead_of_failing(engine: Engine) -> None:
    """BEGIN IMMEDIATE takes the write lock up front: a second writer queues, readers go on."""
    with write_tx(engine) as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (0)"))

    holding = threading.Event()
    order: list[str] = []
    errors: list[BaseException] = []

    def first() -> None:
        with write_tx(engine) as conn:
            conn.execute(text("SELECT x FROM t"))  # read, then write: the classic upgrade deadlock
            holding.set()
            time.sleep(0.5)
            conn.execute(text("UPDATE t SET x = x + 1"))
            order.append("first")

    def second() -> None:
        holding.wait(5)
        try:
            with write_tx(engine) as conn:
                value = conn.execute(text("SELECT x FROM t")).scalar_one()
                conn.execute(text("UPDATE t SET x = :v"), {"v": value + 1})
                order.append("second")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    holding.wait(5)
    started = time.monotonic()
    with engine.connect() as conn:  # a WAL reader is not blocked by the writer
        assert conn.execute(text("SELECT x FROM t")).scalar_one() == 0
    assert time.monotonic() - started < 0.4
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert order == ["first", "second"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM t")).scalar_one() == 2


def test_in_memory_sqlite_migrates_and_works() -> None:
    engine = create_engine_for("sqlite://")
    try:
        upgrade(engine)
        repo = Repository(engine)
        repo.create_model("iris")
        manifest = Manifest(runtime="sklearn", artifact="m.skops", files={"m.skops": "0" * 64})
        assert repo.add_version("iris", manifest).version == 1
        assert repo.resolve("iris").version == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@db.example:5432/mlgate", "postgresql+psycopg"),
        ("postgres://u@db.example/mlgate", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db.example/mlgate", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_url_normalization(url: str, driver: str) -> None:
    assert normalize_url(url).drivername == driver


def test_postgresql_engine_uses_psycopg3_with_pre_ping() -> None:
    engine = create_engine_for("postgresql://u:p@db.example:5432/mlgate")
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.dialect.driver == "psycopg"
        assert engine.url.password == "p"
        assert engine.pool._pre_ping
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["mysql://u@h/db", "nonsense", "redis://localhost"])
def test_unsupported_urls_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError):
        create_engine_for(url)


def test_head_revision_constant_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from mlgate.db.migrate import HEAD_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_a_database_at_head_is_not_migrated_again(tmp_path: Path) -> None:
    from mlgate.db.migrate import HEAD_REVISION, current_revision, upgrade

    engine = create_engine_for(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == HEAD_REVISION
        upgrade(engine)  # at head: returns without running Alembic
        assert current_revision(engine) == HEAD_REVISION
    finally:
        engine.dispose()
