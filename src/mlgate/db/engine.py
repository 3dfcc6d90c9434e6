"""Engines for the registry database: ``sqlite:///path`` or ``postgresql://…``.

SQLite is tuned for several server processes sharing one file: WAL, a 30 s busy
timeout, foreign keys, and explicit ``BEGIN`` so that reads start ``DEFERRED`` while
:func:`write_tx` starts ``BEGIN IMMEDIATE``. Taking the write lock up front means a
read-then-write transaction never fails with "database is locked" when upgrading
its lock; it waits its turn instead.

Example::

    engine = create_engine_for("sqlite:///var/mlgate.db")
    with write_tx(engine) as conn:
        conn.execute(...)
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from mlgate.errors import ConfigurationError

__all__ = ["BUSY_TIMEOUT_MS", "create_engine_for", "is_sqlite", "normalize_url", "write_tx"]

#: How long a SQLite connection waits for another writer before giving up.
BUSY_TIMEOUT_MS = 30_000
# Execution option read by the ``begin`` hook to choose ``BEGIN IMMEDIATE``.
_WRITE_OPTION = "mlgate_write"


def normalize_url(url: str) -> URL:
    """Parse ``url``, pinning PostgreSQL to psycopg 3; reject other backends."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError(f"invalid database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed
    if backend == "sqlite":
        return parsed
    raise ConfigurationError(
        f"unsupported database URL scheme {parsed.drivername!r}; use sqlite or postgresql"
    )


def is_sqlite(engine: Engine | Connection) -> bool:
    """Whether ``engine`` talks to SQLite."""
    return engine.dialect.name == "sqlite"


def create_engine_for(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with mlgate's connection settings applied."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy: pysqlite's own BEGIN would be DEFERRED
        # for writes and absent for reads.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _enable_wal(cursor: Any) -> None:
    # WAL is persistent in the file, so this only does work on a fresh database. Switching
    # needs an exclusive lock and SQLite does not run the busy handler for it: retry by hand.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: ``BEGIN IMMEDIATE`` on SQLite; commits on success."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn
