"""Fixtures shared by every suite.

``moto_server``: moto's standalone S3 server, started once per session as a real
subprocess on a free loopback port and reached over real HTTP (contract and e2e tests).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

from mlgate.settings import S3Settings
from tests.services import free_port, missing_service, port_open

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Dummy credentials: moto accepts any.
MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"
MOTO_REGION = "us-east-1"


class MotoServer:
    """A running moto server: its endpoint and the settings to reach it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.settings = S3Settings(
            endpoint_url=endpoint,
            region=MOTO_REGION,
            access_key_id=MOTO_ACCESS_KEY,
            secret_access_key=MOTO_SECRET_KEY,
        )
        self._buckets: set[str] = set()
        self._lock = threading.Lock()

    def client(self) -> S3Client:
        """A boto3 S3 client for this server (close it when done)."""
        return boto3.session.Session(
            aws_access_key_id=MOTO_ACCESS_KEY, aws_secret_access_key=MOTO_SECRET_KEY, region_name=MOTO_REGION
        ).client("s3", endpoint_url=self.endpoint)

    def ensure_bucket(self, name: str) -> str:
        """Create bucket ``name`` once per session; return its name."""
        with self._lock:
            if name not in self._buckets:
                client = self.client()
                try:
                    client.create_bucket(Bucket=name)
                finally:
                    client.close()
                self._buckets.add(name)
        return name

    def env(self) -> dict[str, str]:
        """The ``MLGATE_S3__*`` variables that point a server process at this moto server."""
        return {
            "MLGATE_S3__ENDPOINT_URL": self.endpoint,
            "MLGATE_S3__REGION": MOTO_REGION,
            "MLGATE_S3__ACCESS_KEY_ID": MOTO_ACCESS_KEY,
            "MLGATE_S3__SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
        }


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
    """moto's S3 server as a subprocess (no bucket yet: use :meth:`MotoServer.ensure_bucket`)."""
    proc, endpoint_or_reason = _start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    if proc is None:
        missing_service(endpoint_or_reason)
        return  # unreachable: missing_service skips or fails
    try:
        yield MotoServer(endpoint_or_reason)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
