"""Start a real ``mlgate serve`` process for end-to-end tests and talk HTTP to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.services import free_port

ADMIN_KEY = "mlg_e2eadmin_" + "k" * 40


#: A plan that never throttles the suites' load (created on each server's first start).
ROOMY_PLAN = {"name": "roomy", "rate": 1_000_000, "burst": 1_000_000}


@dataclass
class ServerProcess:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    #: a user-role API key created at startup (no plan attached): what model routes need
    api_key: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, *, key: bool = True, **kwargs: object) -> httpx.Client:
        """An HTTP client; sends the test API key unless ``key=False``."""
        headers = {"x-api-key": self.api_key} if key and self.api_key else {}
        return httpx.Client(base_url=self.url, timeout=30.0, headers=headers, **kwargs)  # type: ignore[arg-type]


@contextmanager
def run_server(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    startup_timeout: float = 60.0,
    command: list[str] | None = None,
) -> Iterator[ServerProcess]:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    full_env = {
        **os.environ,
        "MLGATE_DATA_DIR": str(data_dir),
        "MLGATE_PORT": str(port),
        "MLGATE_ADMIN_KEY": ADMIN_KEY,
        "MLGATE_LOG__ACCESS_STDOUT": "false",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command or [sys.executable, "-m", "mlgate", "serve"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", data_dir, proc, log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.url}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {startup_timeout}s:\n{server.log()}")
            time.sleep(0.1)
        # The suites' user key: on a plan that never throttles (every key is on a plan; the
        # default one, the reference plan's 10/s, would throttle the tests' load).
        admin = {"x-api-key": ADMIN_KEY}
        httpx.post(f"{server.url}/v1/plans", json=ROOMY_PLAN, headers=admin, timeout=10.0)
        created = httpx.post(
            f"{server.url}/v1/keys", json={"name": "e2e", "plan": "roomy"}, headers=admin, timeout=10.0
        )
        if created.status_code == 201:
            server.api_key = created.json()["key"]
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
