"""Verdicts off the wire: typed for code, and as the JSON `gradhealth diagnose --json` prints."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import MessageToDict

from gradhealth.contract import enum_name
from gradhealth.v1 import service_pb2, verdict_pb2


def verdict_to_dict(verdict: verdict_pb2.Verdict) -> dict[str, Any]:
    return {
        "status": enum_name(verdict_pb2.Status, verdict.status, "STATUS_"),
        "primary_cause": enum_name(verdict_pb2.Cause, verdict.primary_cause, "CAUSE_"),
        "findings": [
            {
                "cause": enum_name(verdict_pb2.Cause, f.cause, "CAUSE_"),
                "severity": enum_name(verdict_pb2.Severity, f.severity, "SEVERITY_"),
                "summary": f.summary,
                "remedy": f.remedy,
                "trial": f.trial,
                "layers": list(f.layers),
                "evidence": MessageToDict(f.evidence),
                "confidence": f.confidence,
                "explained_by": [enum_name(verdict_pb2.Cause, c, "CAUSE_") for c in f.explained_by],
            }
            for f in verdict.findings
        ],
        "verdict_id": verdict.verdict_id,
        "run_id": verdict.run_id,
        "step": verdict.step,
        "create_time": verdict.create_time.ToJsonString(),
        "fingerprint": verdict.model_fingerprint,
        "checkpoint_sha256": verdict.checkpoint_sha256,
        "cache_hit": verdict.model_cache_hit,
        "probe_cached": verdict.probe_cached,
        "phases": dict(verdict.phase_seconds),
        "measurements": MessageToDict(verdict.measurements),
        "training_metrics": MessageToDict(verdict.training_metrics),
    }


@dataclass(frozen=True)
class Finding:
    cause: str
    severity: str
    summary: str
    remedy: str
    layers: tuple[str, ...]
    evidence: dict[str, Any]
    confidence: float
    explained_by: tuple[str, ...]
    trial: str = ""  # the remedy's measured effect on the batch, or why none applies


@dataclass(frozen=True)
class Verdict:
    """A verdict as the client hands it out: plain Python values, the proto kept."""

    verdict_id: str
    run_id: str
    step: int
    created: dt.datetime
    status: str
    primary_cause: str | None
    findings: tuple[Finding, ...]
    phases: dict[str, float]
    proto: verdict_pb2.Verdict = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: verdict_pb2.Verdict) -> Verdict:
        body = verdict_to_dict(proto)
        return cls(
            verdict_id=proto.verdict_id,
            run_id=proto.run_id,
            step=proto.step,
            created=proto.create_time.ToDatetime(dt.UTC),
            status=body["status"],
            primary_cause=body["primary_cause"],
            findings=tuple(
                Finding(
                    **{**f, "layers": tuple(f["layers"]), "explained_by": tuple(f["explained_by"])}
                )
                for f in body["findings"]
            ),
            phases=body["phases"],
            proto=proto,
        )

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    @property
    def measurements(self) -> dict[str, Any]:
        return MessageToDict(self.proto.measurements)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape `gradhealth diagnose --json` prints."""
        return verdict_to_dict(self.proto)


def run_to_dict(run: Any) -> dict[str, Any]:
    """A gradhealth.v1.Run as JSON: names for its enums, RFC 3339 for its time."""
    return {
        "run_id": run.run_id,
        "latest_status": enum_name(verdict_pb2.Status, run.latest_status, "STATUS_"),
        "latest_primary_cause": enum_name(verdict_pb2.Cause, run.latest_primary_cause, "CAUSE_"),
        "latest_step": run.latest_step,
        "last_diagnosis_time": run.last_diagnosis_time.ToJsonString(),
        "verdict_count": run.verdict_count,
        "stalled": run.stalled,
        "state": enum_name(service_pb2.RunState, run.state, "RUN_STATE_") or "active",
        "end_time": run.end_time.ToJsonString() if run.HasField("end_time") else None,
        "stop_cause": enum_name(verdict_pb2.Cause, run.stop_cause, "CAUSE_"),
        "end_reason": run.end_reason,
        "ad_hoc": run.ad_hoc,
    }
