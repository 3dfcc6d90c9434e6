"""Gateway budgets: key lineage (rotations share a budget), usage units, explicit unmetered plan.

- ``api_keys.lineage``: the id of the first key of a rotation chain; an ownerless key's
  budget belongs to its lineage, so rotating it never mints a fresh quota.
- ``registry_state.access_generation``: bumped by every change to who may call what; the
  gateway's per-process caches stay valid while it does not move.
- ``executions``: names unique per (workflow, owner, name) instead of (workflow, name), so
  one tenant's execution names never collide with another's.
- ``usage_daily.units``: items actually served (a batch of N answered items is N units),
  beside ``requests`` (calls).
- For every admin key that had no plan (they were unmetered implicitly before), an explicit
  ``*`` attachment to the ``unmetered`` plan (created if needed), so nothing changes for
  them and ``keys list`` shows the choice.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_UNMETERED = "unmetered"


def _rebuild_executions(alter: Callable[[], None]) -> None:
    """SQLite changes a table's constraints by rebuilding it (copy, DROP, rename), and a DROP
    with foreign keys on would orphan the history rows referencing it (foreign keys cannot be
    turned off inside the migration's transaction): the history is set aside meanwhile."""
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        alter()
        return
    conn.exec_driver_sql("CREATE TEMP TABLE _mlgate_0004_events AS SELECT * FROM execution_events")
    conn.exec_driver_sql("DELETE FROM execution_events")
    alter()
    conn.exec_driver_sql("INSERT INTO execution_events SELECT * FROM _mlgate_0004_events")
    conn.exec_driver_sql("DROP TABLE _mlgate_0004_events")


def _drop_unique_name() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_constraint("uq_executions_workflow_name", type_="unique")


def _restore_unique_name() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.create_unique_constraint("uq_executions_workflow_name", ["workflow", "name"])


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("lineage", sa.String(32), nullable=True))
    with op.batch_alter_table("usage_daily") as batch:
        batch.add_column(sa.Column("units", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("registry_state") as batch:
        batch.add_column(sa.Column("access_generation", sa.BigInteger(), nullable=False, server_default="0"))
    _rebuild_executions(_drop_unique_name)
    op.create_index(
        "uq_executions_workflow_owner_name",
        "executions",
        ["workflow", sa.text("coalesce(owner, '')"), "name"],
        unique=True,
    )
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE api_keys SET lineage = id WHERE lineage IS NULL"))
    conn.execute(sa.text("UPDATE usage_daily SET units = requests"))
    plans = sa.table(
        "usage_plans",
        sa.column("name", sa.String),
        sa.column("description", sa.Text),
        sa.column("quota_offset", sa.Integer),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    bare = conn.execute(
        sa.text(
            "SELECT count(*) FROM api_keys WHERE role = 'admin' AND id NOT IN (SELECT key_id FROM key_plans)"
        )
    ).scalar_one()
    if not bare:
        return  # a new database: the server creates the plan on start
    exists = conn.execute(sa.text("SELECT name FROM usage_plans WHERE name = :n"), {"n": _UNMETERED}).first()
    if exists is None:
        now = datetime.now(UTC)
        conn.execute(
            plans.insert().values(
                name=_UNMETERED,
                description="no limits: only for admin keys, by explicit choice",
                quota_offset=0,
                created_at=now.replace(tzinfo=None) if conn.dialect.name == "sqlite" else now,
            )
        )
    conn.execute(
        sa.text(
            "INSERT INTO key_plans (key_id, scope, plan) "
            "SELECT id, '*', :plan FROM api_keys WHERE role = 'admin' "
            "AND id NOT IN (SELECT key_id FROM key_plans)"
        ),
        {"plan": _UNMETERED},
    )


def downgrade() -> None:
    op.drop_index("uq_executions_workflow_owner_name", table_name="executions")
    _rebuild_executions(_restore_unique_name)
    if op.get_bind().dialect.name == "sqlite":
        return  # the added columns stay (their defaults fit 0003's code); dropping them would rebuild more
    with op.batch_alter_table("registry_state") as batch:
        batch.drop_column("access_generation")
    with op.batch_alter_table("usage_daily") as batch:
        batch.drop_column("units")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("lineage")
