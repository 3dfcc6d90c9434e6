"""The registry schema as SQLAlchemy Core tables (migrations in ``mlgate.db.migrations``).

Timestamps are timezone-aware UTC on every backend (:class:`UtcDateTime`).
``registry_state.generation`` is bumped by every registry write so other processes can
notice a change with one cheap read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    func,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "NAMING_CONVENTION",
    "UtcDateTime",
    "alert_events",
    "alert_states",
    "alias_policies",
    "aliases",
    "api_keys",
    "canary_assignments",
    "dashboard_sessions",
    "drift_latest",
    "execution_events",
    "executions",
    "key_plans",
    "limiter_buckets",
    "limiter_counters",
    "metadata",
    "model_events",
    "model_versions",
    "models",
    "monitor_leases",
    "monitor_models",
    "registry_state",
    "retrain_policies",
    "shadow_stats",
    "stats_traffic",
    "stats_usage",
    "telemetry_snapshots",
    "train_runs",
    "usage_daily",
    "usage_plans",
    "users",
    "utcnow",
    "workflows",
]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Constraint names are deterministic so SQLite batch migrations can find them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

models = Table(
    "models",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False, default=utcnow),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("model", String(64), ForeignKey("models.name"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("manifest", Text, nullable=False),
    # "" means content-addressed in the store (models/<name>/<version>); else an absolute URI.
    Column("location", String(1024), nullable=False, default=""),
    Column("created_at", UtcDateTime, nullable=False, default=utcnow),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model", String(64), ForeignKey("models.name"), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False, default=utcnow),
    ForeignKeyConstraint(["model", "version"], ["model_versions.model", "model_versions.version"]),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    # username of the user who owns the key (None for keys created by an admin for services)
    Column("owner", String(128), nullable=True),
    Column("created_at", UtcDateTime, nullable=False, default=utcnow),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("disabled", Boolean, nullable=False, default=False, server_default=false()),
    # the first key of its rotation chain (0004): an ownerless key's budget belongs to it
    Column("lineage", String(32), nullable=True),
)

registry_state = Table(
    "registry_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False, default=0),
    # bumped by every change to keys, plan attachments, plans and users' state (0004): the
    # gateway's caches stay valid while it does not move (access/generation.py)
    Column("access_generation", BigInteger, nullable=False, default=0, server_default="0"),
    CheckConstraint("id = 1", name="singleton"),
)


# -- the gateway (0002) ------------------------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("email", String(255), nullable=True),
    Column("first_name", String(128), nullable=True),
    Column("last_name", String(128), nullable=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False, server_default=false()),
    Column("created_at", UtcDateTime, nullable=False, default=utcnow),
)

#: A usage plan as in API Gateway: token bucket (rate = refill/s, burst = capacity) and a quota.
usage_plans = Table(
    "usage_plans",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("rate", Float, nullable=True),  # None: no throttling
    Column("burst", Integer, nullable=True),
    Column("quota_limit", BigInteger, nullable=True),  # None: no quota
    Column("quota_period", String(8), nullable=True),  # DAY | WEEK | MONTH
    Column("quota_offset", Integer, nullable=False, default=0),  # days into the period it resets
    Column("created_at", UtcDateTime, nullable=False, default=utcnow),
)

#: Which plan governs a key, globally (scope "*") or for one model / route (scope = its name).
key_plans = Table(
    "key_plans",
    metadata,
    Column("key_id", String(32), ForeignKey("api_keys.id"), primary_key=True),
    Column("scope", String(128), primary_key=True),
    Column("plan", String(64), ForeignKey("usage_plans.name"), nullable=False),
)

#: Durable usage per key, UTC day and scope, flushed in batches (see access/usage.py).
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD (UTC)
    Column("scope", String(128), primary_key=True),
    Column("requests", BigInteger, nullable=False, default=0),
    Column("throttled", BigInteger, nullable=False, default=0),
    Column("errors", BigInteger, nullable=False, default=0),
    # items served (0004): a request answering N items is N units; refused items are not
    Column("units", BigInteger, nullable=False, default=0, server_default="0"),
)

#: Token-bucket state for the database limiter storage (one row per bucket key).
limiter_buckets = Table(
    "limiter_buckets",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),  # epoch seconds of the last refill
)

#: Fixed-window quota counters for the database limiter storage.
limiter_counters = Table(
    "limiter_counters",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),  # epoch seconds when the window ends
)


# -- workflows (0003) --------------------------------------------------------------------

#: Deployed workflows: the current definition (Amazon States Language JSON) and its resource
#: mapping; every deploy bumps ``revision``.
workflows = Table(
    "workflows",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("definition", Text, nullable=False),
    Column("mapping", Text, nullable=True),  # JSON; None: only mlgate:* resources
    Column("description", Text, nullable=False, default=""),
    Column("revision", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, default=utcnow),
    Column("updated_at", UtcDateTime, nullable=False, default=utcnow),
)

#: One row per execution; ``runner`` and ``heartbeat_at`` tell a live execution from one a
#: crashed server left RUNNING.
executions = Table(
    "executions",
    metadata,
    Column("id", String(32), primary_key=True),  # uuid4 hex
    Column("workflow", String(64), ForeignKey("workflows.name"), nullable=False),
    Column("name", String(80), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # RUNNING | SUCCEEDED | FAILED | TIMED_OUT | ABORTED
    Column("input", Text, nullable=False),
    Column("output", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("cause", Text, nullable=True),
    Column("owner", String(160), nullable=True),  # who started it: a username or "key:<id>"
    Column("parent_id", String(32), nullable=True),  # the execution that started this one
    Column("runner", String(160), nullable=True),  # host:pid:instance of the process running it
    Column("started_at", UtcDateTime, nullable=False),
    Column("stopped_at", UtcDateTime, nullable=True),
    Column("heartbeat_at", UtcDateTime, nullable=True),
    Index("ix_executions_workflow_started_at", "workflow", "started_at"),
    Index("ix_executions_status_started_at", "status", "started_at"),
    Index("ix_executions_owner_started_at", "owner", "started_at"),
)
#: Execution names are unique per workflow *and owner* (0004): one tenant's names never collide
#: with, nor reveal, another's (an execution without an owner is the "" owner).
Index(
    "uq_executions_workflow_owner_name",
    executions.c.workflow,
    func.coalesce(executions.c.owner, ""),
    executions.c.name,
    unique=True,
)

#: The history of an execution: ``seq`` is the interpreter's event id (1, 2, 3, …).
execution_events = Table(
    "execution_events",
    metadata,
    Column("execution_id", String(32), ForeignKey("executions.id"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("type", String(64), nullable=False),
    Column("timestamp", UtcDateTime, nullable=False),
    Column("state", String(128), nullable=True),
    Column("details", Text, nullable=False),  # JSON object
)


# -- monitoring (0005) -------------------------------------------------------------------
# Times in these tables are epoch seconds (Float): leases and snapshots are compared with the
# clock of whichever process reads them, and the alert engine works in epoch seconds.

#: Per-model monitoring settings set through the admin API / CLI (absent row: the globals).
monitor_models = Table(
    "monitor_models",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("capture_sample", Float, nullable=True),  # 0..1; None: MLGATE_CAPTURE__SAMPLE
    Column("capture_redact", Text, nullable=True),  # JSON list of field names / dotted paths
    Column("capture_retention_days", Integer, nullable=True),
    Column("updated_at", Float, nullable=False),
)

#: Leases: exactly one holder at a time across worker processes and replicas on one database
#: (the alert evaluator, the drift schedule). A holder renews before ``expires_at``.
monitor_leases = Table(
    "monitor_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(160), nullable=False),
    Column("expires_at", Float, nullable=False),
)

#: Each server process's current metric samples (cumulative counters, histogram buckets,
#: gauges), upserted every few seconds, so one evaluator sees every process's figures.
telemetry_snapshots = Table(
    "telemetry_snapshots",
    metadata,
    Column("process", String(160), primary_key=True),  # host:pid:instance
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("data", Text, nullable=False),  # JSON
)

#: The current state of every alert instance (a rule and one label set): Prometheus' states.
alert_states = Table(
    "alert_states",
    metadata,
    Column("fingerprint", String(32), primary_key=True),
    Column("rule", String(255), nullable=False),
    Column("labels", Text, nullable=False),  # JSON object
    Column("annotations", Text, nullable=False),  # JSON object
    Column("state", String(16), nullable=False),  # pending | firing | resolved
    Column("value", Float, nullable=True),
    Column("active_at", Float, nullable=True),
    Column("fired_at", Float, nullable=True),
    Column("resolved_at", Float, nullable=True),
    Column("last_seen_at", Float, nullable=True),
    Column("last_notified_at", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
)

#: Every state change of an alert instance, and its value at that time (the alert history).
alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("fingerprint", String(32), nullable=False),
    Column("rule", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("value", Float, nullable=True),
    Column("labels", Text, nullable=False),
    Index("ix_alert_events_at", "at"),
)

#: The latest drift figures per (model, version, feature, statistic), for gauges in every process.
drift_latest = Table(
    "drift_latest",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("feature", String(255), primary_key=True),
    Column("metric", String(16), primary_key=True),  # psi | ks | chi2 | output
    Column("value", Float, nullable=False),
    Column("evaluated_at", Float, nullable=False),
)

# -- lifecycle (migration 0006) ---------------------------------------------------------------

#: An alias's traffic policy beyond its one version (``aliases.version`` stays the stable one):
#: canary weights (JSON ``{"3": 90, "4": 10}``), the rollout guard (JSON), a shadow version with
#: its sample and options (timeout, concurrency), and when the split / shadow were set.
alias_policies = Table(
    "alias_policies",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("split", Text, nullable=True),
    Column("guard", Text, nullable=True),
    Column("shadow_version", Integer, nullable=True),
    Column("shadow_sample", Float, nullable=True),
    Column("shadow_options", Text, nullable=True),
    Column("split_since", Float, nullable=True),
    Column("shadow_since", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
)

#: Which version each caller sees during a split: assigned at first sight so the callers on each
#: version match the weights (a hash alone leaves ±2 % on 200 callers), then sticky.
canary_assignments = Table(
    "canary_assignments",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("identity", String(64), primary_key=True),  # sha256 hex of the key id / user
    Column("version", Integer, nullable=False),
    Column("assigned_at", Float, nullable=False),
)

#: A model's history: alias moves, splits, automatic rollbacks, shadows, train runs.
model_events = Table(
    "model_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("at", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("alias", String(64), nullable=True),
    Column("version", Integer, nullable=True),
    Column("actor", String(160), nullable=True),
    Column("detail", Text, nullable=False),  # JSON object
    Index("ix_model_events_model_at", "model", "at"),
)

#: Train runs the server started (an admin's HTTP job, or a retrain on drift).
train_runs = Table(
    "train_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model", String(64), nullable=False),
    Column("recipe", String(255), nullable=False),
    Column("trigger", String(16), nullable=False),  # http | drift | cli
    Column("status", String(16), nullable=False),  # queued | running | succeeded | failed
    Column("options", Text, nullable=False),  # JSON: seed, params, promote, min_improvement...
    Column("actor", String(160), nullable=True),
    Column("process", String(160), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("heartbeat_at", Float, nullable=True),
    Column("progress", Text, nullable=True),
    Column("version", Integer, nullable=True),
    Column("decision", String(32), nullable=True),
    Column("promoted", Boolean, nullable=True),
    Column("report", Text, nullable=True),  # JSON: the gate report's summary
    Column("error", Text, nullable=True),
    Index("ix_train_runs_model_created", "model", "created_at"),
)

#: A model's opt-in to retraining when its drift alert fires.
retrain_policies = Table(
    "retrain_policies",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("on_drift", Boolean, nullable=False),
    Column("recipe", String(255), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("cooldown_s", Float, nullable=False),
    Column("options", Text, nullable=False),  # JSON: seed, params, min_improvement
    Column("last_started_at", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
)

#: Each process's running comparison of an alias's primary and shadow answers (JSON ``data``),
#: merged when read.
shadow_stats = Table(
    "shadow_stats",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("process", String(160), primary_key=True),
    Column("since", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("data", Text, nullable=False),
)

# -- dashboard (migration 0007) ---------------------------------------------------------------

#: Upper bounds (seconds) of the stats tables' latency buckets ``lat_0`` … ``lat_11`` (the last:
#: everything slower).
STATS_LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf"))

#: Per-minute (``resolution`` ``m``, ``bucket`` = epoch minute) and per-hour (``h``, epoch hour)
#: traffic of each model version and route, added to by every process (off the request path).
stats_traffic = Table(
    "stats_traffic",
    metadata,
    Column("resolution", String(1), primary_key=True),
    Column("bucket", Integer, primary_key=True, autoincrement=False),
    Column("model", String(64), primary_key=True),  # "" for routes that run no model
    Column("version", Integer, primary_key=True, autoincrement=False),  # 0: none
    Column("route", String(255), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("errors_4xx", BigInteger, nullable=False),
    Column("errors_5xx", BigInteger, nullable=False),
    Column("throttled", BigInteger, nullable=False),
    *[Column(f"lat_{i}", BigInteger, nullable=False) for i in range(len(STATS_LATENCY_BOUNDS))],
    Column("latency_sum", Float, nullable=False),
    Column("batch_items", BigInteger, nullable=False),
    Column("batches", BigInteger, nullable=False),
    Index("ix_stats_traffic_model", "resolution", "model", "bucket"),
)

#: Per-minute / per-hour usage of each API key (its owner named), per model.
stats_usage = Table(
    "stats_usage",
    metadata,
    Column("resolution", String(1), primary_key=True),
    Column("bucket", Integer, primary_key=True, autoincrement=False),
    Column("key_id", String(32), primary_key=True),
    Column("model", String(64), primary_key=True),  # "" for routes that run no model
    Column("owner", String(128), nullable=False),  # "" for keys no user owns
    Column("requests", BigInteger, nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("throttled", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Index("ix_stats_usage_owner", "resolution", "owner", "bucket"),
)

#: Signed-in dashboard sessions: the sha256 of the cookie's value (never the value), the caller.
dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),  # key | user
    Column("caller_id", String(128), nullable=False),
    Column("username", String(128), nullable=True),
    Column("role", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_dashboard_sessions_expires", "expires_at"),
)
