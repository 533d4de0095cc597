"""Between rows and messages: a verdict as a row, a run row as a wire Run, page
tokens and times from requests, and store errors as log lines."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp

from gradhealth.v1 import service_pb2, verdict_pb2
from gradhealth_server.rules.history import CheckpointColumns

MAX_TOKEN = 2**63 - 1


class BadPageToken(ValueError):
    """A page token or filter this server cannot have given (INVALID_ARGUMENT)."""


def store_error(exc: BaseException) -> str:
    """A store failure for the log: the driver's message, never the SQL, its
    parameters (whole verdicts) or the connection URL."""
    original = getattr(exc, "orig", None) or exc
    message = " ".join(str(original).split())
    if isinstance(exc, sa.exc.StatementError) and original is exc:
        message = message.split("[SQL:")[0].strip()
    return f"{type(original).__name__}: {message[:300]}"


def run_message(r: Any) -> service_pb2.Run:
    run = service_pb2.Run(
        run_id=r.run_id,
        latest_status=r.latest_status,
        latest_primary_cause=r.latest_primary_cause,
        latest_step=r.latest_step,
        verdict_count=r.verdict_count,
        stalled=r.stalled,
        state=r.state,
        stop_cause=r.stop_cause,
        end_reason=r.end_reason,
        ad_hoc=r.ad_hoc,
    )
    run.last_diagnosis_time.FromDatetime(aware(r.last_time))
    if r.end_time is not None:
        run.end_time.FromDatetime(aware(r.end_time))
    return run


def verdict_row(
    v: verdict_pb2.Verdict, request_id: str, columns: CheckpointColumns
) -> dict[str, Any]:
    metrics = v.training_metrics
    return {
        "verdict_id": v.verdict_id,
        "run_id": v.run_id,
        "request_id": request_id or None,
        "step": v.step,
        "create_time": v.create_time.ToDatetime(dt.UTC),
        "status": v.status,
        "primary_cause": v.primary_cause,
        "checkpoint_sha256": v.checkpoint_sha256,
        "model_fingerprint": v.model_fingerprint,
        "batch_accuracy": columns.batch_accuracy,
        "batch_loss": columns.batch_loss,
        "grad_norm": columns.grad_norm,
        "reported_accuracy": number(metrics.accuracy) if metrics.HasField("accuracy") else None,
        "reported_loss": number(metrics.loss) if metrics.HasField("loss") else None,
        "weight_digests": dict(columns.weight_digests),
        "body": v.SerializeToString(),
    }


def number(value: Any) -> float | None:
    """A finite float, or None (non-finite numbers travel as strings)."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def token_int(token: str) -> int:
    try:
        value = int(token)
    except ValueError:
        raise BadPageToken(f"page_token {token[:40]!r} is not one this server gave") from None
    if not 0 < value <= MAX_TOKEN:
        raise BadPageToken("page_token is not one this server gave")
    return value


def utc(ts: Timestamp) -> dt.datetime:
    try:
        return ts.ToDatetime(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise BadPageToken(f"start_time/end_time out of range: {exc}") from None


def aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
