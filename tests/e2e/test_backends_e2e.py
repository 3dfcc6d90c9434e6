"""End to end on the non-default backends: a real server on PostgreSQL + S3 (moto over HTTP).

Also the original serverless configuration: a model declared by ``MODEL_S3_URI`` alone,
downloaded once into the local cache, verified by sha256 and re-fetched when corrupted.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression

from mlgate_services.temperatura.service import service as temperatura_service
from tests.conftest import MotoServer
from tests.server_process import ADMIN_KEY, ServerProcess, run_server
from tests.services import POSTGRES_URL, postgres_schema

pytestmark = pytest.mark.e2e

ADMIN = {"x-api-key": ADMIN_KEY}
# The seed client's payload: 60 hourly readings, cooling from 22.1 °C to 16.2 °C.
SEED = [round(22.1 - i * (22.1 - 16.2) / 59, 1) for i in range(60)]
WRONG_COUNT = {"statusCode": 400, "body": {"error": "Se requieren exactamente 60 valores de temperatura"}}
ARTIFACT_DIR = Path(__file__).resolve().parents[2] / "src" / "mlgate_services" / "temperatura" / "artifact"
REFERENCE_MODEL = ARTIFACT_DIR / "model.skops"
STORE_PREFIX = "mlgate"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reference_prediction() -> float:
    """The committed artifact's raw answer to SEED, computed in-process (no server)."""
    estimator = sio.load(REFERENCE_MODEL, trusted=sio.get_untrusted_types(file=REFERENCE_MODEL))
    return float(estimator.predict(np.array([SEED]))[0])


@pytest.fixture(scope="module")
def reference() -> float:
    return _reference_prediction()


def _skops_model(path: Path, factor: float) -> Path:
    x = np.arange(20, dtype=float).reshape(10, 2)
    sio.dump(LinearRegression().fit(x, factor * x.sum(axis=1)), path)
    return path


def _push(client: httpx.Client, name: str, path: Path, **form: str) -> httpx.Response:
    with path.open("rb") as f:
        return client.post(
            f"/v1/models/{name}/versions", files={"files": (path.name, f)}, data=form, headers=ADMIN
        )


# -- PostgreSQL: a fresh schema per module ------------------------------------------------------


@pytest.fixture(scope="module")
def pg_schema_url() -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL whose search_path is a fresh schema ``e2e_<hex>``, that schema); dropped after."""
    with postgres_schema("e2e") as pair:
        yield pair


def _pg_rows(schema: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, options=f"-csearch_path={schema}") as conn:
        return list(conn.execute(sql).fetchall())


@pytest.fixture(scope="module")
def bucket(moto_server: MotoServer) -> str:
    return moto_server.ensure_bucket(f"e2e-{uuid.uuid4().hex[:12]}")


class Deployment:
    """One server process on PostgreSQL + S3 that a test may restart (on a fresh local data dir)."""

    def __init__(self, tmp: pytest.TempPathFactory, env: dict[str, str], schema: str) -> None:
        self._tmp = tmp
        self.env = env
        self.schema = schema
        self._stack = ExitStack()
        self.starts = 0
        self.server = self._start()

    def _start(self) -> ServerProcess:
        self.starts += 1
        data_dir = self._tmp.mktemp(f"e2e-backends-{self.starts}")
        return self._stack.enter_context(run_server(data_dir, env=self.env))

    def restart(self) -> ServerProcess:
        """Stop the server (SIGTERM, graceful) and start another one on the same PostgreSQL and S3."""
        self._stack.close()
        self._stack = ExitStack()
        self.server = self._start()
        return self.server

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    pg_schema_url: tuple[str, str],
    moto_server: MotoServer,
    bucket: str,
) -> Iterator[Deployment]:
    env = {
        **moto_server.env(),
        "MLGATE_DATABASE_URL": pg_schema_url[0],
        "MLGATE_STORE_URL": f"s3://{bucket}/{STORE_PREFIX}",
    }
    d = Deployment(tmp_path_factory, env, pg_schema_url[1])
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def client(deployment: Deployment) -> Iterator[httpx.Client]:
    with deployment.server.client() as c:
        yield c


def _bucket_keys(moto_server: MotoServer, bucket: str, prefix: str) -> set[str]:
    s3 = moto_server.client()
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}
    finally:
        s3.close()


def test_temperature_seed_contract_on_postgres_and_s3(client: httpx.Client, reference: float) -> None:
    r = client.post("/prod", json={"temperaturas": SEED})
    assert r.status_code == 200, r.text
    assert r.json() == {"statusCode": 200, "body": {"prediccion": round(reference, 2), "unidad": "Celsius"}}
    assert isinstance(r.json()["body"]["prediccion"], float)

    r = client.post("/prod", json={"temperaturas": SEED[:59]})
    assert r.status_code == 400
    assert r.json() == WRONG_COUNT


def test_state_lives_in_postgres_and_the_bucket(
    deployment: Deployment, client: httpx.Client, moto_server: MotoServer, bucket: str
) -> None:
    # Every file of the bundled artifact is a content-addressed blob in the bucket, byte for byte.
    bundled = temperatura_service().models[0]
    assert bundled.files is not None
    expected = {name: _sha256(ARTIFACT_DIR / name) for name in bundled.files}
    assert "model.onnx" in expected
    keys = _bucket_keys(moto_server, bucket, f"{STORE_PREFIX}/blobs/sha256/")
    for digest in expected.values():
        assert f"{STORE_PREFIX}/blobs/sha256/{digest}" in keys
    s3 = moto_server.client()
    try:
        body = s3.get_object(Bucket=bucket, Key=f"{STORE_PREFIX}/blobs/sha256/{expected['model.onnx']}")
        assert hashlib.sha256(body["Body"].read()).hexdigest() == expected["model.onnx"]
    finally:
        s3.close()

    detail = client.get("/v1/models/temperatura").json()
    [version] = detail["versions"]
    assert version["files"] == expected
    assert version["location"] == "content-addressed"

    # The registry is in the PostgreSQL schema; nothing went to the local defaults.
    rows = _pg_rows(deployment.schema, "SELECT name FROM models")
    assert ("temperatura",) in rows
    data_dir = deployment.server.data_dir
    assert not (data_dir / "mlgate.db").exists()
    assert not (data_dir / "store").exists()


def test_push_skops_over_http_to_s3(
    client: httpx.Client, tmp_path: Path, moto_server: MotoServer, bucket: str
) -> None:
    path = _skops_model(tmp_path / "triple.skops", 3.0)
    r = _push(client, "tripler", path, aliases="production")
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    p = client.post("/v1/models/tripler/predict", json=[1.0, 2.0])
    assert p.status_code == 200, p.text
    assert p.json()["model_version"] == 1
    assert p.json()["outputs"] == pytest.approx(9.0)
    assert f"{STORE_PREFIX}/blobs/sha256/{_sha256(path)}" in _bucket_keys(
        moto_server, bucket, f"{STORE_PREFIX}/blobs/sha256/"
    )


def test_restart_on_same_postgres_and_s3_keeps_everything(
    deployment: Deployment, tmp_path: Path, reference: float
) -> None:
    with deployment.server.client() as c:
        r = _push(c, "survivor", _skops_model(tmp_path / "s1.skops", 1.0), aliases="production")
        assert r.status_code == 201, r.text
        r = _push(c, "survivor", _skops_model(tmp_path / "s2.skops", 2.0), aliases="staging")
        assert r.status_code == 201, r.text
        before = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        before_versions = {
            name: [(v["version"], v["files"]) for v in c.get(f"/v1/models/{name}").json()["versions"]]
            for name in before
        }

    # A new process with an empty local data dir: everything must come back from PG + S3.
    server = deployment.restart()
    with server.client() as c:
        after = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert set(after) == set(before)
        for name, m in before.items():
            assert after[name]["latest_version"] == m["latest_version"], name
            assert after[name]["aliases"] == m["aliases"], name
            versions = [(v["version"], v["files"]) for v in c.get(f"/v1/models/{name}").json()["versions"]]
            assert versions == before_versions[name], name

        # The bundled model registered idempotently: still exactly version 1.
        temp = c.get("/v1/models/temperatura").json()
        assert [v["version"] for v in temp["versions"]] == [1]
        assert temp["aliases"] == {"production": 1}
        assert c.post("/prod", json={"temperaturas": SEED}).json() == {
            "statusCode": 200,
            "body": {"prediccion": round(reference, 2), "unidad": "Celsius"},
        }
        assert c.post("/v1/models/survivor/predict", json=[1.0, 2.0]).json()["outputs"] == pytest.approx(3.0)
        staged = c.post("/v1/models/survivor/versions/staging/predict", json=[1.0, 2.0]).json()
        assert staged["model_version"] == 2
        assert staged["outputs"] == pytest.approx(6.0)
    # The new process fetched the bundled files from the bucket into its own (fresh) cache.
    cached = list((server.data_dir / "cache" / "temperatura").glob("1-*/model.onnx"))
    assert [_sha256(p) for p in cached] == [_sha256(ARTIFACT_DIR / "model.onnx")]


# -- a model declared by URI alone (the original serverless configuration) ---------------------


def test_model_declared_by_s3_uri_alone(
    tmp_path: Path, moto_server: MotoServer, bucket: str, reference: float
) -> None:
    key = "models/modelo_temperatura.skops"
    s3 = moto_server.client()
    try:
        s3.upload_file(str(REFERENCE_MODEL), bucket, key)
    finally:
        s3.close()
    env = {**moto_server.env(), "MODEL_S3_URI": f"s3://{bucket}/{key}", "MODEL_NAME": "mitemp"}
    data_dir = tmp_path / "uri"
    digest = _sha256(REFERENCE_MODEL)

    def check(server: ServerProcess) -> None:
        with server.client() as c:
            detail = c.get("/v1/models/mitemp")
            assert detail.status_code == 200, detail.text
            body = detail.json()
            assert body["aliases"] == {"production": 1}
            assert body["loaded_versions"] == [1]
            [version] = body["versions"]
            assert version["version"] == 1
            assert version["runtime"] == "sklearn"
            assert version["files"] == {"modelo_temperatura.skops": digest}
            assert version["location"] == f"s3://{bucket}/models"
            r = c.post("/v1/models/mitemp/predict", json=SEED)
            assert r.status_code == 200, r.text
            assert r.json()["model_name"] == "mitemp"
            assert r.json()["model_version"] == 1
            assert r.json()["outputs"] == pytest.approx(reference, abs=1e-9)
            bad = c.post("/v1/models/mitemp/predict", json=SEED[:59])
            assert bad.status_code == 400
            assert "60" in bad.json()["error"]["message"]

    with run_server(data_dir, env=env) as server:
        check(server)
    [cached] = list((data_dir / "cache" / "mitemp").glob("1-*/modelo_temperatura.skops"))
    assert _sha256(cached) == digest

    # Corrupt the cached copy: the next load must notice (sha256) and download it again.
    cached.write_bytes(b"not a model at all")
    with run_server(data_dir, env=env) as server:
        check(server)
    assert _sha256(cached) == digest


def test_model_s3_uri_named_temperatura_serves_the_original_route(
    tmp_path: Path, moto_server: MotoServer, bucket: str, reference: float
) -> None:
    """``MODEL_S3_URI`` + ``MODEL_NAME=temperatura`` (the original Lambda's configuration) is what
    ``POST /prod`` serves, and a retrained file uploaded at the same URI serves after a restart."""
    key = "lambda/modelo_temperatura.skops"
    x = np.random.default_rng(0).normal(20.0, 5.0, size=(200, 60))
    mean_model = tmp_path / "mean.skops"  # a 60-hour mean: an answer unlike the bundled model's
    sio.dump(LinearRegression().fit(x, x.mean(axis=1)), mean_model)
    expected_mean = round(float(np.mean(SEED)), 2)
    assert expected_mean != round(reference, 2)
    env = {**moto_server.env(), "MODEL_S3_URI": f"s3://{bucket}/{key}", "MODEL_NAME": "temperatura"}
    data_dir = tmp_path / "lambda"
    s3 = moto_server.client()
    try:
        s3.upload_file(str(mean_model), bucket, key)
        with run_server(data_dir, env=env) as server, server.client() as c:
            r = c.post("/prod", json={"temperaturas": SEED})
            assert r.json() == {"statusCode": 200, "body": {"prediccion": expected_mean, "unidad": "Celsius"}}
            assert c.post("/prod", json={"temperaturas": SEED[:59]}).json() == WRONG_COUNT
            detail = c.get("/v1/models/temperatura").json()
            assert detail["aliases"] == {"production": 2}
            assert [(v["version"], v["location"]) for v in detail["versions"]] == [
                (1, "content-addressed"),
                (2, f"s3://{bucket}/lambda"),
            ]

        # A retrained model uploaded at the same URI: the next start registers and serves it.
        s3.upload_file(str(REFERENCE_MODEL), bucket, key)
        with run_server(data_dir, env=env) as server, server.client() as c:
            r = c.post("/prod", json={"temperaturas": SEED})
            assert r.json() == {
                "statusCode": 200,
                "body": {"prediccion": round(reference, 2), "unidad": "Celsius"},
            }
            detail = c.get("/v1/models/temperatura").json()
            assert detail["aliases"] == {"production": 3}
            assert [v["version"] for v in detail["versions"]] == [1, 2, 3]
    finally:
        s3.close()
