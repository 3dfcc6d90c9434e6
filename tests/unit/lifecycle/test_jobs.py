"""Train jobs (lifecycle/jobs.py) with a stand-in child process: the request checks, one run at a
time per model, the end recorded (row, ``train`` event, key disabled, lease released), a failing
or silent child, a run whose process died. The real child (``mlgate train`` against a server) is
covered end to end (tests/e2e/test_train_jobs_e2e.py)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from mlgate.access.keys import KeyStore
from mlgate.access.plans import PlanStore, ensure_builtin_plans
from mlgate.db.tables import train_runs
from mlgate.errors import Conflict, Forbidden, InvalidInput, NotFound
from mlgate.history import model_history
from mlgate.lifecycle.jobs import TrainJobs, TrainRequest, _lease_name, check_recipe, parse_request
from mlgate.monitoring.lease import Lease
from mlgate.repository import Repository
from mlgate.settings import Settings, TrainSettings

#: The stand-in child: checks it got its key by environment only, waits for a file named in
#: params (to hold the run), then prints a progress line, some noise and a report (or fails).
CHILD = r"""
import json, os, sys, time
spec = json.loads(os.environ["MLGATE_TRAIN_SPEC"])
key = os.environ["MLGATE_TRAIN_KEY"]
assert key.startswith("mlg_") and not any(key in a for a in sys.argv)
assert "MLGATE_ADMIN_KEY" not in os.environ
params = spec["params"]
print(json.dumps({"mlgate-train": "progress", "phase": "training", "done": 0, "total": 1}), flush=True)
deadline = time.monotonic() + 20
while params.get("hold") and not os.path.exists(params["hold"]) and time.monotonic() < deadline:
    time.sleep(0.02)
print("some recipe noise", flush=True)
if params.get("fail"):
    print("Traceback: boom", flush=True)
    sys.exit(3)
report = {"model": spec["model"], "decision": "keep", "reason": "candidate worse", "registered": 7,
          "promoted": False, "current_version": 1, "quality": {"test": "mcnemar", "p_value": 0.9}}
print(json.dumps({"mlgate-train": "report", "report": report}), flush=True)
"""


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    repo = Repository.open(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield repo.engine
    repo.close()


def make_jobs(db: Engine, tmp_path: Path, **train: Any) -> TrainJobs:
    settings = Settings(data_dir=tmp_path, train=TrainSettings(**{"heartbeat_s": 0.05, **train}))
    plans = PlanStore(db)
    ensure_builtin_plans(plans)
    return TrainJobs(
        engine=db,
        keys=KeyStore(db),
        plans=plans,
        settings=settings,
        command=[sys.executable, "-c", CHILD],
        url="http://127.0.0.1:9",
    )


def wait_done(jobs: TrainJobs, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (run := jobs.get(run_id))["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, run
        time.sleep(0.02)
    return run


def test_parse_request_checks_every_field() -> None:
    r = parse_request({"recipe": "cardiaco", "seed": 3, "params": {"epochs": 2}, "promote": "production"})
    assert (r.model, r.alias, r.promote, r.seed) == ("cardiaco", "production", "production", 3)
    for bad in (
        [],
        {"recipe": ""},
        {"recipe": "cardiaco", "seed": -1},
        {"recipe": "cardiaco", "seed": True},
        {"recipe": "cardiaco", "model": "Bad Name"},
        {"recipe": "cardiaco", "params": [1]},
        {"recipe": "cardiaco", "params": {"x": "y" * 5000}},
        {"recipe": "cardiaco", "min_improvement": float("nan")},
        {"recipe": "cardiaco", "dry_run": "yes"},
        {"recipe": "cardiaco", "promote": "a", "alias": "b"},
        {"recipe": "cardiaco", "data_dir": "/etc"},
        {"recipe": "pkg.mod:fn"},  # no model
    ):
        with pytest.raises(InvalidInput):
            parse_request(bad)


def test_user_recipes_only_from_the_allow_list() -> None:
    check_recipe("temperatura", [])
    check_recipe("cardiaco", [])
    with pytest.raises(Forbidden):
        check_recipe("os:system", [])
    check_recipe("pkg.mod:fn", ["pkg.mod:fn"])
    check_recipe("pkg.mod:other", ["pkg.mod:*"])
    with pytest.raises(Forbidden):
        check_recipe("pkg.modx:fn", ["pkg.mod:*"])
    with pytest.raises(InvalidInput):
        check_recipe("nosuch", [])


def test_one_run_at_a_time_then_recorded(db: Engine, tmp_path: Path) -> None:
    jobs = make_jobs(db, tmp_path)
    hold = tmp_path / "go"
    request = TrainRequest(recipe="cardiaco", model="cardiaco", params={"hold": str(hold)})
    run = jobs.start(request, trigger="http", actor="key:abc")
    assert run["status"] == "running" and run["trigger"] == "http"
    with pytest.raises(Conflict) as refused:
        jobs.start(TrainRequest(recipe="cardiaco", model="cardiaco"), trigger="http", actor=None)
    assert refused.value.details["run"] == run["id"]
    other = jobs.start(TrainRequest(recipe="temperatura", model="temperatura"), trigger="cli", actor=None)
    assert wait_done(jobs, other["id"])["status"] == "succeeded"  # another model is not blocked

    hold.touch()
    done = wait_done(jobs, run["id"])
    assert done["status"] == "succeeded" and done["error"] is None
    assert (done["version"], done["decision"], done["promoted"]) == (7, "keep", False)
    assert done["reason"] == "candidate worse" and done["gate"]["quality"]["test"] == "mcnemar"
    [event] = model_history(db, "cardiaco", kind="train")
    assert event["version"] == 7 and event["actor"] == "key:abc"
    assert event["detail"]["run"] == run["id"] and event["detail"]["decision"] == "keep"
    minted = [k for k in jobs.keys.list() if k.name.startswith("train-run-")]
    assert len(minted) == 2 and all(k.disabled for k in minted) and all(k.role == "admin" for k in minted)
    assert [r["id"] for r in jobs.list(model="cardiaco")] == [run["id"]]
    # the lease is free again: the next run starts
    again = jobs.start(TrainRequest(recipe="cardiaco", model="cardiaco"), trigger="http", actor=None)
    assert wait_done(jobs, again["id"])["status"] == "succeeded"
    with pytest.raises(NotFound):
        jobs.get("nosuch")


def test_a_failing_child_is_failed_with_its_last_output(
    db: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = make_jobs(db, tmp_path, output_lines=2)
    run = jobs.start(
        TrainRequest(recipe="cardiaco", model="cardiaco", params={"fail": 1}), trigger="http", actor=None
    )
    done = wait_done(jobs, run["id"])
    assert done["status"] == "failed" and done["version"] is None
    assert "exited with status 3" in done["error"]
    assert "Traceback" not in done["error"]  # the output (a traceback names files): the log's
    logged = [r.getMessage() for r in caplog.records if "its last output" in r.getMessage()]
    assert logged and logged[0].endswith("some recipe noise\nTraceback: boom")  # the last 2 lines only
    [event] = model_history(db, "cardiaco", kind="train")
    assert event["detail"]["status"] == "failed"


def test_a_run_over_its_timeout_is_killed(db: Engine, tmp_path: Path) -> None:
    jobs = make_jobs(db, tmp_path, timeout_s=0.3)
    hold = tmp_path / "never"
    run = jobs.start(
        TrainRequest(recipe="cardiaco", model="cardiaco", params={"hold": str(hold)}),
        trigger="http",
        actor=None,
    )
    done = wait_done(jobs, run["id"])
    assert done["status"] == "failed" and done["error"].startswith("timed out after 0.3 s")


def test_a_run_without_heartbeat_is_failed_and_frees_the_model(db: Engine, tmp_path: Path) -> None:
    jobs = make_jobs(db, tmp_path, stale_s=30)
    now = time.time()
    # a run another process started, whose process died 2 minutes ago (its lease still held)
    with db.begin() as conn:
        conn.execute(
            insert(train_runs).values(
                id="deadbeef",
                model="cardiaco",
                recipe="cardiaco",
                trigger="http",
                status="running",
                options=json.dumps({"alias": "production"}),
                process="otherhost:1:x",
                created_at=now - 200,
                started_at=now - 200,
                heartbeat_at=now - 120,
            )
        )
    assert Lease(db, _lease_name("cardiaco"), holder="deadbeef", ttl_s=30).acquire(now - 20)
    assert jobs.reap() == 1
    dead = jobs.get("deadbeef")
    assert dead["status"] == "failed" and dead["error"].startswith("no heartbeat for 120 s")
    run = jobs.start(TrainRequest(recipe="cardiaco", model="cardiaco"), trigger="http", actor=None)
    assert wait_done(jobs, run["id"])["status"] == "succeeded"
    kinds = [e["detail"]["status"] for e in model_history(db, "cardiaco", kind="train")]
    assert kinds == ["succeeded", "failed"]


def test_a_recipe_not_allowed_is_refused_before_anything_runs(db: Engine, tmp_path: Path) -> None:
    jobs = make_jobs(db, tmp_path)
    with pytest.raises(Forbidden):
        jobs.start(TrainRequest(recipe="os:system", model="x"), trigger="http", actor=None)
    assert jobs.list() == []
    allowed = make_jobs(db, tmp_path, recipes=["mypkg.recipes:*"])
    run = allowed.start(TrainRequest(recipe="mypkg.recipes:churn", model="churn"), trigger="http", actor=None)
    assert wait_done(allowed, run["id"])["status"] == "succeeded"
