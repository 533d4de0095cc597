"""Runs have an end: their state (active, finished, stopped), when and why they
were closed, and whether they are ad hoc (never exported as per-run metrics).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (SQLite takes them in place when NOT NULL has a default).
    # Runs stored before this revision are active (RUN_STATE_ACTIVE = 1).
    op.add_column("runs", sa.Column("state", sa.SmallInteger, nullable=False, server_default="1"))
    op.add_column("runs", sa.Column("end_time", sa.DateTime(timezone=True)))
    op.add_column(
        "runs", sa.Column("stop_cause", sa.SmallInteger, nullable=False, server_default="0")
    )
    op.add_column(
        "runs", sa.Column("end_reason", sa.String(500), nullable=False, server_default="")
    )
    op.add_column(
        "runs", sa.Column("ad_hoc", sa.Boolean, nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:  # SQLite cannot drop columns in place
        for column in ("ad_hoc", "end_reason", "stop_cause", "end_time", "state"):
            batch.drop_column(column)
