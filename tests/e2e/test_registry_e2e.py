"""End to end: push versions over HTTP, predict, move aliases under load with zero failures."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression

from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e
ADMIN = {"x-api-key": ADMIN_KEY}


def _skops_model(path: Path, factor: float) -> Path:
    x = np.arange(20, dtype=float).reshape(10, 2)
    model = LinearRegression().fit(x, factor * x.sum(axis=1))
    sio.dump(model, path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("e2e-registry")) as s:
        yield s


def _push(client: httpx.Client, name: str, path: Path, **form: str) -> httpx.Response:
    with path.open("rb") as f:
        return client.post(
            f"/v1/models/{name}/versions", files={"files": (path.name, f)}, data=form, headers=ADMIN
        )


def test_push_predict_and_alias_switch_under_load(server: ServerProcess, tmp_path: Path) -> None:
    with server.client() as client:
        r1 = _push(client, "doubler", _skops_model(tmp_path / "one.skops", 1.0), aliases="production")
        assert r1.status_code == 201, r1.text
        assert r1.json()["version"] == 1
        r2 = _push(client, "doubler", _skops_model(tmp_path / "two.skops", 2.0))
        assert r2.status_code == 201, r2.text
        assert r2.json()["version"] == 2
        assert client.post("/v1/models/doubler/predict", json=[1.0, 2.0]).json()["outputs"] == pytest.approx(
            3.0
        )
        pinned = client.post("/v1/models/doubler/versions/2/predict", json=[1.0, 2.0]).json()
        assert pinned["outputs"] == pytest.approx(6.0)

    failures: list[str] = []
    seen: Counter[int] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        with server.client() as c:
            while not stop.is_set():
                r = c.post("/v1/models/doubler/predict", json=[1.0, 2.0])
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                    continue
                body = r.json()
                expected = 3.0 * body["model_version"]
                if abs(body["outputs"] - expected) > 1e-6:
                    failures.append(f"v{body['model_version']} answered {body['outputs']}")
                seen[body["model_version"]] += 1

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        with server.client() as admin:
            for i in range(10):
                time.sleep(0.2)
                r = admin.put(
                    "/v1/models/doubler/aliases/production",
                    json={"version": 2 if i % 2 == 0 else 1},
                    headers=ADMIN,
                )
                assert r.status_code == 200, r.text
    finally:
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert seen[1] > 0 and seen[2] > 0, seen


def test_pickle_refused_and_canary_untouched(server: ServerProcess, tmp_path: Path) -> None:
    import pickle

    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(canary), "w"))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Evil()))
    with server.client() as client:
        r = _push(client, "evil", evil)
    assert r.status_code == 422
    assert "pickle" in r.json()["error"]["message"]
    assert not canary.exists()


def test_upload_validation(server: ServerProcess, tmp_path: Path) -> None:
    with server.client() as client:
        path = tmp_path / "x.unknown"
        path.write_bytes(b"x")
        r = _push(client, "weird", path)
        assert r.status_code == 400 and r.json()["error"]
        r = _push(client, "Bad Name", _skops_model(tmp_path / "m.skops", 1.0))
        assert r.status_code == 400
        r = _push(client, "okname", _skops_model(tmp_path / "m2.skops", 1.0), manifest="{not json")
        assert r.status_code == 400
        r = client.post("/v1/models/okname/versions", files={"files": ("m.skops", b"x")})
        assert r.status_code == 403  # a user key is not an admin key
        with server.client(key=False) as anonymous:
            r = anonymous.post("/v1/models/okname/versions", files={"files": ("m.skops", b"x")})
        assert r.status_code == 401
        bad = client.put("/v1/models/doubler/aliases/production", json={"version": 99}, headers=ADMIN)
        assert bad.status_code == 404
        bad = client.put("/v1/models/doubler/aliases/production", json={"version": "x"}, headers=ADMIN)
        assert bad.status_code == 400
