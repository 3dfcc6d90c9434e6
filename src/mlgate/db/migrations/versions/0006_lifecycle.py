"""Lifecycle: alias traffic policies (canary split, shadow, guard), model history, train runs,
retrain-on-drift opt-ins, shadow comparison figures.

- ``alias_policies``: per (model, alias): canary weights, the shadow version and its sample,
  the rollout guard (the alias row's ``version`` stays the stable version).
- ``canary_assignments``: which version each caller (a key id's or user's hash) sees during a split.
- ``model_events``: a model's history (alias moves, splits, rollbacks, shadows, train runs).
- ``train_runs``: every ``mlgate train`` started by the server (HTTP job or retrain on drift).
- ``retrain_policies``: a model's opt-in to retraining when its drift alert fires.
- ``shadow_stats``: each process's running comparison of primary and shadow answers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "alias_policies",
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("split", sa.Text(), nullable=True),
        sa.Column("guard", sa.Text(), nullable=True),
        sa.Column("shadow_version", sa.Integer(), nullable=True),
        sa.Column("shadow_sample", sa.Float(), nullable=True),
        sa.Column("shadow_options", sa.Text(), nullable=True),
        sa.Column("split_since", sa.Float(), nullable=True),
        sa.Column("shadow_since", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("model", "alias", name="pk_alias_policies"),
    )
    op.create_table(
        "canary_assignments",
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("identity", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("model", "alias", "identity", name="pk_canary_assignments"),
    )
    op.create_table(
        "model_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("alias", sa.String(64), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(160), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_events"),
    )
    op.create_index("ix_model_events_model_at", "model_events", ["model", "at"])
    op.create_table(
        "train_runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("recipe", sa.String(255), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(160), nullable=True),
        sa.Column("process", sa.String(160), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("heartbeat_at", sa.Float(), nullable=True),
        sa.Column("progress", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("decision", sa.String(32), nullable=True),
        sa.Column("promoted", sa.Boolean(), nullable=True),
        sa.Column("report", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_train_runs"),
    )
    op.create_index("ix_train_runs_model_created", "train_runs", ["model", "created_at"])
    op.create_table(
        "retrain_policies",
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("on_drift", sa.Boolean(), nullable=False),
        sa.Column("recipe", sa.String(255), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("cooldown_s", sa.Float(), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("last_started_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("model", name="pk_retrain_policies"),
    )
    op.create_table(
        "shadow_stats",
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("process", sa.String(160), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("model", "alias", "process", name="pk_shadow_stats"),
    )


def downgrade() -> None:
    for table in (
        "shadow_stats",
        "retrain_policies",
        "train_runs",
        "model_events",
        "canary_assignments",
        "alias_policies",
    ):
        op.drop_table(table)
