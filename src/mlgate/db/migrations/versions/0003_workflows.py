"""Workflows: deployed definitions, executions and their event histories.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("mapping", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("name", name="pk_workflows"),
    )
    op.create_table(
        "executions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cause", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(160), nullable=True),
        sa.Column("parent_id", sa.String(32), nullable=True),
        sa.Column("runner", sa.String(160), nullable=True),
        _ts("started_at"),
        _ts("stopped_at", nullable=True),
        _ts("heartbeat_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_executions"),
        sa.ForeignKeyConstraint(["workflow"], ["workflows.name"], name="fk_executions_workflow_workflows"),
        sa.UniqueConstraint("workflow", "name", name="uq_executions_workflow_name"),
    )
    op.create_index("ix_executions_workflow_started_at", "executions", ["workflow", "started_at"])
    op.create_index("ix_executions_status_started_at", "executions", ["status", "started_at"])
    op.create_index("ix_executions_owner_started_at", "executions", ["owner", "started_at"])
    op.create_table(
        "execution_events",
        sa.Column("execution_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        _ts("timestamp"),
        sa.Column("state", sa.String(128), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "seq", name="pk_execution_events"),
        sa.ForeignKeyConstraint(
            ["execution_id"], ["executions.id"], name="fk_execution_events_execution_id_executions"
        ),
    )


def downgrade() -> None:
    op.drop_table("execution_events")
    for index in (
        "ix_executions_owner_started_at",
        "ix_executions_status_started_at",
        "ix_executions_workflow_started_at",
    ):
        op.drop_index(index, table_name="executions")
    op.drop_table("executions")
    op.drop_table("workflows")
