"""End to end: an alias's canary split over real HTTP against a real server.

- a 90/10 split over 2,000 calls from 200 API keys lands within ±3 % of 10 %, every key always
  sees the same version, answers name the version that answered (body and ``X-Model-Version``);
- an admin pins a version with ``X-Mlgate-Version``; anyone else sending it gets a 403;
- a canary that fails 20 % of its requests is rolled back to weight 0 by the guard, with a
  ``rollback`` event in the model's history, the counter the built-in alert watches, and the
  alert itself firing; afterwards every caller is answered by the stable version;
- moving the alias ends the split; a version in a split or a shadow cannot be deleted.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e
ADMIN = {"x-api-key": ADMIN_KEY}

#: y = factor * sum(x); the flaky one raises on a fifth of its inputs (x[0] % 5 == 0), one
#: item per batch in these tests (sequential calls), so exactly those requests fail.
MODEL = """
class Model:
    def predict(self, batch):
        out = []
        for x in batch:
            if FLAKY and int(x[0]) % 5 == 0:
                raise RuntimeError("canary failure")
            out.append(FACTOR * float(sum(x)))
        return out
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"MLGATE_ALERTS__INTERVAL_S": "0.5", "MLGATE_ALERTS__SNAPSHOT_S": "0.2"}
    with run_server(tmp_path_factory.mktemp("e2e-canary"), env=env) as s:
        yield s


def _push(
    client: httpx.Client, tmp: Path, name: str, factor: float, *, flaky: bool = False, alias: str = ""
) -> int:
    artifact = tmp / f"{name}-{factor}-{flaky}.py"
    artifact.write_text(f"FACTOR = {factor}\nFLAKY = {flaky}\n" + MODEL)
    manifest = json.dumps({"runtime": "python", "artifact": artifact.name, "trusted": True})
    with artifact.open("rb") as f:
        r = client.post(
            f"/v1/models/{name}/versions",
            files={"files": (artifact.name, f)},
            data={"manifest": manifest, "aliases": alias},
            headers=ADMIN,
        )
    assert r.status_code == 201, r.text
    return int(r.json()["version"])


def _keys(client: httpx.Client, n: int) -> list[str]:
    keys = []
    for i in range(n):
        r = client.post("/v1/keys", json={"name": f"customer-{i}", "plan": "roomy"}, headers=ADMIN)
        assert r.status_code == 201, r.text
        keys.append(r.json()["key"])
    return keys


def test_a_90_10_split_is_sticky_per_key_and_lands_on_its_weights(
    server: ServerProcess, tmp_path: Path
) -> None:
    with server.client(key=False) as client:
        stable = _push(client, tmp_path, "splitter", 1.0, alias="production")
        canary = _push(client, tmp_path, "splitter", 2.0)
        split = client.put(
            "/v1/models/splitter/aliases/production/split",
            json={"weights": {str(stable): 90, str(canary): 10}, "guard": {"enabled": False}},
            headers=ADMIN,
        )
        assert split.status_code == 200, split.text
        assert split.json()["split"] == {str(stable): 90, str(canary): 10}
        assert split.json()["canaries"] == [canary]
        keys = _keys(client, 200)

        def calls(key: str) -> list[tuple[int, str, float]]:
            out = []
            with httpx.Client(base_url=server.url, timeout=30.0, headers={"x-api-key": key}) as c:
                for i in range(10):
                    r = c.post("/v1/models/splitter/predict", json=[1.0, float(i)])
                    assert r.status_code == 200, r.text
                    body = r.json()
                    out.append((body["model_version"], r.headers["x-model-version"], body["outputs"]))
            return out

        with ThreadPoolExecutor(8) as pool:
            answers = dict(zip(keys, pool.map(calls, keys), strict=True))

        seen: dict[str, set[int]] = defaultdict(set)
        per_version: Counter[int] = Counter()
        for key, rows in answers.items():
            for i, (version, header, output) in enumerate(rows):
                assert header == str(version)
                factor = 1.0 if version == stable else 2.0
                assert output == pytest.approx(factor * (1.0 + i))  # the version named answered
                seen[key].add(version)
                per_version[version] += 1
        assert all(len(v) == 1 for v in seen.values()), "a key saw two versions"
        assert sum(per_version.values()) == 2000
        assert abs(per_version[canary] / 2000 - 0.10) <= 0.03, per_version

        # An admin pins a version for testing; a customer may not.
        pinned = client.post(
            "/v1/models/splitter/predict", json=[1.0, 1.0], headers={**ADMIN, "x-mlgate-version": str(canary)}
        )
        assert pinned.status_code == 200 and pinned.json()["model_version"] == canary
        refused = client.post(
            "/v1/models/splitter/predict",
            json=[1.0, 1.0],
            headers={"x-api-key": keys[0], "x-mlgate-version": "1"},
        )
        assert refused.status_code == 403
        assert "admin" in refused.text

        # Shown in the model's info and history; a version in the split cannot be deleted.
        info = client.get("/v1/models/splitter", headers=ADMIN).json()
        assert info["policies"]["production"]["split"] == {str(stable): 90, str(canary): 10}
        assert client.delete(f"/v1/models/splitter/versions/{canary}", headers=ADMIN).status_code == 409

        # Moving the alias ends the split: everyone on the new version.
        moved = client.put("/v1/models/splitter/aliases/production", json={"version": canary}, headers=ADMIN)
        assert moved.status_code == 200, moved.text
        after = client.get("/v1/models/splitter/aliases/production", headers=ADMIN).json()
        assert after == {"model": "splitter", "alias": "production", "version": canary}
        for key in keys[:20]:
            r = client.post("/v1/models/splitter/predict", json=[1.0, 1.0], headers={"x-api-key": key})
            assert r.json()["model_version"] == canary
        history = client.get("/v1/models/splitter/history", headers=ADMIN)
        if history.status_code == 200:  # the history route is part of this lifecycle routes
            kinds = [e["kind"] for e in history.json()["events"]]
            assert kinds[:2] == ["alias", "split"]


def test_a_failing_canary_is_rolled_back_by_itself(server: ServerProcess, tmp_path: Path) -> None:
    with server.client(key=False) as client:
        stable = _push(client, tmp_path, "flaky", 1.0, alias="production")
        canary = _push(client, tmp_path, "flaky", 2.0, flaky=True)
        guard = {"min_requests": 30, "max_error_rate_delta": 0.05, "max_p95_ratio": 1000}
        r = client.put(
            "/v1/models/flaky/aliases/production/split",
            json={"weights": {str(stable): 50, str(canary): 50}, "guard": guard},
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        keys = _keys(client, 20)
        statuses: Counter[tuple[int, int]] = Counter()
        rolled_back = False
        for i in range(1000):
            key = keys[i % len(keys)]
            answer = client.post("/v1/models/flaky/predict", json=[float(i), 0.0], headers={"x-api-key": key})
            version = int(answer.headers.get("x-model-version", "0") or 0)
            statuses[(version, answer.status_code)] += 1
            if i % 20 == 19:
                policy = client.get("/v1/models/flaky/aliases/production", headers=ADMIN).json()
                if policy["split"][str(canary)] == 0:
                    rolled_back = True
                    break
        assert rolled_back, statuses
        assert policy["split"] == {str(stable): 100, str(canary): 0}
        assert statuses[(stable, 500)] == 0  # only the canary failed

        # Everyone is back on the stable version.
        time.sleep(1.2)  # alias_ttl_s
        for key in keys:
            r = client.post("/v1/models/flaky/predict", json=[5.0, 0.0], headers={"x-api-key": key})
            assert r.status_code == 200 and r.json()["model_version"] == stable

        metrics = httpx.get(f"{server.url}/metrics").text
        assert (
            f'mlgate_canary_rollbacks_total{{alias="production",model="flaky",version="{canary}"}} 1.0'
            in metrics
        )

        deadline = time.monotonic() + 30
        firing: list[dict[str, object]] = []
        while time.monotonic() < deadline and not firing:
            alerts = client.get("/v1/alerts", headers=ADMIN).json()
            firing = [
                a
                for a in alerts.get("alerts", [])
                if a.get("labels", {}).get("alertname") == "MlgateCanaryRolledBack"
                and a.get("labels", {}).get("model") == "flaky"
            ]
            time.sleep(0.3)
        assert firing, alerts

        history = client.get("/v1/models/flaky/history", headers=ADMIN)
        if history.status_code == 200:
            rollback = [e for e in history.json()["events"] if e["kind"] == "rollback"]
            assert len(rollback) == 1
            assert rollback[0]["version"] == canary
            assert "error rate" in rollback[0]["detail"]["reason"]
            assert rollback[0]["detail"]["canary_requests"] >= 30
