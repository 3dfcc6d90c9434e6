"""Alembic migrations of the registry schema (run by :func:`mlgate.db.migrate.upgrade`)."""
