"""Retrain on drift: a model's opt-in policy and what a firing drift alert does with it.

A model opts in with ``PUT /v1/models/{name}/retrain`` (``retrain_policies``: recipe, alias,
cool-down, seed, params, min_improvement). When the built-in ``MlgateDriftPsiHigh`` alert goes to
*firing* for a label set with ``model=<name>``, the alert engine calls :meth:`Retrainer.on_firing`
(the evaluator is the one process holding the ``alerts`` lease, in its evaluation thread), which
starts a train job (trigger ``drift``; :mod:`.jobs`) with ``promote=alias`` — the run still has
to pass the gate — unless:

- the model has a run queued or running (one at a time per model), or
- the cool-down since the last start has not passed. The claim is one conditional update
  (``last_started_at`` moved only when it is older than ``now - cooldown_s``), so two
  processes (a lease handover, an API call) never both start a run for the same cool-down.

Each decision is a ``retrain`` event in the model's history: ``{"outcome": "started", "run"}``
or ``{"outcome": "skipped", "reason"}``, with the alert's features and version. Several features
of one model firing in the same evaluation are one decision.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError

from mlgate.db.tables import retrain_policies
from mlgate.errors import Conflict, InvalidInput, MlgateError, NotFound
from mlgate.history import record_event
from mlgate.lifecycle.jobs import TrainJobs, TrainRequest, check_recipe, parse_request

if TYPE_CHECKING:
    from mlgate.monitoring.alert_instances import AlertInstance

__all__ = [
    "DRIFT_RULE",
    "MAX_COOLDOWN_S",
    "Retrainer",
    "delete_policy",
    "get_policy",
    "parse_cooldown",
    "parse_policy",
    "put_policy",
]

log = logging.getLogger("mlgate.retrain")

DRIFT_RULE = "MlgateDriftPsiHigh"
MAX_COOLDOWN_S = 90 * 86400.0
DEFAULT_COOLDOWN_S = 6 * 3600.0


def parse_cooldown(value: Any) -> float:
    """``"6h"``, ``"30m"``, ``"1h30m"`` or a number of seconds → seconds (0 to 90 days)."""
    from mlgate.monitoring.promql import PromQLError
    from mlgate.monitoring.promql_parse import parse_duration

    if isinstance(value, bool):
        raise InvalidInput("'cooldown' is a duration like 6h or 30m, or seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except PromQLError:
            raise InvalidInput(f"'cooldown' {value!r} is not a duration (e.g. 6h, 30m, 1h30m)") from None
    else:
        raise InvalidInput("'cooldown' is a duration like 6h or 30m, or seconds")
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_COOLDOWN_S:
        raise InvalidInput("'cooldown' is between 0 and 90 days")
    return seconds


def parse_policy(model: str, body: Any, *, allowed: list[str]) -> dict[str, Any]:
    """A PUT body → the stored policy (400 for anything malformed, 403 for a recipe not allowed)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("the body is a JSON object: {'on_drift': true, 'recipe': ..., 'cooldown': '6h'}")
    known = {"on_drift", "recipe", "alias", "cooldown", "seed", "params", "min_improvement"}
    unknown = set(body) - known
    if unknown:
        raise InvalidInput(
            f"unknown fields: {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
        )
    on_drift = body.get("on_drift", True)
    if not isinstance(on_drift, bool):
        raise InvalidInput("'on_drift' is true or false")
    recipe = body.get("recipe")
    if recipe is None:
        raise InvalidInput("'recipe' is required: the recipe a drift alert runs (e.g. temperatura)")
    alias = body.get("alias", "production")
    # the same checks as a train run's body (recipe, seed, params, alias, min_improvement)
    request = parse_request(
        {
            "recipe": recipe,
            "model": model,
            "seed": body.get("seed", 0),
            "params": body.get("params"),
            "promote": alias,
            "min_improvement": body.get("min_improvement", 0.0),
        }
    )
    check_recipe(request.recipe, allowed)
    return {
        "model": model,
        "on_drift": on_drift,
        "recipe": request.recipe,
        "alias": request.alias,
        "cooldown_s": parse_cooldown(body.get("cooldown", DEFAULT_COOLDOWN_S)),
        "options": {
            "seed": request.seed,
            "params": request.params,
            "min_improvement": request.min_improvement,
        },
    }


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "model": row["model"],
        "on_drift": bool(row["on_drift"]),
        "recipe": row["recipe"],
        "alias": row["alias"],
        "cooldown_s": row["cooldown_s"],
        **json.loads(row["options"] or "{}"),
        "last_started_at": row["last_started_at"],
        "updated_at": row["updated_at"],
    }


def get_policy(engine: Engine, model: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(retrain_policies).where(retrain_policies.c.model == model)).first()
    return None if row is None else _public(row._asdict())


def put_policy(engine: Engine, policy: Mapping[str, Any], *, now: float | None = None) -> dict[str, Any]:
    """Create or replace a policy; ``last_started_at`` is kept (a changed policy does not reset
    the cool-down)."""
    now = time.time() if now is None else now
    values = {
        "on_drift": policy["on_drift"],
        "recipe": policy["recipe"],
        "alias": policy["alias"],
        "cooldown_s": policy["cooldown_s"],
        "options": json.dumps(policy["options"], sort_keys=True),
        "updated_at": now,
    }
    t = retrain_policies
    for _ in range(2):  # an insert racing another's: the second round updates
        with engine.begin() as conn:
            if conn.execute(update(t).where(t.c.model == policy["model"]).values(**values)).rowcount:
                break
        try:
            with engine.begin() as conn:
                conn.execute(t.insert().values(model=policy["model"], last_started_at=None, **values))
            break
        except IntegrityError:
            continue
    out = get_policy(engine, policy["model"])
    assert out is not None
    return out


def delete_policy(engine: Engine, model: str) -> None:
    """404 when the model has no policy."""
    with engine.begin() as conn:
        gone = conn.execute(delete(retrain_policies).where(retrain_policies.c.model == model)).rowcount
    if not gone:
        raise NotFound(f"{model} has no retrain policy", details={"model": model})


class Retrainer:
    """The alert engine's subscriber (see the module docstring)."""

    def __init__(self, *, engine: Engine, jobs: TrainJobs, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.jobs = jobs
        self.clock = clock

    def on_firing(self, alerts: Iterable[AlertInstance], now: float | None = None) -> None:
        """Alerts that just went to firing: one decision per model of the drift rule's alerts."""
        by_model: dict[str, list[AlertInstance]] = {}
        for alert in alerts:
            model = alert.labels.get("model")
            if alert.rule == DRIFT_RULE and model:
                by_model.setdefault(model, []).append(alert)
        for model, fired in sorted(by_model.items()):
            try:
                self.retrain(model, fired, now)
            except Exception:
                log.exception("retrain on drift of %s failed", model)

    def retrain(
        self, model: str, alerts: list[AlertInstance], now: float | None = None
    ) -> dict[str, Any] | None:
        """Start a run for ``model`` if its policy says so: ``{"outcome": "started", "run"}`` or
        ``{"outcome": "skipped", "reason"}`` (also recorded); None when it has not opted in."""
        now = self.clock() if now is None else now
        policy = get_policy(self.engine, model)
        if policy is None or not policy["on_drift"]:
            return None
        detail: dict[str, Any] = {
            "alert": DRIFT_RULE,
            "features": sorted({a.labels.get("feature", "") for a in alerts} - {""})[:20],
            "versions": sorted({a.labels.get("version", "") for a in alerts} - {""}),
            "value": max((a.value for a in alerts if a.value is not None), default=None),
            "recipe": policy["recipe"],
        }
        self.jobs.reap()  # a run whose process died does not block retraining
        running = self.jobs.active(model)
        if running is not None:
            return self._record(
                model, policy, detail, skipped=f"a train run is in progress ({running['id']})"
            )
        t = retrain_policies
        previous = policy["last_started_at"]
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(t)
                .where(
                    t.c.model == model,
                    t.c.on_drift.is_(True),
                    (t.c.last_started_at.is_(None)) | (t.c.last_started_at <= now - t.c.cooldown_s),
                )
                .values(last_started_at=now)
            ).rowcount
        if not claimed:
            last = get_policy(self.engine, model) or policy
            since = now - float(last["last_started_at"] or now)
            cooldown = float(last["cooldown_s"])
            return self._record(
                model,
                policy,
                detail,
                skipped=(
                    f"cool-down: the last run started {since:.0f} s ago, "
                    f"{cooldown - since:.0f} s to go (cooldown {cooldown:g} s)"
                ),
            )
        request = TrainRequest(
            recipe=policy["recipe"],
            model=model,
            seed=int(policy.get("seed", 0)),
            params=dict(policy.get("params") or {}),
            promote=policy["alias"],
            alias=policy["alias"],
            min_improvement=float(policy.get("min_improvement", 0.0)),
        )
        try:
            run = self.jobs.start(request, trigger="drift", actor=f"alert:{DRIFT_RULE}")
        except MlgateError as exc:
            # Not started (another run won the race, a recipe no longer allowed): give the
            # cool-down back, unless something else claimed it since.
            with self.engine.begin() as conn:
                conn.execute(
                    update(t)
                    .where(t.c.model == model, t.c.last_started_at == now)
                    .values(last_started_at=previous)
                )
            reason = exc.message if isinstance(exc, Conflict) else f"could not start: {exc.message}"
            return self._record(model, policy, detail, skipped=reason)
        return self._record(model, policy, detail, run=run["id"], status=run["status"])

    def _record(
        self,
        model: str,
        policy: Mapping[str, Any],
        detail: dict[str, Any],
        *,
        skipped: str | None = None,
        run: str | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        outcome: dict[str, Any] = (
            {"outcome": "skipped", "reason": skipped}
            if skipped is not None
            else {"outcome": "started", "run": run}
        )
        if status is not None:
            outcome["status"] = status
        record_event(
            self.engine,
            model,
            "retrain",
            alias=str(policy["alias"]),
            actor=f"alert:{DRIFT_RULE}",
            detail={**detail, **outcome},
        )
        log.info("retrain on drift of %s: %s", model, outcome)
        return outcome
