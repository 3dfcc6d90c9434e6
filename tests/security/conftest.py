"""Shared pieces of the reliability and security suite (the checks listed in docs/security.md).

- ``SOAK``: ``MLGATE_SOAK=1`` (``make soak``) runs the long loops at full length; CI runs
  shorter ones with the same assertions.
- :func:`record_figure`: each check reports the figures docs/security.md quotes. With
  ``MLGATE_SECURITY_FIGURES=<file>`` they are appended to that file as JSON lines.
- :class:`LoadClient`: keep-alive HTTP/1.1 connections over raw asyncio streams. httpx
  costs ~10x more CPU per request; on a 2-core machine the load generator would otherwise
  steal the server's CPU and the figures would measure the client.
- :func:`start_server`: :func:`tests.server_process.run_server` with this suite's defaults:
  no reference service, one small python-runtime model (``sleepy``) instead — a start
  then takes ~1.5 s instead of ~6 s, which matters for a suite that starts ~25 servers.
  The checks that are about a reference model ask for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from tests.server_process import ADMIN_KEY, ServerProcess, run_server
from tests.services import REDIS_URL, missing_service, postgres_schema

T = TypeVar("T")

#: Full-length loops (``make soak``); CI runs the short variants.
SOAK = os.environ.get("MLGATE_SOAK", "") not in ("", "0", "false")
ADMIN = {"x-api-key": ADMIN_KEY}
#: 60 hourly temperatures: a valid input of the temperature model.
SEED = [round(22.1 - i * 0.1, 1) for i in range(60)]
TEMPERATURE_PATH = "/v1/models/temperatura/predict"
TEMPERATURE_BODY = json.dumps({"temperaturas": SEED}).encode()
#: The suite's default model (see SLEEPY_MODEL) and an input that does not sleep.
PREDICT_PATH = "/v1/models/sleepy/predict"
PREDICT_BODY = b'{"sleep": 0}'
#: A Redis database of its own, so nothing here touches other suites' keys.
REDIS_DB = 13


# -- figures ------------------------------------------------------------------------------------


def record_figure(check: str, **values: Any) -> None:
    """Report a measured figure (printed with ``-s``; appended to $MLGATE_SECURITY_FIGURES)."""
    line = json.dumps({"check": check, "soak": SOAK, **values}, sort_keys=True)
    print(f"FIGURE {line}")
    target = os.environ.get("MLGATE_SECURITY_FIGURES")
    if target:
        with Path(target).open("a", encoding="utf-8") as f:
            f.write(line + "\n")


# -- servers and API helpers --------------------------------------------------------------------


@contextmanager
def start_server(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    services: tuple[str, ...] = (),
    sleepy: bool = True,
    sleepy_concurrency: int = 8,
    startup_timeout: float = 90.0,
) -> Iterator[ServerProcess]:
    """A real ``mlgate serve`` process with ``services`` and (unless ``sleepy=False``) the
    :data:`SLEEPY_MODEL`, pushed on the data directory's first start and loaded."""
    full = {"MLGATE_SERVICES": json.dumps(list(services)), **(env or {})}
    with run_server(data_dir, env=full, startup_timeout=startup_timeout) as server:
        if sleepy:
            push_sleepy_model(server, max_concurrency=sleepy_concurrency)
        yield server


def admin(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=ADMIN, timeout=30.0)


def create_plan(client: httpx.Client, **fields: Any) -> str:
    """Create a plan with a unique name; return the name."""
    name = f"p{uuid.uuid4().hex[:10]}"
    r = client.post("/v1/plans", json={"name": name, **fields}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return name


def create_key(client: httpx.Client, *, plan: str | None = None, **fields: Any) -> dict[str, Any]:
    """Create an API key (admin); the answer has ``id`` and the secret ``key``."""
    body = {"name": "security", **fields, **({"plan": plan} if plan else {})}
    r = client.post("/v1/keys", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def create_user_token(client: httpx.Client, username: str, password: str) -> str:
    """Sign up ``username`` and log in: a bearer token."""
    r = client.post("/auth/create_user", json={"username": username, "password": password})
    assert r.status_code == 201, r.text
    r = client.post("/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


#: A python-runtime model whose predict sleeps ``item["sleep"]`` seconds per item: the
#: stand-in for inference that runs outside the event loop and the GIL (native code, a GPU).
SLEEPY_MODEL = """
import time


class Model:
    def decode(self, payload):
        sleep = payload.get("sleep", 0) if isinstance(payload, dict) else None
        if isinstance(sleep, bool) or not isinstance(sleep, (int, float)) or not 0 <= sleep <= 10:
            raise ValueError('send {"sleep": seconds}, 0 to 10')
        return float(sleep)

    def predict(self, batch):
        for seconds in batch:
            time.sleep(seconds)
        return [{"slept": seconds} for seconds in batch]
"""


def push_sleepy_model(server: ServerProcess, *, name: str = "sleepy", max_concurrency: int = 8) -> None:
    """Upload :data:`SLEEPY_MODEL` (trusted ``.py``, one item per batch) unless it is already
    registered, alias it ``production``, and load it with one call."""
    manifest = {
        "runtime": "python",
        "artifact": "sleepy.py",
        "trusted": True,
        "timeout_s": 30,
        "batching": {"max_batch_size": 1, "max_concurrency": max_concurrency},
    }
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30.0) as c:
        if c.get(f"/v1/models/{name}").status_code == 200:  # pushed on an earlier start
            assert c.post(f"/v1/models/{name}/predict", json={"sleep": 0}).status_code == 200
            return
        r = c.post(
            f"/v1/models/{name}/versions",
            files={"files": ("sleepy.py", SLEEPY_MODEL.encode())},
            data={"manifest": json.dumps(manifest), "aliases": "production"},
        )
        assert r.status_code == 201, r.text
        warm = c.post(f"/v1/models/{name}/predict", json={"sleep": 0})
        assert warm.status_code == 200, warm.text


# -- external services --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> str:
    """A reachable Redis database reserved for this suite (keys are deleted by their tests)."""
    import redis

    parts = urlsplit(REDIS_URL)
    url = f"{parts.scheme}://{parts.netloc}/{REDIS_DB}"
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        missing_service(f"Redis unreachable at {url}: {exc}")
    finally:
        client.close()
    return url


def delete_redis_keys(url: str, pattern: str) -> int:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        names = list(client.scan_iter(match=pattern, count=500))
        return int(client.delete(*names)) if names else 0
    finally:
        client.close()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL whose search_path is a fresh schema, dropped afterwards."""
    with postgres_schema("sec") as (url, _):
        yield url


# -- a lean HTTP/1.1 load client ----------------------------------------------------------------


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a fresh event loop (uvloop when installed, as the server uses)."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(factory())


@dataclass(slots=True)
class Reply:
    """One answer (``status`` 0: no answer — refused, reset or timed out; see ``error``)."""

    status: int
    sent: float  # time.perf_counter() before the request was written
    received: float  # time.perf_counter() when the answer was complete (or failed)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""

    @property
    def latency(self) -> float:
        return self.received - self.sent

    def json(self) -> Any:
        return json.loads(self.body)


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            body = b"".join(chunks)
        else:
            body = await self.reader.read()
            headers["connection"] = "close"
        return status, headers, body


class LoadClient:
    """Up to ``connections`` keep-alive connections to ``url``; use inside ``async with``.

    Far cheaper per request than httpx (no per-request objects beyond bytes), so a 2-core
    machine spends its CPU on the server under test, not on the client.
    """

    def __init__(self, url: str, *, connections: int, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.host, self.port = parts.hostname, parts.port
        self.timeout = timeout
        self._slots = asyncio.Semaphore(connections)
        self._size = connections
        self._idle: list[_Conn] = []

    async def __aenter__(self) -> LoadClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def warm(self, path: str = "/healthz") -> None:
        """Open every connection now, so connection setup is not part of a measurement."""
        replies = await asyncio.gather(*(self.request("GET", path) for _ in range(self._size)))
        assert all(r.status == 200 for r in replies), {r.status for r in replies}

    def encode(
        self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> bytes:
        lines = [
            f"{method} {path} HTTP/1.1",
            f"host: {self.host}:{self.port}",
            f"content-length: {len(body)}",
        ]
        if body:
            lines.append("content-type: application/json")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Reply:
        request = raw if raw is not None else self.encode(method, path, body=body, headers=headers)
        async with self._slots:
            sent = time.perf_counter()
            conn = self._idle.pop() if self._idle else None
            try:
                if conn is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port, limit=1 << 20), self.timeout
                    )
                    conn = _Conn(reader, writer)
                status, headers_in, data = await asyncio.wait_for(conn.exchange(request), self.timeout)
            except (
                OSError,
                ValueError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                TimeoutError,
            ) as exc:
                if conn is not None:
                    conn.close()
                return Reply(0, sent, time.perf_counter(), error=f"{type(exc).__name__}: {exc}")
            received = time.perf_counter()
            if headers_in.get("connection", "").lower() == "close":
                conn.close()
            else:
                self._idle.append(conn)
            return Reply(status, sent, received, headers_in, data)
