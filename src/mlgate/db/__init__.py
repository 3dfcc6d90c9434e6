"""The registry database: engines, schema and migrations (SQLite or PostgreSQL)."""

from __future__ import annotations

from mlgate.db.engine import create_engine_for, is_sqlite, write_tx
from mlgate.db.migrate import upgrade

__all__ = ["create_engine_for", "is_sqlite", "upgrade", "write_tx"]
