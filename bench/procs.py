"""Process plumbing for the bench: start a server in its own session, poll it until it answers
correctly (cold start), account its CPU and memory from /proc, stop it, run wrk.

Stdlib only. Everything is loopback-only and bounded in time.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
WRK_LUA = Path(__file__).parent / "wrk" / "post.lua"

Check = Callable[[int, bytes], str | None]  # (status, body) -> None when correct, else why not


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def post(
    port: int, path: str, body: bytes, headers: dict[str, str], *, timeout: float = 5.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get(port: int, path: str, *, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- /proc accounting ----------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def tree(root: int) -> set[int]:
    """``root``, every process in its session, and every descendant (by parent pid)."""
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                stats[int(entry)] = st
    sid = stats.get(root, [None, None, None, None])[3]
    members = {root} | {pid for pid, st in stats.items() if sid is not None and st[3] == sid}
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        children.setdefault(int(st[1]), []).append(pid)
    stack = list(members)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in members:
                members.add(child)
                stack.append(child)
    return {pid for pid in members if pid in stats}


def cpu_times(pids: set[int]) -> dict[int, float]:
    """user + system CPU seconds of each live pid."""
    out: dict[int, float] = {}
    for pid in pids:
        st = _stat(pid)
        if st is not None:
            out[pid] = (int(st[11]) + int(st[12])) / CLK_TCK
    return out


def memory_mb(pids: set[int]) -> dict[str, float]:
    """Summed RSS and PSS (proportional: shared pages split between the processes) in MB."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return {"rss_mb": rss / 1024, "pss_mb": pss / 1024, "processes": len(pids)}


# -- a server under test -------------------------------------------------------------------


@dataclass
class ServerSpec:
    """How to start one system and what a correct answer from it looks like."""

    key: str
    label: str
    command: Callable[[int], list[str]]  # port -> argv
    path: str
    body: bytes
    check: Check
    headers: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    workers: int = 1
    startup_timeout: float = 120.0
    unavailable: str | None = None  # why this system cannot run here (measured)


class Server:
    """A started :class:`ServerSpec`; ``cold_start_s`` = Popen → first correct answer."""

    def __init__(self, spec: ServerSpec, log_dir: Path) -> None:
        self.spec = spec
        self.port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{spec.key}-{self.port}.log"
        env = {**os.environ, **spec.env}
        with self.log_path.open("wb") as log:
            started = time.perf_counter()
            self.process = subprocess.Popen(
                spec.command(self.port),
                cwd=spec.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.cold_start_s = self._wait_correct(started)
        self._known: set[int] = set()

    def _wait_correct(self, started: float) -> float:
        deadline = started + self.spec.startup_timeout
        why = "no answer"
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.spec.key} exited with {self.process.returncode}: {self.tail()}")
            try:
                status, body = post(self.port, self.spec.path, self.spec.body, self.spec.headers, timeout=10)
            except OSError as exc:
                why = f"{type(exc).__name__}"
                time.sleep(0.02)
                continue
            problem = self.spec.check(status, body)
            if problem is None:
                return time.perf_counter() - started
            why = f"HTTP {status}: {problem}: {body[:300]!r}"
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.spec.key}: no correct answer within {self.spec.startup_timeout}s ({why})")

    def pids(self) -> set[int]:
        self._known |= tree(self.process.pid)
        return {p for p in self._known if Path(f"/proc/{p}").exists()}

    def tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        pids = self.pids() if self.process.poll() is None else set()
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
        # Helpers that left our session (Ray's daemons): end them by pid, ours only.
        deadline = time.monotonic() + 10
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = {p for p in pids if Path(f"/proc/{p}").exists()}
            for pid in alive:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            while alive and time.monotonic() < deadline:
                time.sleep(0.1)
                alive = {p for p in alive if Path(f"/proc/{p}").exists() and _stat(p) and _stat(p)[0] != "Z"}  # type: ignore[index]
            if not alive:
                break


# -- load ----------------------------------------------------------------------------------


def wrk(
    port: int,
    path: str,
    body_file: Path,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    server: Server | None = None,
    script: Path | None = None,
    script_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One bounded wrk run (1 thread: the load generator shares the 2 cores); server CPU per request.

    ``script`` replaces the default Lua script (``BENCH_BODY``/``BENCH_HEADERS``), with
    ``script_env`` for its own variables."""
    env = {
        **os.environ,
        "BENCH_BODY": str(body_file),
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or {}).items()),
        **(script_env or {}),
    }
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script or WRK_LUA),
        f"http://127.0.0.1:{port}{path}",
    ]
    load = loadavg()[0]
    before = cpu_times(server.pids()) if server else {}
    self_before = os.times()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 30, check=False)
    after = cpu_times(server.pids()) if server else {}
    self_after = os.times()
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    r: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    seconds_run = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / seconds_run if seconds_run else 0.0
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    cpu = sum(after[p] - before.get(p, 0.0) for p in after)
    r["server_cpu_s"] = cpu
    r["server_cpu_us_per_req"] = cpu / r["requests"] * 1e6 if r["requests"] else None
    r["wrk_cpu_s"] = (self_after.children_user + self_after.children_system) - (
        self_before.children_user + self_before.children_system
    )
    r["load1"] = load
    r["connections"] = connections
    return r


def start_ready(spec: ServerSpec, logs: Path, *, poll_s: float = 0.02) -> Server:
    """Start ``spec`` and wait until ``GET /readyz`` answers 200 (its first start timed)."""

    class _Ready(Server):
        def _wait_correct(self, started: float) -> float:
            deadline = started + self.spec.startup_timeout
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.spec.key} exited: {self.tail()}")
                try:
                    if get(self.port, "/readyz")[0] == 200:
                        return time.perf_counter() - started
                except OSError:
                    pass
                time.sleep(poll_s)
            self.stop()
            raise RuntimeError(f"{self.spec.key}: not ready: {self.tail()}")

    return _Ready(spec, logs)
