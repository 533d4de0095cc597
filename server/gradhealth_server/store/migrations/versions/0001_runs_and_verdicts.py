"""Runs and verdicts.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("first_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latest_verdict_id", sa.String(64), nullable=False),
        sa.Column("latest_step", sa.BigInteger, nullable=False),
        sa.Column("latest_status", sa.SmallInteger, nullable=False),
        sa.Column("latest_primary_cause", sa.SmallInteger, nullable=False),
        sa.Column("verdict_count", sa.Integer, nullable=False),
        sa.Column("stalled", sa.Boolean, nullable=False),
    )
    op.create_table(
        "verdicts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("verdict_id", sa.String(64), nullable=False, unique=True),
        sa.Column("run_id", sa.String(200), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("request_id", sa.String(100)),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("primary_cause", sa.SmallInteger, nullable=False),
        sa.Column("checkpoint_sha256", sa.String(64), nullable=False),
        sa.Column("model_fingerprint", sa.String(64), nullable=False),
        sa.Column("batch_accuracy", sa.Float),
        sa.Column("batch_loss", sa.Float),
        sa.Column("reported_accuracy", sa.Float),
        sa.Column("reported_loss", sa.Float),
        sa.Column("weight_digests", sa.JSON, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),  # the gradhealth.v1.Verdict
        sa.UniqueConstraint("run_id", "request_id", name="uq_verdicts_run_request"),
    )
    op.create_index("ix_verdicts_run_id_id", "verdicts", ["run_id", "id"])
    op.create_index("ix_verdicts_create_time", "verdicts", ["create_time"])
    op.create_table(
        "verdict_causes",
        sa.Column("verdict_pk", sa.BigInteger, sa.ForeignKey("verdicts.id"), primary_key=True),
        sa.Column("cause", sa.SmallInteger, primary_key=True),
    )
    op.create_index("ix_verdict_causes_cause", "verdict_causes", ["cause", "verdict_pk"])


def downgrade() -> None:
    op.drop_table("verdict_causes")
    op.drop_table("verdicts")
    op.drop_table("runs")
