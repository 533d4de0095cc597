"""The store's tables, as the Alembic migrations in store/migrations/ make them
(tests/test_store.py checks the two agree)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(200), primary_key=True),
    sa.Column("first_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("latest_verdict_id", sa.String(64), nullable=False),
    sa.Column("latest_step", sa.BigInteger, nullable=False),
    sa.Column("latest_status", sa.SmallInteger, nullable=False),
    sa.Column("latest_primary_cause", sa.SmallInteger, nullable=False),
    sa.Column("verdict_count", sa.Integer, nullable=False),
    sa.Column("stalled", sa.Boolean, nullable=False),
    # The run's lifecycle (migration 0003): a RunState, and when and why it ended.
    sa.Column("state", sa.SmallInteger, nullable=False, server_default="1"),
    sa.Column("end_time", sa.DateTime(timezone=True)),
    sa.Column("stop_cause", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("end_reason", sa.String(500), nullable=False, server_default=""),
    sa.Column("ad_hoc", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_runs_last_time", "last_time"),
)
verdicts = sa.Table(
    "verdicts",
    metadata,
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
    sa.Column("grad_norm", sa.Float),
    sa.Column("weight_digests", sa.JSON, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    # Request-id deduplication rests on this constraint.
    sa.UniqueConstraint("run_id", "request_id", name="uq_verdicts_run_request"),
    sa.Index("ix_verdicts_run_id_id", "run_id", "id"),
    sa.Index("ix_verdicts_create_time", "create_time"),
)
# The causes of a verdict's warning and critical findings (ListVerdicts' cause filter).
verdict_causes = sa.Table(
    "verdict_causes",
    metadata,
    sa.Column("verdict_pk", sa.BigInteger, sa.ForeignKey("verdicts.id"), primary_key=True),
    sa.Column("cause", sa.SmallInteger, primary_key=True),
    sa.Index("ix_verdict_causes_cause", "cause", "verdict_pk"),
)
