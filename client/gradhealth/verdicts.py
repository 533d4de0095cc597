"""A wire Verdict as the JSON shape `gradhealth diagnose --json` prints."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from gradhealth.v1 import verdict_pb2


def _name(enum: Any, value: int, prefix: str) -> str | None:
    if value == 0:
        return None
    return enum.Name(value).removeprefix(prefix).lower()


def verdict_to_dict(verdict: verdict_pb2.Verdict) -> dict[str, Any]:
    return {
        "status": _name(verdict_pb2.Status, verdict.status, "STATUS_"),
        "primary_cause": _name(verdict_pb2.Cause, verdict.primary_cause, "CAUSE_"),
        "findings": [
            {
                "cause": _name(verdict_pb2.Cause, f.cause, "CAUSE_"),
                "severity": _name(verdict_pb2.Severity, f.severity, "SEVERITY_"),
                "summary": f.summary,
                "remedy": f.remedy,
                "layers": list(f.layers),
                "evidence": MessageToDict(f.evidence),
                "confidence": f.confidence,
                "explained_by": [_name(verdict_pb2.Cause, c, "CAUSE_") for c in f.explained_by],
            }
            for f in verdict.findings
        ],
        "verdict_id": verdict.verdict_id,
        "run_id": verdict.run_id,
        "step": verdict.step,
        "fingerprint": verdict.model_fingerprint,
        "checkpoint_sha256": verdict.checkpoint_sha256,
        "phases": dict(verdict.phase_seconds),
        "measurements": MessageToDict(verdict.measurements),
    }
