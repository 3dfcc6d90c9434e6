"""mlgate's gateway in front of Ray Serve, on a real two-node Ray cluster on this machine.

Run by ``make soak-ray`` (``make soak``) in its own venv (``.venv-ray``: ``mlgate[ray]``), never by
``make test``. The module starts ``ray start --head`` + a second ``ray start --address`` (1 CPU
each), deploys the reference temperatura (2 replicas, at most 1 per node) and intrusos (autoscaling
2..3) with ``mlgate ray deploy``, and starts two mlgate servers on the same machine: the gateway
(``MLGATE_RAY__ADDRESS``, PostgreSQL registry in a fresh schema, Redis limiter, 2 worker processes)
and a single-process mlgate (SQLite) to compare answers with. Exact behaviour only: no timing.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("ray", reason="make soak runs it: pip install mlgate[ray]")

from tests.ray_cluster.cluster import RayCluster
from tests.server_process import ADMIN_KEY, ServerProcess, run_server
from tests.services import REDIS_URL, missing_service, port_open, postgres_schema

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

SEED = [round(22.1 - i * (22.1 - 16.2) / 59, 1) for i in range(60)]
SERVICES = '["temperatura","intrusos"]'
TEMPERATURA_REPLICAS = 2
AUTOSCALING = {"min_replicas": 2, "max_replicas": 3, "target_ongoing_requests": 32}
ADMIN = {"x-api-key": ADMIN_KEY}


def _photo(name: str) -> bytes:
    from PIL import Image
    from skimage import data

    images = {"person": data.astronaut, "cat": data.chelsea}
    buffer = io.BytesIO()
    Image.fromarray(images[name]()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    log = tmp_path_factory.mktemp("ray-cluster") / "cluster.log"
    ray = RayCluster(log=log).start()
    try:
        yield ray
    finally:
        left = ray.stop()
        assert left == [], f"ray processes left after ray stop: {left}"


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    with postgres_schema("ray") as (url, _schema):
        yield url


@pytest.fixture(scope="module")
def shared_env(
    tmp_path_factory: pytest.TempPathFactory, registry: str, cluster: RayCluster
) -> dict[str, str]:
    """What the deployer, the replicas and the gateway share: registry, store, the cluster."""
    if not port_open("127.0.0.1", 6379):
        missing_service("Redis unreachable at 127.0.0.1:6379")
    store = tmp_path_factory.mktemp("ray-store")
    return {
        "MLGATE_DATABASE_URL": registry,
        "MLGATE_STORE_URL": store.resolve().as_uri(),
        "MLGATE_SERVICES": SERVICES,
        "MLGATE_ADMIN_KEY": ADMIN_KEY,
        "MLGATE_RAY__ADDRESS": cluster.address,
        "MLGATE_RAY__NUM_CPUS": "0.5",  # 2 models x 2 replicas on 2 one-CPU nodes
        "MLGATE_RAY__MAX_REPLICAS_PER_NODE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def _mlgate(args: list[str], env: dict[str, str], data_dir: Path, timeout: float = 600) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mlgate", *args],
        env={**os.environ, **env, "MLGATE_DATA_DIR": str(data_dir), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"mlgate {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, shared_env: dict[str, str]) -> dict[str, Any]:
    """Both models deployed; ``mlgate ray status`` afterwards (JSON)."""
    data = tmp_path_factory.mktemp("ray-deployer")
    _mlgate(["ray", "deploy", "temperatura", "--replicas", str(TEMPERATURA_REPLICAS)], shared_env, data)
    _mlgate(["ray", "deploy", "intrusos", "--autoscaling", json.dumps(AUTOSCALING)], shared_env, data)
    status: dict[str, Any] = json.loads(_mlgate(["ray", "status"], shared_env, data))
    return status


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, shared_env: dict[str, str], deployed: dict[str, Any]
) -> Iterator[ServerProcess]:
    env = {**shared_env, "MLGATE_LIMITER__URL": REDIS_URL, "MLGATE_WORKERS": "2"}
    with run_server(tmp_path_factory.mktemp("ray-gateway"), env=env, startup_timeout=180) as s:
        yield s


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Single-process mlgate (its own SQLite registry): the answers to compare with."""
    env = {"MLGATE_SERVICES": SERVICES}
    with run_server(tmp_path_factory.mktemp("ray-single"), env=env, startup_timeout=180) as s:
        yield s


def _both(
    gateway: ServerProcess, single: ServerProcess, method: str, path: str, **kw: Any
) -> tuple[Any, Any]:
    with gateway.client() as g, single.client() as s:
        return g.request(method, path, **kw), s.request(method, path, **kw)


# -- the cluster and the deployments -------------------------------------------------------------


def test_replicas_run_on_both_nodes(deployed: dict[str, Any]) -> None:
    apps = deployed["applications"]
    assert set(apps) == {"mlgate-temperatura", "mlgate-intrusos"}
    for name, app in apps.items():
        assert app["status"] == "RUNNING", (name, app)
        assert app["route_prefix"] is None  # not reachable through any Serve HTTP route
        (deployment,) = app["deployments"].values()
        assert deployment["status"] == "HEALTHY", (name, deployment)
        running = [r for r in deployment["replicas"] if r["state"] == "RUNNING"]
        assert len(running) == 2, (name, deployment["replicas"])
        assert len({r["node_id"] for r in running}) == 2, f"{name}: replicas on one node: {running}"


def test_serve_http_proxy_is_off(deployed: dict[str, Any]) -> None:
    # Ray Serve's own HTTP proxy has no authentication: mlgate never starts it
    assert deployed["proxy_location"] == "Disabled"
    assert deployed["proxies"] == []


def test_scaling_settings_are_applied(deployed: dict[str, Any]) -> None:
    (temperatura,) = deployed["applications"]["mlgate-temperatura"]["deployments"].values()
    assert temperatura["num_replicas"] == TEMPERATURA_REPLICAS
    assert temperatura["autoscaling_config"] is None
    assert temperatura["max_replicas_per_node"] == 1
    assert temperatura["ray_actor_options"]["num_cpus"] == 0.5
    (intrusos,) = deployed["applications"]["mlgate-intrusos"]["deployments"].values()
    scaling = intrusos["autoscaling_config"]
    assert scaling is not None
    assert {k: scaling[k] for k in AUTOSCALING} == AUTOSCALING
    assert intrusos["max_ongoing_requests"] == 64  # MLGATE_RAY__MAX_ONGOING_REQUESTS' default


# -- through the gateway -------------------------------------------------------------------------


def test_gateway_serves_every_model_remotely(gateway: ServerProcess) -> None:
    ready = httpx.get(f"{gateway.url}/readyz", timeout=30).json()
    assert ready["status"] == "ready", ready
    assert sorted(ready["loaded"]) == ["intrusos:1", "temperatura:1"]


def test_predictions_equal_single_process(gateway: ServerProcess, single: ServerProcess) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/prod", {"json": {"temperaturas": SEED}}),
        ("/v1/models/temperatura/predict", {"json": {"temperaturas": SEED}}),
        ("/v1/models/temperatura/versions/1/predict", {"json": {"temperaturas": SEED[::-1]}}),
        (
            "/v2/models/temperatura/infer",
            {
                "json": {
                    "inputs": [
                        {"name": "temperaturas", "shape": [2, 60], "datatype": "FP64", "data": SEED * 2}
                    ]
                }
            },
        ),
        ("/prodfaces", {"json": {"body": {"image": base64.b64encode(_photo("person")).decode()}}}),
        ("/v1/models/intrusos/predict", {"json": {"image": base64.b64encode(_photo("cat")).decode()}}),
        (
            "/v1/models/temperatura/batch",
            {"json": {"inputs": [{"temperaturas": SEED}, {"temperaturas": [1]}]}},
        ),
    ]
    for path, kw in calls:
        g, s = _both(gateway, single, "POST", path, **kw)
        assert g.status_code == s.status_code == 200, (path, g.text, s.text)
        assert g.json() == s.json(), path
    detected = _both(gateway, single, "POST", "/prodfaces", **calls[4][1])[0].json()["body"]
    assert detected["objetos"][0]["clase"] == "person"  # the detector really ran in a replica


@pytest.mark.parametrize("key", [None, "mlg_00000000_" + "x" * 43])
def test_no_key_is_refused_by_the_gateway(
    gateway: ServerProcess, single: ServerProcess, key: str | None
) -> None:
    """No key (or an unknown one): refused by the gateway exactly as by single-process mlgate
    (API Gateway's answers), before any Ray call; Ray Serve itself would check nothing."""
    headers = {"x-api-key": key} if key else {}
    seed = {"temperaturas": SEED}
    v2 = {"inputs": [{"name": "temperaturas", "shape": [1, 60], "datatype": "FP64", "data": SEED}]}
    bodies = {"/v1/models/temperatura/predict": seed, "/prod": seed, "/prodfaces": seed}
    for path, body in {**bodies, "/v2/models/temperatura/infer": v2}.items():
        with httpx.Client(base_url=gateway.url, timeout=30) as g, httpx.Client(base_url=single.url) as s:
            a = g.post(path, json=body, headers=headers)
            b = s.post(path, json=body, headers=headers)
        assert a.status_code == b.status_code, (path, a.text, b.text)
        assert a.status_code in (401, 403), (path, a.text)
        assert a.json() == b.json()


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/prod", json.dumps({"temperaturas": SEED[:59]})),
        ("/prod", '{"temperaturas": [' + ",".join(["1e309"] * 60) + "]}"),
        ("/prod", "not json"),
        ("/v1/models/temperatura/predict", '{"temperaturas": "hola"}'),
        ("/v1/models/temperatura/predict", '{"temperaturas": [' + ",".join(["NaN"] * 60) + "]}"),
        ("/v1/models/temperatura/versions/99/predict", json.dumps({"temperaturas": SEED})),
        ("/v1/models/nadie/predict", json.dumps({"temperaturas": SEED})),
        ("/prodfaces", json.dumps({"body": {"image": base64.b64encode(b"not an image").decode()}})),
        ("/v1/models/intrusos/predict", json.dumps({"image": 7})),
        (
            "/v2/models/temperatura/infer",
            json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}),
        ),
    ],
)
def test_model_errors_map_to_the_same_answer(
    gateway: ServerProcess, single: ServerProcess, path: str, raw: str
) -> None:
    g, s = _both(gateway, single, "POST", path, content=raw, headers={"content-type": "application/json"})
    assert 400 <= g.status_code < 500, (path, g.status_code, g.text)
    assert (g.status_code, g.json()) == (s.status_code, s.json()), path


def test_burst_is_global_and_exact(gateway: ServerProcess) -> None:
    """A key on a plan with burst N, hit concurrently through both gateway processes: exactly N
    are served, the rest 429 — the limit is mlgate's (Redis), Ray Serve has none."""
    burst, calls = 6, 20
    with httpx.Client(base_url=gateway.url, headers=ADMIN, timeout=30) as admin:
        assert (
            admin.post("/v1/plans", json={"name": "ray-burst", "rate": 0.001, "burst": burst}).status_code
            == 201
        )
        created = admin.post("/v1/keys", json={"name": "ray-burst", "plan": "ray-burst"})
        assert created.status_code == 201, created.text
    key = created.json()["key"]
    start = threading.Barrier(calls)

    def call(_: int) -> int:
        with httpx.Client(base_url=gateway.url, timeout=60) as c:  # a connection each: both workers
            start.wait()
            return c.post("/prod", json={"temperaturas": SEED}, headers={"x-api-key": key}).status_code

    with ThreadPoolExecutor(calls) as pool:
        statuses = list(pool.map(call, range(calls)))
    assert statuses.count(200) == burst, statuses
    assert statuses.count(429) == calls - burst, statuses
