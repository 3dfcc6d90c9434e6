"""Bring a registry database to the newest schema with Alembic, configured in code.

Safe to run from several processes at once: on PostgreSQL the migration runs under a
transaction-scoped advisory lock; on SQLite under ``BEGIN IMMEDIATE``. Whoever comes
second finds the schema at head and does nothing.

Example::

    upgrade("sqlite:///var/mlgate.db")
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from mlgate.db.engine import create_engine_for, write_tx

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD_REVISION", "MIGRATIONS_DIR", "alembic_config", "current_revision", "upgrade"]

#: The newest migration in MIGRATIONS_DIR (a unit test checks it against Alembic's own head).
#: A database already there is left alone without importing Alembic (~0.15 s of every start).
HEAD_REVISION = "0007"

#: The Alembic script directory shipped inside the package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Arbitrary constant naming mlgate's migration lock among PostgreSQL advisory locks.
_PG_LOCK_KEY = 0x6D6C67617465  # "mlgate"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for mlgate's migrations; ``connection`` is used by ``env.py``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine_or_url: Engine | str, *, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (default: the newest)."""
    if isinstance(engine_or_url, str):
        engine = create_engine_for(engine_or_url)
        try:
            _upgrade(engine, revision)
        finally:
            engine.dispose()
    else:
        _upgrade(engine_or_url, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _upgrade(engine: Engine, revision: str) -> None:
    if revision in ("head", HEAD_REVISION) and current_revision(engine) == HEAD_REVISION:
        return  # the common start: nothing to migrate
    from alembic import command

    # One transaction around the whole run: both backends have transactional DDL, and
    # Alembic leaves a transaction it did not start to its owner.
    with write_tx(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        command.upgrade(alembic_config(conn), revision)
