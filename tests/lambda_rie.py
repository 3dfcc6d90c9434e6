"""Run ``mlgate.aws_lambda.handler`` in a real Lambda runtime: AWS's Runtime Interface Emulator.

The emulator (``aws-lambda-rie``) is the binary the ``aws-sam-cli`` wheel ships; it is installed
in a tool venv of its own (``make .venv-tools/.installed``: aws-sam-cli pins boto3/click, which
must not reach the project's venv) and found through ``MLGATE_TOOLS_VENV`` (``make test`` sets
it), else ``<repo>/.venv-tools``. It runs the handler exactly as the Lambda base image does:
``aws-lambda-rie <python> -m awslambdaric mlgate.aws_lambda.handler`` (the base image's
entrypoint; ``awslambdaric`` is the project's dev dependency, so the runtime is this venv's
Python). The emulator starts the runtime on the first invocation — the cold start: import the
handler module, then the handler builds the application — and reuses it for the next ones.

:func:`run_lambda` starts one emulator as its own process group (emulator + runtime) on free
loopback ports, with the environment a Lambda container has (function name, memory, timeout,
region, task root) plus the function's variables, and kills the group on exit. Used by
tests/e2e/test_lambda_rie_e2e.py and bench/lambda_cold_start.py.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.services import free_port, missing_service, port_open

ROOT = Path(__file__).resolve().parent.parent
HANDLER = "mlgate.aws_lambda.handler"
SCHEMA_DB = "mlgate-schema.db"  # mlgate.aws_lambda.SCHEMA_DB, in the image's task root
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
REGION = "eu-west-1"


def tools_venv() -> Path:
    """The tool venv holding aws-sam-cli (``MLGATE_TOOLS_VENV``, else ``<repo>/.venv-tools``)."""
    configured = os.environ.get("MLGATE_TOOLS_VENV")
    return Path(configured) if configured else ROOT / ".venv-tools"


def rie_binary() -> Path | None:
    """The emulator binary for this machine's architecture inside the aws-sam-cli wheel, or None."""
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    if arch is None:
        return None
    found = sorted(tools_venv().glob(f"lib/python*/site-packages/samcli/local/rapid/aws-lambda-rie-{arch}"))
    return found[-1] if found and os.access(found[-1], os.X_OK) else None


def require_rie() -> Path:
    """The emulator binary; skips (fails under ``MLGATE_REQUIRE_SERVICES=1``) when it is missing."""
    binary = rie_binary()
    if binary is None:
        missing_service(
            f"the Lambda Runtime Interface Emulator is not installed in {tools_venv()} "
            "(make .venv-tools/.installed: aws-sam-cli's wheel ships it)"
        )
        raise AssertionError("unreachable")  # missing_service skips or fails
    try:
        import awslambdaric  # noqa: F401 — the runtime the emulator runs the handler with
    except ImportError:
        missing_service("awslambdaric is not installed (a dev dependency: pip install -e '.[dev]')")
    return binary


def lambda_environment(
    *,
    function_name: str,
    memory_mb: int,
    timeout_s: int,
    task_root: Path,
    variables: dict[str, str],
) -> dict[str, str]:
    """The environment of a Lambda container (python:3.11 base image) running this function.

    Not the caller's environment: a Lambda function sees only what the runtime sets and the
    function's own variables (no HOME, no MLGATE_* of the test run). The emulator adds the rest
    (AWS_LAMBDA_RUNTIME_API, the log group, empty credentials).
    """
    bin_dir = Path(sys.executable).parent
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout_s),
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
    }
    for name in ("SYSTEMROOT", "LD_LIBRARY_PATH"):  # the machine's, if any (not Lambda's)
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(variables)
    return env


def make_schema_db(path: Path) -> Path:
    """The registry at the newest schema the image carries, made as deploy/lambda/Dockerfile does."""
    subprocess.run(
        [sys.executable, "-m", "mlgate.aws_lambda", "schema", str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


@dataclass
class Invocation:
    """One invocation through the emulator: the handler's result and the client's wall time."""

    result: dict[str, Any]
    seconds: float

    @property
    def status(self) -> int:
        return int(self.result["statusCode"])


@dataclass
class LambdaEmulator:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: time.monotonic() just before the emulator was spawned (the cold start's origin)
    spawned_at: float
    invocations: list[Invocation] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def invoke(self, event: dict[str, Any], *, timeout: float = 120.0) -> Invocation:
        """POST ``event`` to the emulator's invoke endpoint: the handler's result as JSON."""
        request = urllib.request.Request(
            self.url + INVOKE_PATH,
            data=json.dumps(event).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        start = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(
                f"emulator answered {exc.code}: {exc.read()!r}\n{self.log()[-4000:]}"
            ) from exc
        seconds = time.monotonic() - start
        result = json.loads(raw)
        if not isinstance(result, dict) or "statusCode" not in result:
            raise AssertionError(f"the function failed: {result!r}\n{self.log()[-4000:]}")
        invocation = Invocation(result, seconds)
        self.invocations.append(invocation)
        return invocation

    def runtime_pids(self) -> list[int]:
        """The emulator's child processes (the runtime: one per container, kept while warm)."""
        children: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):
            try:
                children += [int(pid) for pid in (task / "children").read_text().split()]
            except OSError:  # a thread that just ended
                continue
        return sorted(set(children))

    def runtime_cpu_seconds(self) -> float:
        """CPU time (user + system, every thread) the runtime processes have used so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.runtime_pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return total

    def reports(self) -> list[str]:
        """The emulator's REPORT lines, one per invocation (``Init Duration`` on a cold start)."""
        return [line for line in self.log().splitlines() if line.startswith("REPORT RequestId:")]


@contextmanager
def run_lambda(
    workdir: Path,
    variables: dict[str, str],
    *,
    function_name: str = "mlgate-Function",
    memory_mb: int = 1024,
    timeout_s: int = 60,
    schema_db: Path | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[LambdaEmulator]:
    """The emulator running the handler with ``variables`` (the function's environment) on top
    of a Lambda container's; ``workdir`` holds the task root and the log. ``schema_db`` (from
    :func:`make_schema_db`) goes into the task root as the image's ``mlgate-schema.db``. The
    emulator and the runtime it starts are one process group, killed on exit."""
    binary = require_rie()
    port, api_port = free_port(), free_port()
    while api_port == port:
        api_port = free_port()
    task_root = workdir / "task"
    task_root.mkdir(parents=True, exist_ok=True)
    if schema_db is not None:
        shutil.copyfile(schema_db, task_root / SCHEMA_DB)
    log_path = workdir / "lambda.log"
    env = lambda_environment(
        function_name=function_name,
        memory_mb=memory_mb,
        timeout_s=timeout_s,
        task_root=task_root,
        variables=variables,
    )
    command = [
        str(binary),
        "--log-level",
        "error",
        "--runtime-interface-emulator-address",
        f"127.0.0.1:{port}",
        "--runtime-api-address",
        f"127.0.0.1:{api_port}",
        sys.executable,
        "-m",
        "awslambdaric",
        HANDLER,
    ]
    with log_path.open("ab") as log:
        spawned_at = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=task_root,  # /var/task in a Lambda container
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the runtime is killed with it
        )
    emulator = LambdaEmulator(f"http://127.0.0.1:{port}", process, log_path, spawned_at)
    try:
        deadline = time.monotonic() + startup_timeout
        while not port_open("127.0.0.1", port, timeout=0.2):
            if process.poll() is not None:
                raise RuntimeError(f"the emulator exited with {process.returncode}:\n{emulator.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the emulator did not listen within {startup_timeout} s:\n{emulator.log()}"
                )
            time.sleep(0.01)
        yield emulator
    finally:
        _kill_group(process)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the emulator's process group, then SIGKILL what is left of it (the runtime: as on
    Lambda without extensions, the handler gets no shutdown)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # the emulator is gone; anything left in the group (the runtime) goes too
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        break
    if process.poll() is None:
        process.wait(timeout=5)
