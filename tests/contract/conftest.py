"""Fixtures for the contract suites: every backend of an interface behind one parametrized fixture.

Store: ``file`` (a temporary directory) and ``s3`` (moto's standalone server, started once per
session as a real subprocess on a free loopback port).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from mlgate.settings import S3Settings
from mlgate.store import ArtifactStore, FileArtifactStore, S3ArtifactStore
from tests.services import free_port, missing_service, port_open

MOTO_BUCKET = "mlgate-contract"
#: Small S3 page size so that every listing test exercises pagination.
S3_PAGE_SIZE = 3


class MotoServer:
    """A running moto server: its endpoint and the settings to reach it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.settings = S3Settings(
            endpoint_url=endpoint, access_key_id="testing", secret_access_key="testing"
        )


def _start_moto(log: Path) -> tuple[subprocess.Popen[bytes] | None, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with log.open("wb") as out:
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        except OSError as exc:
            return None, f"cannot start moto server: {exc}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return (
                None,
                f"moto server exited with {proc.returncode}: {log.read_text(errors='replace')[-500:]}",
            )
        if port_open("127.0.0.1", port, timeout=0.2):
            return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.terminate()
    proc.wait(timeout=10)
    return None, "moto server did not answer within 30 s"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's S3 server as a subprocess, with bucket ``MOTO_BUCKET`` created."""
    proc, endpoint_or_reason = _start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    if proc is None:
        missing_service(endpoint_or_reason)
        return  # unreachable: missing_service skips or fails
    try:
        server = MotoServer(endpoint_or_reason)
        client = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        ).client("s3", endpoint_url=server.endpoint)
        client.create_bucket(Bucket=MOTO_BUCKET)
        client.close()
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """An empty store of each backend (S3: a fresh prefix in the shared bucket)."""
    if request.param == "file":
        return FileArtifactStore(tmp_path / "store")
    server: MotoServer = request.getfixturevalue("moto_server")
    return S3ArtifactStore(MOTO_BUCKET, f"t-{uuid.uuid4().hex}", s3=server.settings, _page_size=S3_PAGE_SIZE)


# -- registry database: ``sqlite`` (a temporary file) and ``postgresql`` (a fresh schema) ------


def _postgres_schema_url() -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema on the test server, dropped afterwards."""
    # Imported here so this section stays self-contained within the shared conftest.
    from sqlalchemy.engine import make_url

    from tests.services import POSTGRES_URL

    try:
        import psycopg
    except ImportError:  # pragma: no cover - the postgres extra is missing
        missing_service("psycopg is not installed (pip install 'mlgate[postgres]')")
        return
    url = make_url(POSTGRES_URL)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        missing_service(f"PostgreSQL unreachable at {url.render_as_string()}: {exc}")
        return
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
                hide_password=False
            )
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, unmigrated registry database: a SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'mlgate.db'}"
    else:
        yield from _postgres_schema_url()
