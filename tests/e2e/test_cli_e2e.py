"""End to end: the real ``mlgate`` CLI (subprocesses) against a real ``mlgate serve`` process."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression

from tests.server_process import ADMIN_KEY, ServerProcess, run_server
from tests.services import free_port

pytestmark = pytest.mark.e2e

SEED = [round(22.1 - i * (22.1 - 16.2) / 59, 1) for i in range(60)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("e2e-cli")) as s:
        yield s


def _fit(factor: float) -> LinearRegression:
    x = np.arange(20, dtype=float).reshape(10, 2)
    return LinearRegression().fit(x, factor * x.sum(axis=1))


def _skops_model(path: Path, factor: float) -> Path:
    sio.dump(_fit(factor), path)
    return path


def mlgate(
    server: ServerProcess, *args: str, api_key: str | None = ADMIN_KEY, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mlgate ARGS`` against ``server`` (plain, wide, uncoloured output)."""
    env = {
        **os.environ,
        "MLGATE_URL": server.url,
        "COLUMNS": "200",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "PYTHONIOENCODING": "utf-8",
    }
    env.pop("MLGATE_API_KEY", None)
    if api_key is not None:
        env["MLGATE_API_KEY"] = api_key
    return subprocess.run(
        [sys.executable, "-m", "mlgate", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def flat(text: str) -> str:
    """Whitespace collapsed, so that a line wrapped by Rich still matches."""
    return " ".join(text.split())


def prediction(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def test_models_list_shows_the_bundled_model(server: ServerProcess) -> None:
    out = ok(mlgate(server, "models", "list"))
    rows = [line for line in out.splitlines() if "temperatura" in line]
    assert len(rows) == 1, out
    assert "production→1" in rows[0]


def test_push_predict_alias_info(server: ServerProcess, tmp_path: Path) -> None:
    one = _skops_model(tmp_path / "one.skops", 1.0)
    out = ok(mlgate(server, "models", "push", "clisum", str(one), "--alias", "production"))
    assert "registered clisum v1 (sklearn)" in flat(out)
    assert prediction(mlgate(server, "predict", "clisum", "--json", "[1, 2]")) == {
        "model_name": "clisum",
        "model_version": 1,
        "outputs": pytest.approx(3.0),
    }

    two = _skops_model(tmp_path / "two.skops", 2.0)
    assert "registered clisum v2 (sklearn)" in flat(ok(mlgate(server, "models", "push", "clisum", str(two))))
    # Not aliased yet: production still answers with v1; v2 is reachable pinned (and from stdin/file).
    assert prediction(mlgate(server, "predict", "clisum", "--json", "[1, 2]"))["model_version"] == 1
    pinned = prediction(mlgate(server, "predict", "clisum", "--version", "2", "--json", "-", stdin="[1, 2]"))
    assert pinned["model_version"] == 2
    assert pinned["outputs"] == pytest.approx(6.0)

    # Promote v2, then roll back to v1, without restarting.
    promoted = ok(mlgate(server, "models", "alias", "clisum", "production", "2"))
    assert "clisum:production → v2" in flat(promoted)
    assert prediction(mlgate(server, "predict", "clisum", "--json", "[1, 2]"))["outputs"] == pytest.approx(6)
    rolled_back = ok(mlgate(server, "models", "alias", "clisum", "production", "1"))
    assert "clisum:production → v1" in flat(rolled_back)
    payload = tmp_path / "input.json"
    payload.write_text("[1, 2]")
    back = prediction(mlgate(server, "predict", "clisum", "--file", str(payload)))
    assert back["model_version"] == 1
    assert back["outputs"] == pytest.approx(3.0)

    info = json.loads(ok(mlgate(server, "models", "info", "clisum")))
    assert info["name"] == "clisum"
    assert info["aliases"] == {"production": 1}
    assert info["latest_version"] == 2
    assert [(v["version"], v["runtime"], v["artifact"]) for v in info["versions"]] == [
        (1, "sklearn", "one.skops"),
        (2, "sklearn", "two.skops"),
    ]
    assert [v["aliases"] for v in info["versions"]] == [["production"], []]

    listing = ok(mlgate(server, "models", "list"))
    assert any("clisum" in line and "production→1" in line for line in listing.splitlines()), listing


def test_predict_the_bundled_model(server: ServerProcess) -> None:
    body = prediction(mlgate(server, "predict", "temperatura", "--json", json.dumps({"temperaturas": SEED})))
    assert body["model_name"] == "temperatura"
    assert body["outputs"]["unidad"] == "Celsius"
    assert isinstance(body["outputs"]["prediccion"], float)


def test_pickle_refused_without_trusted(server: ServerProcess, tmp_path: Path) -> None:
    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(canary), "w"))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Evil()))
    result = mlgate(server, "models", "push", "clievil", str(evil))
    assert result.returncode != 0
    message = flat(result.stderr)
    assert "error 422" in message
    assert "pickle" in message
    assert "trusted" in message
    assert "Traceback" not in result.stderr
    assert not canary.exists()
    assert mlgate(server, "models", "info", "clievil").returncode != 0  # nothing was registered

    # The same format is accepted when the operator vouches for it.
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps(_fit(1.0)))
    out = ok(mlgate(server, "models", "push", "clipickle", str(good), "--trusted", "--alias", "production"))
    assert "registered clipickle v1" in flat(out)
    answer = prediction(mlgate(server, "predict", "clipickle", "--json", "[1, 2]"))
    assert answer["outputs"] == pytest.approx(3.0)


def test_wrong_or_missing_api_key_fails(server: ServerProcess, tmp_path: Path) -> None:
    model = _skops_model(tmp_path / "m.skops", 1.0)
    wrong = mlgate(server, "models", "push", "clinokey", str(model), api_key="mlg_wrong_" + "x" * 30)
    assert wrong.returncode != 0
    assert "error 403" in flat(wrong.stderr)
    wrong = mlgate(server, "models", "alias", "temperatura", "staging", "1", api_key="mlg_wrong_" + "x" * 30)
    assert wrong.returncode != 0
    assert "error 403" in flat(wrong.stderr)
    missing = mlgate(server, "models", "alias", "temperatura", "staging", "1", api_key=None)
    assert missing.returncode != 0
    assert "error 401" in flat(missing.stderr)
    assert "x-api-key" in flat(missing.stderr)
    assert mlgate(server, "models", "info", "clinokey").returncode != 0  # nothing was registered


def test_usage_errors_are_clear(server: ServerProcess) -> None:
    bad_json = mlgate(server, "predict", "temperatura", "--json", "{not json")
    assert bad_json.returncode == 2
    assert "input is not JSON" in flat(bad_json.stderr)
    unknown = mlgate(server, "predict", "nosuchmodel", "--json", "[1]")
    assert unknown.returncode == 1
    assert "error 404" in flat(unknown.stderr)
    wrong_count = mlgate(server, "predict", "temperatura", "--json", json.dumps({"temperaturas": SEED[:59]}))
    assert wrong_count.returncode == 1
    assert "Se requieren exactamente 60 valores de temperatura" in flat(wrong_count.stderr)


def test_unreachable_server_is_a_clear_error(server: ServerProcess) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    result = mlgate(server, "models", "list", "--url", down)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert down in flat(result.stderr)


# -- admin parity with the HTTP API (issue 14, part 5) -----------------------------------------


def cells(line: str) -> list[str]:
    """A table row's cells (Rich's box characters dropped)."""
    return [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]


def row_of(out: str, first: str) -> list[str]:
    return next(cells(line) for line in out.splitlines() if cells(line)[:1] == [first])


def _plans(server: ServerProcess) -> dict[str, dict[str, Any]]:
    import httpx

    body = httpx.get(f"{server.url}/v1/plans", headers={"x-api-key": ADMIN_KEY}, timeout=10).json()
    return {p["name"]: p for p in body["plans"]}


def test_plans_list_update_detach_delete(server: ServerProcess) -> None:
    ok(mlgate(server, "plans", "create", "cliplan", "--rate", "5", "--quota", "100", "--period", "day"))
    listing = ok(mlgate(server, "plans", "list"))
    assert row_of(listing, "cliplan") == ["cliplan", "5.0", "5", "100", "DAY", "0"], listing
    assert row_of(listing, "reference")[:6] == ["reference", "10.0", "10", "1000", "MONTH", "0"], listing

    updated = json.loads(
        ok(mlgate(server, "plans", "update", "cliplan", "--rate", "7", "--burst", "20", "--description", "x"))
    )
    assert (updated["rate"], updated["burst"], updated["quota_limit"], updated["description"]) == (
        7.0,
        20,
        100,
        "x",
    )
    no_quota = json.loads(ok(mlgate(server, "plans", "update", "cliplan", "--no-quota")))
    assert (no_quota["quota_limit"], no_quota["quota_period"], no_quota["rate"]) == (None, None, 7.0)
    assert _plans(server)["cliplan"]["burst"] == 20
    nothing = mlgate(server, "plans", "update", "cliplan")
    assert nothing.returncode == 2
    assert "nothing to change" in flat(nothing.stderr)

    created = ok(mlgate(server, "keys", "create", "--name", "planned", "--plan", "cliplan"))
    key_id = created.split("created key ")[1].split()[0]
    bad = mlgate(server, "plans", "update", "cliplan", "--no-rate")  # a user key would be unmetered
    assert bad.returncode == 1
    assert "error 400" in flat(bad.stderr)
    refused = mlgate(server, "plans", "delete", "cliplan")
    assert refused.returncode == 1
    assert "error 409" in flat(refused.stderr)
    assert "detach" in flat(refused.stderr)
    detached = ok(mlgate(server, "plans", "detach", "cliplan", key_id))
    assert f"key {key_id} detached from plan cliplan (scope *)" in flat(detached)
    again = mlgate(server, "plans", "detach", "cliplan", key_id)
    assert again.returncode == 1
    assert "error 404" in flat(again.stderr)
    assert "plan cliplan deleted" in flat(ok(mlgate(server, "plans", "delete", "cliplan")))
    assert "cliplan" not in _plans(server)
    assert mlgate(server, "plans", "delete", "cliplan").returncode == 1

    # admin only
    user_key = server.api_key
    for args in (
        ("plans", "list"),
        ("plans", "update", "reference", "--rate", "1"),
        ("plans", "delete", "x"),
    ):
        denied = mlgate(server, *args, api_key=user_key)
        assert denied.returncode == 1, args
        assert "error 403" in flat(denied.stderr), args


def test_keys_disable_enable_and_rotate_with_grace(server: ServerProcess) -> None:
    import httpx

    created = ok(mlgate(server, "keys", "create", "--name", "toggled", "--plan", "roomy"))
    key_id = created.split("created key ")[1].split()[0]
    secret = created.strip().splitlines()[-1]
    url = f"{server.url}/v1/models/temperatura/predict"
    body = {"temperaturas": SEED}

    def status(key: str) -> int:
        return httpx.post(url, json=body, headers={"x-api-key": key}, timeout=30).status_code

    assert status(secret) == 200
    assert f"key {key_id} disabled" in flat(ok(mlgate(server, "keys", "disable", key_id)))
    assert status(secret) == 403
    assert f"key {key_id} enabled" in flat(ok(mlgate(server, "keys", "enable", key_id)))
    assert status(secret) == 200
    row = row_of(ok(mlgate(server, "keys", "list")), key_id)
    assert row[1:3] == ["toggled", "user"], row
    assert "*: roomy" in row
    assert row[-1] == "False"

    rotated = ok(mlgate(server, "keys", "rotate", key_id, "--grace-seconds", "600"))
    new_secret = rotated.strip().splitlines()[-1]
    assert new_secret != secret
    assert status(new_secret) == 200
    assert status(secret) == 200  # the old secret still works during the overlap

    missing = mlgate(server, "keys", "enable", "deadbeef")
    assert missing.returncode == 1
    assert "error 404" in flat(missing.stderr)


def test_users_create_list_disable_enable(server: ServerProcess) -> None:
    import httpx

    created = ok(
        mlgate(
            server,
            "users",
            "create",
            "cliuser",
            "--password-stdin",
            "--email",
            "cli@x.io",
            "--first-name",
            "Cli",
            "--last-name",
            "User",
            stdin="correct horse 1\n",
        )
    )
    assert "created user cliuser (user)" in flat(created)
    admin = mlgate(server, "users", "create", "cliadmin", "--password", "another pass 12", "--role", "admin")
    assert "created user cliadmin (admin)" in flat(ok(admin))
    duplicate = mlgate(server, "users", "create", "cliuser", "--password", "correct horse 1")
    assert duplicate.returncode == 1
    assert "error 409" in flat(duplicate.stderr)

    assert row_of(ok(mlgate(server, "users", "list")), "cliuser") == [
        "cliuser",
        "user",
        "cli@x.io",
        "Cli User",
        "False",
    ]

    def login() -> int:
        form = {"username": "cliuser", "password": "correct horse 1"}
        return httpx.post(f"{server.url}/auth/token", data=form, timeout=30).status_code

    assert login() == 200
    assert "user cliuser disabled" in flat(ok(mlgate(server, "users", "disable", "cliuser")))
    assert login() == 401
    assert row_of(ok(mlgate(server, "users", "list")), "cliuser")[-1] == "True"
    assert "user cliuser enabled" in flat(ok(mlgate(server, "users", "enable", "cliuser")))
    assert login() == 200

    for args in (("users", "list"), ("users", "disable", "cliuser")):
        denied = mlgate(server, *args, api_key=server.api_key)
        assert denied.returncode == 1, args
        assert "error 403" in flat(denied.stderr), args
    missing = mlgate(server, "users", "enable", "nosuchuser")
    assert missing.returncode == 1
    assert "error 404" in flat(missing.stderr)
