"""Monitoring: per-model capture settings, leases, telemetry snapshots, alerts, drift figures.

- ``monitor_models``: a model's capture sample, redacted fields and retention (absent: globals).
- ``monitor_leases``: one holder at a time across processes (alert evaluator, drift schedule).
- ``telemetry_snapshots``: each process's metric samples, for the one evaluator.
- ``alert_states`` / ``alert_events``: alert instances' Prometheus states and their history.
- ``drift_latest``: the last drift figures per model, version, feature and statistic.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "monitor_models",
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("capture_sample", sa.Float(), nullable=True),
        sa.Column("capture_redact", sa.Text(), nullable=True),
        sa.Column("capture_retention_days", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("model", name="pk_monitor_models"),
    )
    op.create_table(
        "monitor_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(160), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_monitor_leases"),
    )
    op.create_table(
        "telemetry_snapshots",
        sa.Column("process", sa.String(160), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("process", name="pk_telemetry_snapshots"),
    )
    op.create_table(
        "alert_states",
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("rule", sa.String(255), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("annotations", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("active_at", sa.Float(), nullable=True),
        sa.Column("fired_at", sa.Float(), nullable=True),
        sa.Column("resolved_at", sa.Float(), nullable=True),
        sa.Column("last_seen_at", sa.Float(), nullable=True),
        sa.Column("last_notified_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", name="pk_alert_states"),
    )
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("rule", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_events"),
    )
    op.create_index("ix_alert_events_at", "alert_events", ["at"])
    op.create_table(
        "drift_latest",
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("feature", sa.String(255), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("evaluated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("model", "version", "feature", "metric", name="pk_drift_latest"),
    )


def downgrade() -> None:
    for table in (
        "drift_latest",
        "alert_events",
        "alert_states",
        "telemetry_snapshots",
        "monitor_leases",
        "monitor_models",
    ):
        op.drop_table(table)
