"""Training runs as background jobs: ``POST /v1/train``, a drift alert, ``mlgate train --remote``.

A run is one ``train_runs`` row and one **subprocess** (``python -m mlgate.lifecycle.jobs``)
that runs :func:`mlgate.lifecycle.train.run_train` against this server's own loopback URL, so
the CPU-heavy fit never blocks the event loop and a crash of the fit (a segfault in a native
library, memory) cannot take the server down. The child talks to the server like ``mlgate
train`` does, with a short-lived admin API key minted for the run (unmetered, expiring with the
run's timeout) and disabled when it ends; the secret is handed over in the child's environment,
never in its argv (visible in ``ps``), never logged nor stored. The child reports its progress
and, at the end, its report as JSON lines on stdout; everything else it prints is kept as the
last ``train.output_lines`` lines (each cut to 400 characters), logged by the server when it fails
(never in the API: a traceback names the server's files).
The child's side (reading its environment, running the fit, writing those lines) is
:mod:`mlgate.lifecycle.job_child`; this module is the manager (:class:`TrainJobs`: start, watch,
heartbeat, finish, list) and, run as ``python -m``, delegates to the child's :func:`main`.

**One run at a time per model**, across processes and replicas: a run holds the
``train:<model>`` lease (:mod:`mlgate.monitoring.lease`, holder = the run id), renewed by its
watcher thread every ``heartbeat_s`` along with the row's ``heartbeat_at``. A second start gets
409 naming the running one. A run whose server process died stops heartbeating: after
``stale_s`` any process marks it failed and its lease expires, so it never blocks the model
for ever. ``timeout_s`` bounds a run's wall time (the child is killed).

**Which recipes** may run, and what a request holds (:class:`TrainRequest`,
:func:`parse_request`, :func:`check_recipe`, re-exported here), is
:mod:`mlgate.lifecycle.job_request`.

Every finished run (succeeded or failed) is a ``train`` event in the model's history.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, insert, select, update

from mlgate.db.tables import train_runs
from mlgate.errors import Conflict, NotFound
from mlgate.history import record_event
from mlgate.lifecycle.job_child import ENV_KEY, ENV_SPEC, ENV_URL, main
from mlgate.lifecycle.job_request import TrainRequest, check_recipe, parse_request
from mlgate.monitoring.lease import Lease, process_id

if TYPE_CHECKING:
    from mlgate.access.keys import KeyStore
    from mlgate.access.plans import PlanStore
    from mlgate.settings import Settings

__all__ = [
    "ACTIVE",
    "TRIGGERS",
    "TrainJobs",
    "TrainRequest",
    "check_recipe",
    "main",
    "parse_request",
]

log = logging.getLogger("mlgate.train")

ACTIVE = ("queued", "running")
TRIGGERS = ("http", "drift", "cli")
MAX_LINE_CHARS = 400
#: the child's stdout lines are read at most this long (a report line included)
MAX_LINE_BYTES = 4 * 1024 * 1024


def _lease_name(model: str) -> str:
    # monitor_leases.name is 64 characters; a model name may be 64 on its own
    return "train:" + hashlib.sha256(model.encode()).hexdigest()[:32]


def _loopback_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "", "localhost"):  # noqa: S104  # a bind address, not binding
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _now() -> float:
    return time.time()


class TrainJobs:
    """Starts, watches and lists this server's training runs (see the module docstring)."""

    def __init__(
        self,
        *,
        engine: Engine,
        keys: KeyStore,
        plans: PlanStore,
        settings: Settings,
        clock: Callable[[], float] = _now,
        command: list[str] | None = None,
        url: str | None = None,
    ) -> None:
        self.engine = engine
        self.keys = keys
        self.plans = plans
        self.settings = settings
        self.config = settings.train
        self.clock = clock
        #: the child's command (tests replace it); the spec, URL and key go in its environment
        self.command = command or [sys.executable, "-m", "mlgate.lifecycle.jobs"]
        self.url = url or _loopback_url(settings)
        self.process = process_id()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stopping = False

    # ----------------------------------------------------------------- reading

    def get(self, run_id: str) -> dict[str, Any]:
        """One run (404 when unknown); stale runs are marked failed first."""
        self.reap()
        with self.engine.connect() as conn:
            row = conn.execute(select(train_runs).where(train_runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"no train run {run_id!r}", details={"run": run_id})
        return _public(row._asdict())

    def list(self, *, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Runs, newest first (of one model when given)."""
        self.reap()
        query = select(train_runs)
        if model is not None:
            query = query.where(train_runs.c.model == model)
        query = query.order_by(train_runs.c.created_at.desc()).limit(max(1, min(limit, 500)))
        with self.engine.connect() as conn:
            return [_public(r._asdict()) for r in conn.execute(query).all()]

    def active(self, model: str) -> dict[str, Any] | None:
        """The model's queued or running run, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(train_runs)
                .where(train_runs.c.model == model, train_runs.c.status.in_(ACTIVE))
                .order_by(train_runs.c.created_at)
            ).first()
        return None if row is None else _public(row._asdict())

    # ----------------------------------------------------------------- starting

    def start(self, request: TrainRequest, *, trigger: str, actor: str | None) -> dict[str, Any]:
        """Start a run (blocking: a few database writes and a process spawn; run it in a thread).

        409 when the model has a run already (``details.run``: its id), 403 for a user recipe
        not allowed, 503-free: a spawn failure is the run's own ``failed`` status."""
        if trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}")
        if self._stopping:
            raise Conflict("the server is stopping: no new train runs")
        check_recipe(request.recipe, self.config.recipes)
        self.reap()
        with self._lock:
            if len(self._children) >= self.config.max_running:
                raise Conflict(
                    f"this server runs at most {self.config.max_running} train runs at once "
                    "(train.max_running): try again when one finishes",
                    details={"running": sorted(self._children)},
                )
        run_id = uuid.uuid4().hex
        now = self.clock()
        lease = Lease(self.engine, _lease_name(request.model), holder=run_id, ttl_s=self.config.stale_s)
        if not lease.acquire(now):
            running = self.active(request.model)
            raise Conflict(
                f"{request.model} has a train run already ({running['id'] if running else 'starting'}): "
                "one at a time per model",
                details={"run": running["id"] if running else None, "model": request.model},
            )
        try:
            self._insert(run_id, request, trigger, actor, now)
        except Exception:
            lease.release()  # the model is not blocked by a run that never existed
            raise
        try:
            key_id, secret = self._mint_key(run_id)
        except Exception as exc:
            self._finish(
                run_id, request, trigger, actor, lease, None, error=f"could not mint its API key: {exc}"
            )
            return self.get(run_id)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLGATE_")}
        spec = {"recipe": request.recipe, "model": request.model, **request.options()}
        env.update({ENV_SPEC: json.dumps(spec), ENV_URL: self.url, ENV_KEY: secret})
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            proc = subprocess.Popen(  # our own interpreter and module, no shell
                self.command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to the server's terminal is the server's, not the run's
            )
        except OSError as exc:
            self._finish(run_id, request, trigger, actor, lease, key_id, error=f"could not start: {exc}")
            return self.get(run_id)
        del secret, env
        with self._lock:
            self._children[run_id] = proc
        started = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                update(train_runs)
                .where(train_runs.c.id == run_id)
                .values(
                    status="running",
                    started_at=started,
                    heartbeat_at=started,
                    progress=json.dumps({"phase": "starting"}),
                )
            )
        threading.Thread(
            target=self._watch,
            args=(run_id, request, trigger, actor, proc, lease, key_id),
            name=f"mlgate-train-{run_id[:8]}",
            daemon=True,
        ).start()
        return self.get(run_id)

    def _insert(
        self, run_id: str, request: TrainRequest, trigger: str, actor: str | None, now: float
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(train_runs).values(
                    id=run_id,
                    model=request.model,
                    recipe=request.recipe,
                    trigger=trigger,
                    status="queued",
                    options=json.dumps(request.options(), sort_keys=True),
                    actor=actor[:160] if actor else None,
                    process=self.process,
                    created_at=now,
                    heartbeat_at=now,
                    progress=json.dumps({"phase": "queued"}),
                )
            )

    def _mint_key(self, run_id: str) -> tuple[str, str]:
        """An admin key for this run only: unmetered (the held-out rows are many requests),
        expiring with the run's timeout (a leaked one dies anyway), disabled when the run ends."""
        from mlgate.access.plans import UNMETERED_PLAN

        expires = datetime.now(UTC) + timedelta(seconds=self.config.timeout_s + 60)
        created = self.keys.create(name=f"train-run-{run_id[:12]}", role="admin", expires_at=expires)
        self.plans.attach(created.key.id, UNMETERED_PLAN)
        return created.key.id, created.secret

    # ----------------------------------------------------------------- watching

    def _watch(
        self,
        run_id: str,
        request: TrainRequest,
        trigger: str,
        actor: str | None,
        proc: subprocess.Popen[bytes],
        lease: Lease,
        key_id: str,
    ) -> None:
        """Read the child's lines, heartbeat, enforce the timeout; record the end."""
        state: dict[str, Any] = {"progress": None, "report": None, "error": None, "changed": False}
        tail: deque[str] = deque(maxlen=self.config.output_lines)
        reader = threading.Thread(target=_read_lines, args=(proc, state, tail), daemon=True)
        reader.start()
        deadline = time.monotonic() + self.config.timeout_s
        timed_out = False
        try:
            while True:
                try:
                    proc.wait(timeout=self.config.heartbeat_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() > deadline:
                    timed_out = True
                    proc.kill()
                    break
                self._beat(run_id, lease, state)
            proc.wait()
            reader.join(timeout=10)
            if timed_out:
                error = f"timed out after {self.config.timeout_s:g} s (train.timeout_s): killed"
            elif self._stopping and proc.returncode != 0:
                error = "the server stopped while the run was going on (it was killed)"
            elif state["report"] is not None and proc.returncode == 0:
                error = None
            else:
                said = state["error"] or f"the run exited with status {proc.returncode}"
                error = said
                if tail:  # a traceback names the server's files: the log keeps it, not the API
                    error += " (the run's last output is in the server log)"
                    log.warning(
                        "train run %s failed: %s; its last output:\n%s", run_id, said, "\n".join(tail)
                    )
            self._finish(run_id, request, trigger, actor, lease, key_id, report=state["report"], error=error)
        except Exception:
            log.exception("train run %s: watching failed", run_id)
            with _suppress():
                proc.kill()
            self._finish(
                run_id, request, trigger, actor, lease, key_id, error="the server lost track of the run"
            )
        finally:
            if proc.stdout is not None:
                with _suppress():
                    proc.stdout.close()
            with self._lock:
                self._children.pop(run_id, None)

    def _beat(self, run_id: str, lease: Lease, state: dict[str, Any]) -> None:
        now = self.clock()
        values: dict[str, Any] = {"heartbeat_at": now}
        if state["changed"]:
            state["changed"] = False
            values["progress"] = json.dumps(state["progress"])
        try:
            lease.acquire(now)
            with self.engine.begin() as conn:
                conn.execute(
                    update(train_runs)
                    .where(train_runs.c.id == run_id, train_runs.c.status == "running")
                    .values(**values)
                )
        except Exception as exc:  # a database hiccup: the next beat tries again
            log.warning("train run %s: heartbeat failed: %s", run_id, exc)

    def _finish(
        self,
        run_id: str,
        request: TrainRequest,
        trigger: str,
        actor: str | None,
        lease: Lease,
        key_id: str | None,
        *,
        report: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """The run's end: its row, a ``train`` event, its key disabled, its lease released."""
        if key_id is not None:
            try:
                self.keys.set_disabled(key_id, True)
            except Exception as exc:  # it expires with the run's timeout anyway
                log.warning("train run %s: disabling its key failed: %s", run_id, exc)
        summary = _summary(report) if report is not None else None
        status = "failed" if error is not None or report is None else "succeeded"
        if error is None and report is None:
            error = "the run ended without a report"
        now = self.clock()
        values: dict[str, Any] = {
            "status": status,
            "finished_at": now,
            "heartbeat_at": now,
            "error": error[-8000:] if error else None,
            "progress": json.dumps({"phase": status}),
        }
        if summary is not None:
            values.update(
                version=summary.get("registered"),
                decision=summary.get("decision"),
                promoted=bool(summary.get("promoted")),
                report=json.dumps(summary, sort_keys=True, default=str),
            )
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(train_runs)
                .where(train_runs.c.id == run_id, train_runs.c.status.in_(ACTIVE))
                .values(**values)
            ).rowcount
            if changed:  # not when another process already marked it failed (stale)
                detail: dict[str, Any] = {
                    "run": run_id,
                    "recipe": request.recipe,
                    "trigger": trigger,
                    "status": status,
                    "alias": request.alias,
                }
                if summary is not None:
                    detail.update(
                        decision=summary.get("decision"),
                        reason=summary.get("reason"),
                        promoted=bool(summary.get("promoted")),
                        current_version=summary.get("current_version"),
                    )
                if error is not None:
                    detail["error"] = error.split("\n", 1)[0][:500]
                record_event(
                    conn,
                    request.model,
                    "train",
                    alias=request.alias,
                    version=summary.get("registered") if summary else None,
                    actor=actor,
                    detail=detail,
                )
        with _suppress():
            lease.release()

    # ----------------------------------------------------------------- stale runs

    def reap(self) -> int:
        """Mark failed the active runs nobody watches any more: no heartbeat for ``stale_s``, or
        started by this process but not among its children. Answers how many."""
        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(select(train_runs).where(train_runs.c.status.in_(ACTIVE))).all()
        with self._lock:
            mine = set(self._children)
        dead = []
        for row in rows:
            beat = row.heartbeat_at or row.created_at
            if now - beat > self.config.stale_s:
                dead.append((row, f"no heartbeat for {now - beat:.0f} s: the process running it stopped"))
            elif row.process == self.process and row.status == "running" and row.id not in mine:
                dead.append((row, "its server process no longer runs it"))
        count = 0
        for row, reason in dead:
            options = json.loads(row.options or "{}")
            request = TrainRequest(
                recipe=row.recipe, model=row.model, alias=str(options.get("alias") or "production")
            )
            lease = Lease(self.engine, _lease_name(row.model), holder=row.id, ttl_s=self.config.stale_s)
            self._finish(row.id, request, row.trigger, row.actor, lease, None, error=reason)
            count += 1
        return count

    def stop(self) -> None:
        """On server stop: no new runs; running children killed and marked failed (their server,
        the one they score through, is going away)."""
        self._stopping = True
        with self._lock:
            children = list(self._children.values())
        for proc in children:
            with _suppress():
                proc.kill()
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with self._lock:
                if not self._children:
                    break
            time.sleep(0.05)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _read_lines(proc: subprocess.Popen[bytes], state: dict[str, Any], tail: deque[str]) -> None:
    """The child's stdout: JSON progress/report/error lines; the rest kept (bounded) in ``tail``."""
    assert proc.stdout is not None
    while True:
        raw = proc.stdout.readline(MAX_LINE_BYTES)
        if not raw:
            return
        if not raw.endswith(b"\n") and len(raw) >= MAX_LINE_BYTES:  # drain the rest of a huge line
            while (more := proc.stdout.readline(MAX_LINE_BYTES)) and not more.endswith(b"\n"):
                pass
            tail.append("[a line over 4 MiB, dropped]")
            continue
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        message: Any = None
        if line.startswith('{"mlgate-train"'):
            with _suppress():
                message = json.loads(line)
        if not isinstance(message, dict):
            tail.append(line[:MAX_LINE_CHARS])
            continue
        kind = message.get("mlgate-train")
        if kind == "progress":
            state["progress"] = {k: message.get(k) for k in ("phase", "done", "total")}
            state["changed"] = True
        elif kind == "report" and isinstance(message.get("report"), dict):
            state["report"] = message["report"]
        elif kind == "error":
            state["error"] = str(message.get("error"))[:2000]


def _summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The gate summary kept with the run (the whole report is the version's ``gate.json``)."""
    quality = dict(report.get("quality") or {})
    keep_quality = (
        "test",
        "n",
        "current",
        "candidate",
        "interval",
        "mean_difference",
        "confidence",
        "p_value",
        "b",
        "c",
        "accuracy_gain",
        "min_improvement",
        "passed",
        "reason",
    )
    return {
        "model": report.get("model"),
        "alias": report.get("alias"),
        "recipe": report.get("recipe"),
        "metric": report.get("metric"),
        "task": report.get("task"),
        "n": report.get("n"),
        "data_hash": report.get("data_hash"),
        "current_version": report.get("current_version"),
        "registered": report.get("registered"),
        "decision": report.get("decision"),
        "reason": report.get("reason"),
        "promoted": report.get("promoted"),
        "quality": {k: quality[k] for k in keep_quality if k in quality} or None,
        "guardrails": report.get("guardrails") or {},
        "candidate_metrics": {
            k: v
            for k, v in (report.get("candidate_metrics") or {}).items()
            if isinstance(v, int | float | str)
        },
    }


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A run as the API answers it."""
    report = json.loads(row["report"]) if row.get("report") else None
    return {
        "id": row["id"],
        "model": row["model"],
        "recipe": row["recipe"],
        "trigger": row["trigger"],
        "status": row["status"],
        "options": json.loads(row["options"] or "{}"),
        "actor": row["actor"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "heartbeat_at": row["heartbeat_at"],
        "progress": json.loads(row["progress"]) if row.get("progress") else None,
        "version": row["version"],
        "decision": row["decision"],
        "reason": (report or {}).get("reason"),
        "promoted": row["promoted"],
        "gate": report,
        "error": row["error"],
    }


if __name__ == "__main__":
    sys.exit(main())
