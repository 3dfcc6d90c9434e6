"""The gateway: users, usage plans, key-plan attachments, daily usage, limiter state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("email", sa.String(255), nullable=True),
        sa.Column("first_name", sa.String(128), nullable=True),
        sa.Column("last_name", sa.String(128), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "usage_plans",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column("quota_limit", sa.BigInteger(), nullable=True),
        sa.Column("quota_period", sa.String(8), nullable=True),
        sa.Column("quota_offset", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_usage_plans"),
    )
    op.create_table(
        "key_plans",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("plan", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "scope", name="pk_key_plans"),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name="fk_key_plans_key_id_api_keys"),
        sa.ForeignKeyConstraint(["plan"], ["usage_plans.name"], name="fk_key_plans_plan_usage_plans"),
    )
    op.create_table(
        "usage_daily",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("throttled", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "day", "scope", name="pk_usage_daily"),
    )
    op.create_table(
        "limiter_buckets",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_limiter_buckets"),
    )
    op.create_table(
        "limiter_counters",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_limiter_counters"),
    )


def downgrade() -> None:
    for table in ("limiter_counters", "limiter_buckets", "usage_daily", "key_plans", "usage_plans", "users"):
        op.drop_table(table)
