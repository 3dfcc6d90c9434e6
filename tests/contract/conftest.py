"""Fixtures for the contract suites: every backend of an interface behind one parametrized fixture.

Store: ``file`` (a temporary directory) and ``s3`` (moto's standalone server, started once per
session as a real subprocess on a free loopback port: the ``moto_server`` fixture of
``tests/conftest.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlgate.store import ArtifactStore, FileArtifactStore
from mlgate.store.s3 import S3ArtifactStore
from tests.conftest import MotoServer

__all__ = ["MOTO_BUCKET", "S3_PAGE_SIZE", "MotoServer"]

MOTO_BUCKET = "mlgate-contract"
#: Small S3 page size so that every listing test exercises pagination.
S3_PAGE_SIZE = 3


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """An empty store of each backend (S3: a fresh prefix in the shared bucket)."""
    if request.param == "file":
        return FileArtifactStore(tmp_path / "store")
    server: MotoServer = request.getfixturevalue("moto_server")
    server.ensure_bucket(MOTO_BUCKET)
    return S3ArtifactStore(MOTO_BUCKET, f"t-{uuid.uuid4().hex}", s3=server.settings, _page_size=S3_PAGE_SIZE)


# -- registry database: ``sqlite`` (a temporary file) and ``postgresql`` (a fresh schema) ------


def _postgres_schema_url() -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema on the test server, dropped afterwards."""
    from tests.services import postgres_schema

    with postgres_schema("t") as (url, _):
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, unmigrated registry database: a SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'mlgate.db'}"
    else:
        yield from _postgres_schema_url()
