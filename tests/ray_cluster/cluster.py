"""A real local Ray cluster of two nodes on this machine, started and torn down by a test or bench.

``ray start --head`` (1 CPU, no dashboard, no usage stats, every port chosen free) and a second
``ray start --address`` (1 CPU), both under one short ``--temp-dir`` (Unix socket paths are limited
to 107 bytes). :meth:`RayCluster.stop` runs ``ray stop --force`` and then checks that no process
whose command line names that temp dir is left (ending any by pid).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.services import free_port

#: per node: what Ray may keep in shared memory (small: the payloads are kilobytes)
OBJECT_STORE_BYTES = 200 * 1024 * 1024


def ray_cli() -> str:
    """The ``ray`` command of this interpreter's environment."""
    found = Path(sys.executable).parent / "ray"
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


def _ports(*names: str) -> list[str]:
    argv: list[str] = []
    for name in names:
        argv += [f"--{name}", str(free_port())]
    return argv


class RayCluster:
    """Two Ray nodes on 127.0.0.1 (``address``: the head's GCS, what ``MLGATE_RAY__ADDRESS`` takes)."""

    def __init__(self, *, cpus_per_node: int = 1, log: Path | None = None) -> None:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = log or self.temp_dir / "cluster.log"
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        self.cpus = cpus_per_node

    def _run(self, argv: list[str], timeout: float = 120.0) -> None:
        with self.log.open("ab") as out:
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            done = subprocess.run(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[:3]} failed ({done.returncode}):\n{self.log.read_text()[-3000:]}")

    def _node(self) -> list[str]:
        return [
            "--num-cpus",
            str(self.cpus),
            "--node-ip-address",
            "127.0.0.1",
            "--temp-dir",
            str(self.temp_dir),
            "--object-store-memory",
            str(OBJECT_STORE_BYTES),
            *_ports(
                "object-manager-port",
                "node-manager-port",
                "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port",
                "metrics-export-port",
                "runtime-env-agent-port",
            ),
        ]

    def start(self) -> RayCluster:
        ray = ray_cli()
        try:
            self._run(
                [
                    ray,
                    "start",
                    "--head",
                    "--port",
                    str(self.port),
                    "--include-dashboard=false",
                    "--disable-usage-stats",
                    *_ports("ray-client-server-port"),
                    *self._node(),
                ]
            )
            self._run([ray, "start", "--address", self.address, *self._node()])
            self._wait_nodes(2)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_nodes(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            done = subprocess.run(
                [ray_cli(), "status", "--address", self.address],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            status = done.stdout
            active = status.split("Active:", 1)[-1].split("Pending:", 1)[0]
            if done.returncode == 0 and active.count("node_") >= n:
                return
            time.sleep(1.0)
        raise RuntimeError(f"the cluster did not reach {n} nodes:\n{status}")

    def leftovers(self) -> list[int]:
        """Processes whose command line names this cluster's temp dir (ours, still running)."""
        marker = str(self.temp_dir).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in cmdline and state != "Z":
                found.append(int(entry.name))
        return found

    def stop(self) -> list[int]:
        """``ray stop --force``; returns the processes that were still left afterwards (ended by pid)."""
        subprocess.run(
            [ray_cli(), "stop", "--force"],
            env=self.env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        deadline = time.monotonic() + 15
        left = self.leftovers()
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = self.leftovers()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left
