"""Retrain on drift (lifecycle/retrain.py): the policy's checks, the cool-down, one run at a time,
one start across two processes, and the alert engine's firing hook that drives it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from mlgate.errors import Conflict, Forbidden, InvalidInput, NotFound
from mlgate.history import model_history
from mlgate.lifecycle.jobs import TrainRequest
from mlgate.lifecycle.retrain import (
    DRIFT_RULE,
    Retrainer,
    delete_policy,
    get_policy,
    parse_cooldown,
    parse_policy,
    put_policy,
)
from mlgate.monitoring.alert_instances import AlertInstance
from mlgate.repository import Repository
from tests.unit.monitoring.test_alerts import FakeClock, Worker, make_engine

T0 = 1_800_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    repo = Repository.open(f"sqlite:///{tmp_path / 'retrain.db'}")
    yield repo.engine
    repo.close()


class FakeJobs:
    """What the retrainer needs of TrainJobs: the active run and a start."""

    def __init__(self) -> None:
        self.started: list[tuple[TrainRequest, str]] = []
        self.running: dict[str, str] = {}
        self.refuse: Exception | None = None

    def reap(self) -> int:
        return 0

    def active(self, model: str) -> dict[str, Any] | None:
        return {"id": self.running[model]} if model in self.running else None

    def start(self, request: TrainRequest, *, trigger: str, actor: str | None) -> dict[str, Any]:
        if self.refuse is not None:
            raise self.refuse
        self.started.append((request, trigger))
        return {"id": f"run{len(self.started)}", "status": "running"}


def alert(model: str, feature: str = "lag_1", rule: str = DRIFT_RULE) -> AlertInstance:
    labels = {"alertname": rule, "model": model, "version": "1", "feature": feature}
    return AlertInstance(
        fingerprint=f"{model}{feature}",
        rule=rule,
        labels=labels,
        annotations={},
        state="firing",
        value=0.9,
        active_at=T0,
    )


def opt_in(db: Engine, model: str = "temperatura", cooldown: str = "1h") -> None:
    body = {"recipe": "temperatura", "cooldown": cooldown, "params": {"lags": 6}, "seed": 2}
    put_policy(db, parse_policy(model, body, allowed=[]), now=T0 - 10)


def test_policy_checks() -> None:
    assert parse_cooldown("6h") == 21600 and parse_cooldown("1h30m") == 5400 and parse_cooldown(60) == 60
    for bad in ("soon", -1, True, "100d", None):
        with pytest.raises(InvalidInput):
            parse_cooldown(bad)
    policy = parse_policy("temperatura", {"recipe": "temperatura"}, allowed=[])
    assert policy["cooldown_s"] == 21600 and policy["alias"] == "production" and policy["on_drift"] is True
    for body in ({}, {"recipe": "temperatura", "when": "now"}, {"recipe": "temperatura", "on_drift": 1}):
        with pytest.raises(InvalidInput):
            parse_policy("temperatura", body, allowed=[])
    with pytest.raises(Forbidden):
        parse_policy("temperatura", {"recipe": "evil:run"}, allowed=[])


def test_put_get_delete(db: Engine) -> None:
    assert get_policy(db, "temperatura") is None
    opt_in(db)
    got = get_policy(db, "temperatura")
    assert got is not None and got["params"] == {"lags": 6} and got["cooldown_s"] == 3600
    put_policy(db, parse_policy("temperatura", {"recipe": "temperatura", "cooldown": "2h"}, allowed=[]))
    assert get_policy(db, "temperatura")["cooldown_s"] == 7200  # type: ignore[index]
    delete_policy(db, "temperatura")
    with pytest.raises(NotFound):
        delete_policy(db, "temperatura")


def test_cool_down_and_one_run_at_a_time(db: Engine) -> None:
    jobs = FakeJobs()
    retrainer = Retrainer(engine=db, jobs=jobs)  # type: ignore[arg-type]
    assert retrainer.retrain("temperatura", [alert("temperatura")], T0) is None  # not opted in
    opt_in(db)
    first = retrainer.retrain("temperatura", [alert("temperatura")], T0)
    assert first == {"outcome": "started", "run": "run1", "status": "running"}
    [(request, trigger)] = jobs.started
    assert trigger == "drift" and request.promote == "production" and request.params == {"lags": 6}
    assert request.seed == 2
    jobs.running["temperatura"] = "run1"
    busy = retrainer.retrain("temperatura", [alert("temperatura")], T0 + 10)
    assert busy == {"outcome": "skipped", "reason": "a train run is in progress (run1)"}
    del jobs.running["temperatura"]
    cooling = retrainer.retrain("temperatura", [alert("temperatura")], T0 + 600)
    assert cooling is not None and cooling["reason"].startswith(
        "cool-down: the last run started 600 s ago, 3000 s"
    )
    assert retrainer.retrain("temperatura", [alert("temperatura")], T0 + 3600)["outcome"] == "started"  # type: ignore[index]
    outcomes = [e["detail"]["outcome"] for e in reversed(model_history(db, "temperatura", kind="retrain"))]
    assert outcomes == ["started", "skipped", "skipped", "started"]


def test_a_refused_start_gives_the_cool_down_back(db: Engine) -> None:
    jobs = FakeJobs()
    jobs.refuse = Conflict("temperatura has a train run already (abc): one at a time per model")
    retrainer = Retrainer(engine=db, jobs=jobs)  # type: ignore[arg-type]
    opt_in(db)
    out = retrainer.retrain("temperatura", [alert("temperatura")], T0)
    assert out is not None and out["outcome"] == "skipped" and "one at a time" in out["reason"]
    assert get_policy(db, "temperatura")["last_started_at"] is None  # type: ignore[index]
    jobs.refuse = None
    assert retrainer.retrain("temperatura", [alert("temperatura")], T0 + 1)["outcome"] == "started"  # type: ignore[index]


def test_two_processes_start_one_run(db: Engine) -> None:
    """The cool-down is claimed by one conditional update: the second process loses it."""
    opt_in(db)
    a, b = FakeJobs(), FakeJobs()
    out_a = Retrainer(engine=db, jobs=a).retrain("temperatura", [alert("temperatura")], T0)  # type: ignore[arg-type]
    out_b = Retrainer(engine=db, jobs=b).retrain("temperatura", [alert("temperatura")], T0)  # type: ignore[arg-type]
    assert [out_a["outcome"], out_b["outcome"]] == ["started", "skipped"]  # type: ignore[index]
    assert len(a.started) + len(b.started) == 1


def test_on_firing_groups_by_model_and_ignores_other_rules(db: Engine) -> None:
    jobs = FakeJobs()
    opt_in(db)
    opt_in(db, "cardiaco")
    Retrainer(engine=db, jobs=jobs, clock=lambda: T0).on_firing(  # type: ignore[arg-type]
        [alert("temperatura", "lag_1"), alert("temperatura", "lag_2"), alert("cardiaco", rule="Other")]
    )
    assert [r.model for r, _ in jobs.started] == ["temperatura"]
    [event] = model_history(db, "temperatura", kind="retrain")
    assert event["detail"]["features"] == ["lag_1", "lag_2"] and event["actor"] == f"alert:{DRIFT_RULE}"
    assert model_history(db, "cardiaco") == []


RULE = """
groups:
  - name: test
    rules:
      - alert: MlgateDriftPsiHigh
        expr: mlgate_http_connections > 5
"""


def test_the_alert_engine_calls_subscribers_on_firing(tmp_path: Path, db: Engine) -> None:
    clock = FakeClock()
    engine = make_engine(tmp_path, db, RULE, clock=clock)
    seen: list[list[str]] = []
    engine.subscribe(lambda alerts, now: seen.append([a.state for a in alerts]))
    engine.subscribe(lambda alerts, now: 1 / 0)  # a failing subscriber never stops the round
    worker = Worker(db)
    worker.connections(2, clock.now)
    engine.tick()
    assert seen == []
    clock.now += 1
    worker.connections(9, clock.now)
    engine.tick()
    clock.now += 1
    engine.tick()  # still firing: no new transition
    assert seen == [["firing"]]
