"""The one settings tree of mlgate (environment variables ``MLGATE_*``, nested with ``__``).

This is the only module that reads the environment. Paths left unset derive from
``data_dir``: ``<data_dir>/mlgate.db``, ``<data_dir>/store``, ``<data_dir>/cache``,
``<data_dir>/logs``.

Example::

    MLGATE_DATA_DIR=/var/lib/mlgate MLGATE_STORE_URL=s3://models/prod \\
    MLGATE_S3__ENDPOINT_URL=http://127.0.0.1:9000 mlgate serve
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "AlertSettings",
    "AuthSettings",
    "CaptureSettings",
    "CorsSettings",
    "HttpSettings",
    "LimiterSettings",
    "LogSettings",
    "MonitorSettings",
    "RaySettings",
    "S3Settings",
    "Settings",
    "SfnSettings",
    "StatsSettings",
    "apply_process_environment",
    "export_environ",
    "is_loopback",
    "load_settings",
]


class S3Settings(BaseModel):
    """S3 client options, for AWS S3 and S3-compatible stores (MinIO, moto)."""

    endpoint_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:9000 for MinIO")
    region: str = Field(default="us-east-1", description="AWS region of the bucket")
    access_key_id: str | None = Field(default=None, description="falls back to the default AWS chain")
    secret_access_key: str | None = Field(default=None, description="falls back to the default AWS chain")


class LogSettings(BaseModel):
    """Access log: one JSON line per request to stdout and to a rotating file."""

    level: str = Field(default="INFO", description="level of mlgate's own loggers")
    access_stdout: bool = Field(default=True, description="write access lines to stdout")
    access_file: Path | None = Field(default=None, description="default <data_dir>/logs/access.log")
    max_bytes: int = Field(default=10 * 1024 * 1024, description="rotate the file past this size")
    backup_count: int = Field(default=5, description="rotated files kept")


RouteAuth = Literal["key", "user", "either", "public"]


class AuthSettings(BaseModel):
    """Who may call what: API keys on model routes, user accounts with short-lived JWTs."""

    jwt_secret: SecretStr | None = Field(
        default=None,
        description="HS256 signing secret (>= 32 chars, not a published default); unset: generated once "
        "into <data_dir>/jwt.secret (mode 0600). Several machines must share one configured secret.",
    )
    token_minutes: int = Field(default=20, ge=1, le=24 * 60, description="access token lifetime")
    model_routes: RouteAuth = Field(default="key", description="default for model routes")
    routes: dict[str, RouteAuth] = Field(
        default_factory=dict,
        description='per model or route path overrides, e.g. {"temperatura": "public", "/prod": "either"}',
    )
    open_signup: bool = Field(
        default=True, description="POST /auth/create_user without admin rights (role 'user' only)"
    )
    password_hashes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="password hashes (argon2: ~0.15 CPU-s, 64 MB each) computed at once per process, "
        "for logins and sign-ups; more waiting than 16 per slot get 503 + Retry-After, so guessing "
        "cannot take the cores from serving",
    )
    # -- dashboard sign-in (issue 17) --
    dashboard_session_minutes: int = Field(
        default=8 * 60,
        ge=1,
        le=30 * 24 * 60,
        description="life of a /dashboard sign-in session (its HttpOnly cookie's Max-Age)",
    )


class LimiterSettings(BaseModel):
    """Where usage-plan state lives: this machine (a shared file), one process, the database, or Redis."""

    url: str = Field(
        default="local",
        description="local (a memory-mapped file in the data dir, shared by this machine's server "
        "processes, kept across restarts; local:///path for another file), memory:// (one process, "
        "reset on restart), database (the registry DB: several machines), or redis://host:port/db",
    )
    redis_down: Literal["closed", "open"] = Field(
        default="closed",
        description="Redis unreachable: closed = 503 for keyed calls; open = admit, capped per process",
    )
    default_plan: str = Field(
        default="reference",
        min_length=1,
        description="plan governing every key, and every user calling with a token, that has no plan "
        "attached (it must limit something: nothing that runs a model is unmetered by default)",
    )
    usage_flush_s: float = Field(
        default=1.0, gt=0, le=60, description="usage counters are written this often"
    )
    usage_sync: bool = Field(
        default=False,
        description="answer a metered call only once its usage is in the database (a crash then "
        "loses no acknowledged call; concurrent calls share each write). Off: a kill -9 loses at most "
        "the last usage_flush_s of counts",
    )


class CorsSettings(BaseModel):
    """CORS for browser clients. A wildcard origin is never combined with credentials."""

    origins: list[str] = Field(default_factory=list, description='allowed origins, or ["*"]')
    allow_credentials: bool = Field(default=False, description="cookies/Authorization from browsers")

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsSettings:
        if self.allow_credentials and "*" in self.origins:
            raise ValueError("CORS: a wildcard origin cannot be combined with allow_credentials")
        return self


class WorkflowSettings(BaseModel):
    """Workflow limits and history retention (docs/workflows.md)."""

    max_payload_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="largest execution input and state input/output, as UTF-8 JSON (Step Functions' "
        "256 KiB): a larger start is a 413, a larger state fails its execution with States.DataLimitExceeded",
    )
    history_max_age_days: float = Field(
        default=30.0, ge=0, description="finished executions started longer ago are deleted (0: kept forever)"
    )
    history_max_executions_per_workflow: int = Field(
        default=10_000,
        ge=0,
        description="executions kept per workflow; the oldest finished ones go first, never a RUNNING one "
        "(0: no cap)",
    )
    purge_interval_s: float = Field(
        default=3600.0, ge=0.1, description="how often each server process applies the retention"
    )


# -- stats (issue 17: the dashboard's history) ------------------------------------------------
class StatsSettings(BaseModel):
    """Per-minute traffic and per-key usage aggregates kept in the registry database for the
    dashboard (``/v1/stats/...``), written off the request path by every process."""

    enabled: bool = Field(default=True, description="record per-minute stats into the database")
    flush_s: float = Field(default=10.0, gt=0, le=3600, description="how often aggregates are written out")
    retention_days: float = Field(
        default=7.0, ge=0, description="stats rows older than this are deleted, hourly (0 = kept forever)"
    )
    max_keys: int = Field(
        default=5000,
        ge=10,
        description="distinct (model, version, route) and (key, model) rows per minute; beyond: '(other)'",
    )


# -- end stats ---------------------------------------------------------------------------------


class CaptureSettings(BaseModel):
    """Data capture (docs/monitoring.md): a sampled copy of requests and answers, written to the
    store in SageMaker Data Capture format off the request path."""

    sample: float = Field(
        default=0.0, ge=0, le=1, description="fraction of requests captured (0 = off); per model via the API"
    )
    queue_size: int = Field(
        default=10_000,
        ge=1,
        description="captured records waiting to be written; beyond it a sample is dropped",
    )
    queue_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="bytes of captured records waiting; beyond it dropped"
    )
    max_record_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="a larger request+answer is not captured (counted)"
    )
    flush_s: float = Field(default=5.0, gt=0, le=3600, description="how often the queue is written out")
    file_records: int = Field(default=1000, ge=1, description="records per written object at most")
    retention_days: float = Field(
        default=30.0, ge=0, description="captured files older than this are deleted (0 = kept forever)"
    )
    redact: list[str] = Field(
        default_factory=list,
        description="JSON fields (names or dotted paths) never captured, for every model",
    )


class MonitorSettings(BaseModel):
    """Drift against each version's baseline (docs/monitoring.md)."""

    interval_s: float = Field(
        default=600.0,
        ge=0,
        description="how often drift is evaluated for captured models (0 = on demand only)",
    )
    window_s: float = Field(
        default=3600.0, gt=0, description="the window of captured data a scheduled run reads"
    )
    min_rows: int = Field(default=50, ge=1, description="fewer captured rows than this: no verdict")
    max_rows: int = Field(default=20_000, ge=1, description="captured rows read per evaluation at most")
    psi_warn: float = Field(default=0.1, ge=0, description="PSI at or above this: a moderate shift")
    psi_alert: float = Field(default=0.25, ge=0, description="PSI at or above this: drift (a violation)")
    p_value: float = Field(default=0.01, gt=0, lt=1, description="KS / chi-squared significance level")


class AlertSettings(BaseModel):
    """Alert rules evaluated in-process (docs/monitoring.md)."""

    enabled: bool = Field(default=True, description="evaluate alert rules (one evaluator across processes)")
    interval_s: float = Field(default=15.0, gt=0, le=3600, description="evaluation interval")
    snapshot_s: float = Field(
        default=5.0, gt=0, le=600, description="how often each process shares its metric samples"
    )
    rules_file: Path | None = Field(
        default=None, description="Prometheus alerting-rule YAML with extra (or replacing) rules"
    )
    default_rules: bool = Field(default=True, description="include the built-in rules")
    webhooks: list[str] = Field(
        default_factory=list, description="URLs receiving Alertmanager webhook v4 notifications"
    )
    alertmanager_url: str | None = Field(
        default=None, description="a real Alertmanager to push to (its /api/v2/alerts)"
    )
    repeat_interval_s: float = Field(
        default=4 * 3600.0, gt=0, description="a firing alert is notified again after this"
    )
    history_days: float = Field(default=7.0, ge=0, description="alert history kept (0 = forever)")
    memory_limit_bytes: int | None = Field(
        default=None, ge=1, description="process memory limit for the memory rule (default: cgroup, else RAM)"
    )


class HttpSettings(BaseModel):
    """Connection limits of ``mlgate serve``'s HTTP server (per process). A request over a limit is
    answered (431, 408, 503) and its connection closed; each refusal is an access-log line."""

    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, le=1024 * 1024, description="request line + headers; larger: 431"
    )
    max_headers: int = Field(default=100, ge=8, le=10_000, description="header lines per request; more: 431")
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="a request's line and headers must arrive within this of its first byte (else 408); "
        "a new connection that sends nothing for this long is closed",
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="a request body that stops arriving for this long: 408"
    )
    send_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="a client that reads nothing of its answers for this long is disconnected (its "
        "requests end as 499); while it does not read, nothing more of its requests is read either",
    )
    keep_alive_s: float = Field(
        default=5.0, gt=0, le=3600, description="an idle connection is closed after this"
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="open connections per process; beyond, a new connection gets 503 at once and is closed "
        "(mlgate serve raises the process's open-file limit to fit, within the hard limit)",
    )
    forwarded_allow_ips: list[str] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="proxies trusted to tell the client's address (X-Forwarded-For) and scheme "
        '(X-Forwarded-Proto): addresses or networks, ["*"] for any',
    )
    lane: bool = Field(
        default=True,
        description="serve the edge's own routes (predictions, probes) straight from the parsed request, "
        "without an ASGI cycle; off: every request goes through ASGI (docs/benchmarks.md)",
    )


# -- train jobs (lifecycle/jobs.py, issue 16) --------------------------------------------------
class TrainSettings(BaseModel):
    """``MLGATE_TRAIN__*``: training runs started over HTTP or by a drift alert (docs/lifecycle.md)."""

    recipes: list[str] = Field(
        default_factory=list,
        description="user recipes an HTTP caller may run: exact 'module:function' or 'module:*'; the "
        "built-in recipes are always allowed (an admin caller must not import arbitrary modules)",
    )
    timeout_s: float = Field(default=3600.0, gt=0, le=7 * 86400, description="a run is killed after this")
    heartbeat_s: float = Field(default=5.0, gt=0, le=300, description="how often a running run is checked")
    stale_s: float = Field(
        default=60.0, gt=0, le=3600, description="a run without a heartbeat for this long is marked failed"
    )
    max_running: int = Field(default=2, ge=1, le=64, description="runs at once per server process")
    output_lines: int = Field(default=40, ge=1, le=1000, description="last lines of a run's output kept")


# -- Ray Serve (mlgate.ray_serve, issue 18) ---------------------------------------------------
class RaySettings(BaseModel):
    """``MLGATE_RAY__*``: each model a Ray Serve deployment behind mlgate's gateway (docs/deploy.md,
    "Ray Serve"). ``address`` set: ``mlgate serve`` runs no model itself, it forwards each model call
    to the model's deployment (``mlgate ray deploy``); keys, plans, limits, routing stay here."""

    address: str | None = Field(
        default=None,
        description="the Ray cluster to join as a driver (host:port of the head's GCS, or 'auto'); "
        "unset: models run in this process",
    )
    namespace: str = Field(default="mlgate", description="the Ray namespace this driver joins")
    num_replicas: int = Field(
        default=1, ge=1, le=1024, description="replicas per model deployment (without autoscaling)"
    )
    autoscaling: dict[str, Any] | None = Field(
        default=None,
        description='Ray Serve\'s autoscaling_config per deployment, e.g. {"min_replicas": 1, '
        '"max_replicas": 4, "target_ongoing_requests": 8}; set: num_replicas is ignored',
    )
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs each replica reserves (Ray's num_cpus)")
    actor_options: dict[str, Any] = Field(
        default_factory=dict,
        description='more ray_actor_options for every replica, e.g. {"memory": 2000000000}',
    )
    max_replicas_per_node: int | None = Field(
        default=None, ge=1, description="at most this many replicas of one model on one node"
    )
    max_ongoing_requests: int = Field(
        default=64,
        ge=1,
        description="requests a replica takes at once (its batcher groups them; Ray's default is 5)",
    )
    replica_data_dir: Path | None = Field(
        default=None,
        description="each replica's data dir (model cache, logs) on its node; default <data_dir>/ray",
    )
    call_margin_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="the gateway waits for a replica this long past the model's own timeout (then 504)",
    )


# -- the AWS Step Functions API (http/routes_sfn.py, issue 19) --------------------------------
class SfnSettings(BaseModel):
    """``MLGATE_SFN__*``: the AWS Step Functions API on ``POST /`` (docs/workflows.md, "The AWS
    Step Functions API")."""

    region: str = Field(
        default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$", description="the region in ARNs"
    )
    account: str = Field(default="123456789012", pattern=r"^[0-9]{12}$", description="the account in ARNs")
    unauthenticated: bool = Field(
        default=False,
        description="a local emulator for AWS tools that cannot send an API key (the AWS CLI): calls "
        "without credentials act as an admin. Only with a loopback bind address (refused at start "
        "otherwise), and only for loopback peers",
    )
    sync_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="StartSyncExecution waits this long, then stops the execution (TIMED_OUT)",
    )


class Settings(BaseSettings):
    """Every knob of an mlgate server. Unset paths derive from ``data_dir``."""

    model_config = SettingsConfigDict(
        env_prefix="MLGATE_", env_nested_delimiter="__", extra="ignore", protected_namespaces=()
    )

    host: str = Field(default="127.0.0.1", description="bind address; loopback unless asked otherwise")
    port: int = Field(default=8000, ge=0, le=65535, description="bind port")
    workers: int = Field(default=1, ge=1, le=64, description="server processes")
    dev_mode: bool = Field(default=False, description="relaxes secret checks; never in production")

    data_dir: Path = Field(default=Path(".mlgate"), description="root of local state")
    database_url: str | None = Field(default=None, description="sqlite:///… or postgresql://…")
    store_url: str | None = Field(default=None, description="file:///path or s3://bucket/prefix")
    cache_dir: Path | None = Field(default=None, description="local cache of downloaded model files")
    s3: S3Settings = Field(default_factory=S3Settings)

    max_body_bytes: int = Field(default=6 * 1024 * 1024, ge=1024, description="larger bodies get 413")
    max_upload_bytes: int = Field(
        default=2 * 1024**3,
        ge=1024,
        description="model uploads (streamed to disk, not held in memory); larger get 413",
    )
    max_inflight: int = Field(
        default=64,
        ge=0,
        description="requests served at once per process; beyond it 503 + Retry-After at once instead "
        "of a growing queue (0 = no limit; health, readiness and metrics are never refused)",
    )
    shutdown_delay_s: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description="on SIGTERM, readiness answers 503 this long before the listener closes (so load "
        "balancers stop sending first); in-flight requests then finish (up to 30 s)",
    )
    default_timeout_s: float = Field(default=60.0, gt=0, description="per-model timeout when not in manifest")
    alias_ttl_s: float = Field(default=1.0, ge=0, description="how long a resolved alias is cached")
    load_on_start: bool = Field(default=True, description="load every aliased version at startup")

    trusted_sha256: list[str] = Field(
        default_factory=list, description="sha256 of pickle/joblib artifacts allowed to load"
    )
    model_uris: dict[str, str] = Field(
        default_factory=dict,
        description="models declared by URI alone: MLGATE_MODEL_URIS__<name>=s3://bucket/key.skops",
    )
    model_s3_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MODEL_S3_URI", "MLGATE_MODEL_S3_URI"),
        description="the original serverless deployment's single-model variable (model named by model_name)",
    )
    model_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MODEL_NAME", "MLGATE_MODEL_NAME"),
        description="name of the model given by MODEL_S3_URI (default: the file's stem)",
    )
    services: list[str] | None = Field(
        default=None, description="enabled reference services by name (default: every installed one)"
    )

    keras_backend: str = Field(
        default="torch",
        description="KERAS_BACKEND for the keras runtime (the 'keras' extra ships torch); an explicit "
        "KERAS_BACKEND in the environment wins",
    )
    admin_key: str | None = Field(
        default=None,
        description="bootstrap admin key to install (hashed) instead of generating one on first start",
    )
    generate_admin_key: bool = Field(
        default=True,
        description="without admin_key, generate a random admin key on first start and print it once "
        "to stderr; false: no admin key until admin_key is set (AWS Lambda's default: its stderr is "
        "CloudWatch Logs, and a fresh /tmp registry would print a new credential at every cold start)",
    )
    log: LogSettings = Field(default_factory=LogSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limiter: LimiterSettings = Field(default_factory=LimiterSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    workflows: WorkflowSettings = Field(default_factory=WorkflowSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    stats: StatsSettings = Field(default_factory=StatsSettings)  # issue 17
    ray: RaySettings = Field(default_factory=RaySettings)  # issue 18: mlgate.ray_serve
    sfn: SfnSettings = Field(default_factory=SfnSettings)  # issue 19: the Step Functions API

    @model_validator(mode="after")
    def _sfn_emulator_on_loopback(self) -> Settings:
        if self.sfn.unauthenticated and not is_loopback(self.host):
            raise ValueError(
                f"MLGATE_SFN__UNAUTHENTICATED needs a loopback bind address (host is {self.host!r})"
            )
        return self

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        data = self.data_dir
        if self.database_url is None:
            self.database_url = f"sqlite:///{(data / 'mlgate.db').resolve()}"
        if self.store_url is None:
            self.store_url = (data / "store").resolve().as_uri()
        if self.cache_dir is None:
            self.cache_dir = data / "cache"
        if self.log.access_file is None:
            self.log.access_file = data / "logs" / "access.log"
        if self.admin_key is not None and len(self.admin_key) < 24 and not self.dev_mode:
            raise ValueError("admin_key must be at least 24 characters (or set dev_mode)")
        return self

    @property
    def declared_uris(self) -> dict[str, str]:
        """Models declared by URI alone, including the legacy ``MODEL_S3_URI`` variable."""
        uris = dict(self.model_uris)
        if self.model_s3_uri:
            stem = self.model_s3_uri.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
            uris.setdefault(self.model_name or stem.lower().replace(" ", "_"), self.model_s3_uri)
        return uris


def is_loopback(host: str) -> bool:
    """True for a loopback address or ``localhost`` (the Step Functions emulator's condition)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, with explicit overrides taking precedence."""
    return Settings(**overrides)


def apply_process_environment(settings: Settings) -> None:
    """Set process-wide variables third-party libraries read at import (Keras' backend)."""
    os.environ.setdefault("KERAS_BACKEND", settings.keras_backend)


def export_environ(values: dict[str, str]) -> None:
    """Publish settings to child processes (``serve --workers N``) as ``MLGATE_*`` variables."""
    for name, value in values.items():
        os.environ[f"MLGATE_{name.upper()}"] = value
