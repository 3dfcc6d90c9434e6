"""Dashboard: per-minute and per-hour aggregates shared by workers, and signed-in sessions.

- ``stats_traffic``: per (resolution, bucket, model, version, route): requests, 4xx, 5xx,
  throttled, a fixed latency histogram (``lat_0`` … ``lat_11``, upper bounds in
  ``mlgate.telemetry.stats``), latency sum, batch items and batches. ``resolution`` is ``m``
  (``bucket`` = epoch minute) or ``h`` (epoch hour); each process adds its counts to both.
- ``stats_usage``: per (resolution, bucket, key id, model): the key's owner, requests, units,
  throttled, errors.
- ``dashboard_sessions``: a signed-in dashboard session (sha256 of its cookie value), whose
  caller it stands for, and when it expires.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

LATENCY_BUCKETS = 12


def upgrade() -> None:
    op.create_table(
        "stats_traffic",
        sa.Column("resolution", sa.String(1), nullable=False),
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("route", sa.String(255), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors_4xx", sa.BigInteger(), nullable=False),
        sa.Column("errors_5xx", sa.BigInteger(), nullable=False),
        sa.Column("throttled", sa.BigInteger(), nullable=False),
        *[sa.Column(f"lat_{i}", sa.BigInteger(), nullable=False) for i in range(LATENCY_BUCKETS)],
        sa.Column("latency_sum", sa.Float(), nullable=False),
        sa.Column("batch_items", sa.BigInteger(), nullable=False),
        sa.Column("batches", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resolution", "bucket", "model", "version", "route", name="pk_stats_traffic"),
    )
    op.create_index("ix_stats_traffic_model", "stats_traffic", ["resolution", "model", "bucket"])
    op.create_table(
        "stats_usage",
        sa.Column("resolution", sa.String(1), nullable=False),
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("throttled", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resolution", "bucket", "key_id", "model", name="pk_stats_usage"),
    )
    op.create_index("ix_stats_usage_owner", "stats_usage", ["resolution", "owner", "bucket"])
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("caller_id", sa.String(128), nullable=False),
        sa.Column("username", sa.String(128), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_dashboard_sessions"),
    )
    op.create_index("ix_dashboard_sessions_expires", "dashboard_sessions", ["expires_at"])


def downgrade() -> None:
    for table in ("dashboard_sessions", "stats_usage", "stats_traffic"):
        op.drop_table(table)
