"""The verdict store: every verdict, committed before its reply is sent.

SQLAlchemy Core over SQLite (a file, the zero-set-up default) or PostgreSQL
(several replicas share one). The schema is versioned by Alembic migrations,
applied when the store opens. A verdict row keeps the whole wire Verdict plus
the few columns queries and the history rules read; checkpoints are not kept.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.dialects import postgresql, sqlite

from gradhealth.contract import enum_name
from gradhealth.v1 import service_pb2, verdict_pb2
from gradhealth_server.rules.history import CheckpointColumns, CheckpointSummary
from gradhealth_server.store.rows import (
    aware,
    run_message,
    token_int,
    utc,
    verdict_row,
)
from gradhealth_server.store.schema import runs, verdict_causes, verdicts

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

ALARMING = (verdict_pb2.SEVERITY_WARNING, verdict_pb2.SEVERITY_CRITICAL)
ACTIVE = service_pb2.RUN_STATE_ACTIVE
CLOSED_STATES = (service_pb2.RUN_STATE_FINISHED, service_pb2.RUN_STATE_STOPPED)
MAX_END_REASON = 500


@dataclass(frozen=True)
class ActiveRun:
    """A run's latest verdict and its state, as the per-run Prometheus gauges show it."""

    run_id: str
    state: int
    end_time: dt.datetime | None
    status: int
    primary_cause: int
    step: int
    stalled: bool
    last_time: dt.datetime
    reported_accuracy: float | None
    reported_loss: float | None
    batch_accuracy: float | None
    batch_loss: float | None
    grad_norm: float | None


@dataclass(frozen=True)
class VerdictQuery:
    run_id: str = ""
    status: int = verdict_pb2.STATUS_UNSPECIFIED
    cause: int = verdict_pb2.CAUSE_UNSPECIFIED
    start_time: Timestamp | None = None
    end_time: Timestamp | None = None


def _page_size(size: int) -> int:
    return DEFAULT_PAGE_SIZE if size <= 0 else min(size, MAX_PAGE_SIZE)


class VerdictStore:
    """Thread-safe (one connection per call from SQLAlchemy's pool)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        self._migrate()

    def _migrate(self) -> None:
        config = Config()
        migrations = files("gradhealth_server.store") / "migrations"
        config.set_main_option("script_location", str(migrations))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together: one migrates, the others wait for it.
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": 0x6768})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    # --- writes ---------------------------------------------------------------------

    def add(
        self,
        verdict: verdict_pb2.Verdict,
        request_id: str = "",
        ad_hoc: bool = False,
        columns: CheckpointColumns | None = None,
    ) -> verdict_pb2.Verdict:
        """Commit a verdict and update its run; returns the stored verdict, which
        is an earlier one when this request id was already answered. An ad-hoc
        run is stored like any other but never exported as per-run metrics."""
        row = verdict_row(verdict, request_id, columns or CheckpointColumns())
        created = row["create_time"]
        alarming = [f for f in verdict.findings if f.severity in ALARMING]
        stalled = any(f.cause == verdict_pb2.CAUSE_STALLED for f in alarming)
        try:
            with self.engine.begin() as db:
                self._upsert_run(db, verdict, created, stalled, ad_hoc)
                pk = db.execute(sa.insert(verdicts).values(**row)).inserted_primary_key[0]
                causes = {f.cause for f in alarming}
                if causes:
                    db.execute(
                        sa.insert(verdict_causes),
                        [{"verdict_pk": pk, "cause": c} for c in sorted(causes)],
                    )
        except sa.exc.IntegrityError:
            if request_id and (stored := self.find_request(verdict.run_id, request_id)):
                return stored  # the same call's other attempt won the race
            raise
        return verdict

    def _upsert_run(
        self, db: Any, v: verdict_pb2.Verdict, created: dt.datetime, stalled: bool, ad_hoc: bool
    ) -> None:
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        values = {
            "run_id": v.run_id,
            "first_time": created,
            "last_time": created,
            "latest_verdict_id": v.verdict_id,
            "latest_step": v.step,
            "latest_status": v.status,
            "latest_primary_cause": v.primary_cause,
            "verdict_count": 1,
            "stalled": stalled,
            "state": ACTIVE,
            "ad_hoc": ad_hoc,
        }
        statement = insert(runs).values(**values)
        # The latest checkpoint is the highest step (a late retry of an old step, or
        # another replica's clock, must not move it back); the newest breaks ties.
        new = statement.excluded
        newer = sa.or_(
            new.latest_step > runs.c.latest_step,
            sa.and_(new.latest_step == runs.c.latest_step, new.last_time >= runs.c.last_time),
        )
        latest = {
            name: sa.case((newer, statement.excluded[name]), else_=runs.c[name])
            for name in (
                "last_time",
                "latest_verdict_id",
                "latest_step",
                "latest_status",
                "latest_primary_cause",
                "stalled",
            )
        }
        # A closed run reopens on a checkpoint past its last one (training resumed);
        # a late arrival of an earlier checkpoint leaves it closed.
        reopen = sa.and_(runs.c.state != ACTIVE, new.latest_step > runs.c.latest_step)
        lifecycle = {
            "state": sa.case((reopen, ACTIVE), else_=runs.c.state),
            "end_time": sa.case((reopen, sa.null()), else_=runs.c.end_time),
            "stop_cause": sa.case((reopen, 0), else_=runs.c.stop_cause),
            "end_reason": sa.case((reopen, ""), else_=runs.c.end_reason),
            "ad_hoc": sa.or_(runs.c.ad_hoc, new.ad_hoc),
        }
        db.execute(
            statement.on_conflict_do_update(
                index_elements=[runs.c.run_id],
                set_={
                    **latest,
                    **lifecycle,
                    "verdict_count": runs.c.verdict_count + 1,
                    "first_time": sa.case(
                        (new.first_time < runs.c.first_time, new.first_time),
                        else_=runs.c.first_time,
                    ),
                },
            )
        )

    def close_run(
        self, run_id: str, state: int, stop_cause: int = 0, reason: str = ""
    ) -> service_pb2.Run | None:
        """Mark a run finished or stopped; None when there is no such run. Closing
        it again in the same state changes nothing (a retried call)."""
        if state not in CLOSED_STATES:
            raise ValueError(f"a run is closed as finished or stopped, not state {state}")
        with self.engine.begin() as db:
            db.execute(
                sa.update(runs)
                .where(
                    runs.c.run_id == run_id,
                    sa.or_(runs.c.state != state, runs.c.end_time.is_(None)),
                )
                .values(
                    state=state,
                    end_time=dt.datetime.now(dt.UTC),
                    stop_cause=stop_cause,
                    end_reason=reason[:MAX_END_REASON],
                )
            )
            row = db.execute(sa.select(runs).where(runs.c.run_id == run_id)).one_or_none()
        return run_message(row) if row is not None else None

    # --- reads ----------------------------------------------------------------------

    def get(self, verdict_id: str) -> verdict_pb2.Verdict | None:
        return self._one(verdicts.c.verdict_id == verdict_id)

    def find_request(self, run_id: str, request_id: str) -> verdict_pb2.Verdict | None:
        """The verdict an earlier attempt of this call stored, if any."""
        return self._one(verdicts.c.run_id == run_id, verdicts.c.request_id == request_id)

    def _one(self, *where: Any) -> verdict_pb2.Verdict | None:
        with self.engine.connect() as db:
            body = db.scalar(sa.select(verdicts.c.body).where(*where))
        return verdict_pb2.Verdict.FromString(body) if body is not None else None

    def list_verdicts(
        self, query: VerdictQuery, page_size: int, page_token: str
    ) -> tuple[list[verdict_pb2.Verdict], str]:
        """Newest first; the token is the last row's id (keyset: stable under inserts)."""
        size = _page_size(page_size)
        select = sa.select(verdicts.c.id, verdicts.c.body).order_by(verdicts.c.id.desc())
        if page_token:
            select = select.where(verdicts.c.id < token_int(page_token))
        if query.run_id:
            select = select.where(verdicts.c.run_id == query.run_id)
        if query.status:
            select = select.where(verdicts.c.status == query.status)
        if query.cause:
            select = select.where(
                sa.exists().where(
                    verdict_causes.c.verdict_pk == verdicts.c.id,
                    verdict_causes.c.cause == query.cause,
                )
            )
        if query.start_time is not None:
            select = select.where(verdicts.c.create_time >= utc(query.start_time))
        if query.end_time is not None:
            select = select.where(verdicts.c.create_time < utc(query.end_time))
        with self.engine.connect() as db:
            rows = db.execute(select.limit(size + 1)).all()
        token = str(rows[size - 1].id) if len(rows) > size else ""
        return [verdict_pb2.Verdict.FromString(r.body) for r in rows[:size]], token

    def list_runs(self, page_size: int, page_token: str) -> tuple[list[service_pb2.Run], str]:
        """By run id; the token is the last run id of the page."""
        size = _page_size(page_size)
        select = sa.select(runs).order_by(runs.c.run_id)
        if page_token:
            select = select.where(runs.c.run_id > page_token)
        with self.engine.connect() as db:
            rows = db.execute(select.limit(size + 1)).all()
        out = [run_message(r) for r in rows[:size]]
        return out, (rows[size - 1].run_id if len(rows) > size else "")

    def get_run(self, run_id: str) -> service_pb2.Run | None:
        with self.engine.connect() as db:
            row = db.execute(sa.select(runs).where(runs.c.run_id == run_id)).one_or_none()
        return run_message(row) if row is not None else None

    def active_runs(self, since: dt.datetime, limit: int) -> list[ActiveRun]:
        """Runs diagnosed since `since`, most recent first, at most `limit`; ad-hoc
        runs are never among them."""
        latest = verdicts.alias("latest")
        select = (
            sa.select(
                runs.c.run_id,
                runs.c.state,
                runs.c.end_time,
                runs.c.latest_status.label("status"),
                runs.c.latest_primary_cause.label("primary_cause"),
                runs.c.latest_step.label("step"),
                runs.c.stalled,
                runs.c.last_time,
                latest.c.reported_accuracy,
                latest.c.reported_loss,
                latest.c.batch_accuracy,
                latest.c.batch_loss,
                latest.c.grad_norm,
            )
            .join(latest, latest.c.verdict_id == runs.c.latest_verdict_id)
            .where(runs.c.last_time >= since, runs.c.ad_hoc.is_(False))
            .order_by(runs.c.last_time.desc())
            .limit(limit)
        )
        with self.engine.connect() as db:
            rows = db.execute(select).all()
        return [
            ActiveRun(
                **{
                    **row._mapping,
                    "last_time": aware(row.last_time),
                    "end_time": aware(row.end_time) if row.end_time else None,
                }
            )
            for row in rows
        ]

    def history(self, run_id: str, limit: int) -> tuple[CheckpointSummary, ...]:
        """The run's last `limit` checkpoints, oldest first."""
        select = (
            sa.select(verdicts)
            .where(verdicts.c.run_id == run_id)
            .order_by(verdicts.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as db:
            rows = db.execute(select).all()
        return tuple(
            CheckpointSummary(
                step=r.step,
                fingerprint=r.model_fingerprint,
                batch_accuracy=r.batch_accuracy,
                batch_loss=r.batch_loss,
                reported_accuracy=r.reported_accuracy,
                reported_loss=r.reported_loss,
                weight_digests=dict(r.weight_digests or {}),
                primary_cause=enum_name(verdict_pb2.Cause, r.primary_cause, "CAUSE_"),
            )
            for r in reversed(rows)
        )

    def since(
        self, last_id: int, limit: int = 500, skip: Collection[int] = ()
    ) -> list[tuple[int, verdict_pb2.Verdict]]:
        """Verdicts stored after row `last_id`, by any replica, oldest first; rows
        in `skip` (already delivered) are not read."""
        ids_after = sa.select(verdicts.c.id).where(verdicts.c.id > last_id)
        with self.engine.connect() as db:
            ids = db.scalars(ids_after.order_by(verdicts.c.id).limit(limit)).all()
            wanted = [i for i in ids if i not in skip]
            if not wanted:
                return []
            rows = db.execute(
                sa.select(verdicts.c.id, verdicts.c.body)
                .where(verdicts.c.id.in_(wanted))
                .order_by(verdicts.c.id)
            ).all()
        return [(r.id, verdict_pb2.Verdict.FromString(r.body)) for r in rows]

    def last_id(self) -> int:
        with self.engine.connect() as db:
            return db.scalar(sa.select(sa.func.max(verdicts.c.id))) or 0


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10)
