"""The gradient norm of each verdict, for the per-run Prometheus gauges.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: verdicts stored before this revision, and non-finite norms, have none.
    op.add_column("verdicts", sa.Column("grad_norm", sa.Float))
    op.create_index("ix_runs_last_time", "runs", ["last_time"])


def downgrade() -> None:
    op.drop_index("ix_runs_last_time", "runs")
    with op.batch_alter_table("verdicts") as batch:  # SQLite cannot drop columns in place
        batch.drop_column("grad_norm")
