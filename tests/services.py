"""Shared helpers for tests that need an external service (PostgreSQL, Redis, an S3 server).

On a user's machine without the service the test is skipped with a clear reason; in CI
(``MLGATE_REQUIRE_SERVICES=1``) a missing service fails the test instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_URL = os.environ.get("MLGATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def services_required() -> bool:
    return os.environ.get("MLGATE_REQUIRE_SERVICES", "") not in ("", "0", "false")


def missing_service(reason: str) -> None:
    """Skip (or, in CI, fail) the current test because a service is unavailable."""
    if services_required():
        pytest.fail(f"required service unavailable (MLGATE_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_schema(prefix: str = "t") -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL whose search_path is a fresh schema, that schema), dropped afterwards.

    Skips (or fails in CI) when psycopg or the server is missing.
    """
    from sqlalchemy.engine import make_url

    try:
        import psycopg
    except ImportError:  # pragma: no cover - the postgres extra is missing
        missing_service("psycopg is not installed (pip install 'mlgate[postgres]')")
        raise
    url = make_url(POSTGRES_URL)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        missing_service(f"PostgreSQL unreachable at {url.render_as_string()}: {exc}")
        raise
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
            yield scoped.render_as_string(hide_password=False), schema
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
