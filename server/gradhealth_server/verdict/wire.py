"""Diagnosis <-> the wire contract (gradhealth.v1.Verdict).

The service answers with, and the store keeps, what `to_verdict` builds; the
client turns it back into the JSON shape of `gradhealth diagnose --json` with
`gradhealth.verdicts.verdict_to_dict`, so embedded and server mode print alike.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from google.protobuf import struct_pb2, timestamp_pb2

from gradhealth.v1 import verdict_pb2
from gradhealth_server.verdict.findings import Cause, RuleFinding

if TYPE_CHECKING:
    from gradhealth_server.diagnosis import Diagnosis

STATUS = {
    "healthy": verdict_pb2.STATUS_HEALTHY,
    "warning": verdict_pb2.STATUS_WARNING,
    "critical": verdict_pb2.STATUS_CRITICAL,
}


def cause_to_proto(cause: Cause | str | None) -> int:
    if not cause:
        return verdict_pb2.CAUSE_UNSPECIFIED
    return verdict_pb2.Cause.Value(f"CAUSE_{str(cause).upper()}")


def to_verdict(
    diagnosis: Diagnosis,
    *,
    verdict_id: str,
    run_id: str,
    step: int,
    created: dt.datetime,
    training_metrics: verdict_pb2.TrainingMetrics | None = None,
) -> verdict_pb2.Verdict:
    body = diagnosis.to_dict()  # finite numbers only: Struct cannot hold NaN as JSON
    verdict = verdict_pb2.Verdict(
        verdict_id=verdict_id,
        run_id=run_id,
        step=step,
        status=STATUS[diagnosis.verdict.status],
        primary_cause=cause_to_proto(diagnosis.verdict.primary_cause),
        checkpoint_sha256=diagnosis.checkpoint_sha256,
        model_fingerprint=diagnosis.fingerprint,
        phase_seconds=diagnosis.phases,
        training_metrics=training_metrics,
        model_cache_hit=diagnosis.cache_hit,
        probe_cached=diagnosis.probe_cached,
    )
    verdict.create_time.CopyFrom(_timestamp(created))
    for finding, as_dict in zip(diagnosis.verdict.findings, body["findings"], strict=True):
        verdict.findings.append(_finding(finding, as_dict["evidence"]))
    verdict.measurements.update(body["measurements"])
    return verdict


def _finding(f: RuleFinding, evidence: dict) -> verdict_pb2.Finding:
    out = verdict_pb2.Finding(
        cause=cause_to_proto(f.cause),
        severity=verdict_pb2.Severity.Value(f"SEVERITY_{str(f.severity).upper()}"),
        summary=f.summary,
        remedy=f.remedy,
        layers=f.layers,
        confidence=f.confidence,
        explained_by=[cause_to_proto(c) for c in f.explained_by],
        trial=f.trial,
    )
    out.evidence.CopyFrom(_struct(evidence))
    return out


def _struct(value: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def _timestamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when.astimezone(dt.UTC))
    return ts
