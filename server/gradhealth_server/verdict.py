"""Findings and the verdict: what the service answers.

A finding is one cause with its evidence and the code change to make; a verdict
is all findings ordered by confidence, the overall status and the primary cause
(the most likely root cause, not the loudest symptom).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Cause(StrEnum):
    """The taxonomy of DESIGN.md: why a run does not learn."""

    VANISHING_GRADIENTS = "vanishing_gradients"
    EXPLODING_GRADIENTS = "exploding_gradients"
    NON_FINITE = "non_finite"
    UNNORMALIZED_INPUT = "unnormalized_input"
    LEARNING_RATE_TOO_HIGH = "learning_rate_too_high"
    LEARNING_RATE_TOO_LOW = "learning_rate_too_low"
    DEAD_RELU = "dead_relu"
    SATURATED_ACTIVATION = "saturated_activation"
    LOSS_MISMATCH = "loss_mismatch"
    PREDICTION_COLLAPSE = "prediction_collapse"
    STALLED = "stalled"
    UNCHANGED_WEIGHTS = "unchanged_weights"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
STATUS_OF_SEVERITY = {
    Severity.INFO: "healthy",
    Severity.WARNING: "warning",
    Severity.CRITICAL: "critical",
}


@dataclass
class Finding:
    cause: Cause
    severity: Severity
    summary: str
    remedy: str
    layers: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.5  # 0..1: how sure the rule is that this is the root cause

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cause"] = str(self.cause)
        d["severity"] = str(self.severity)
        return d


@dataclass
class Verdict:
    status: str  # healthy | warning | critical
    primary_cause: Cause | None
    findings: list[Finding]

    @classmethod
    def from_findings(cls, findings: list[Finding]) -> Verdict:
        ordered = sorted(findings, key=lambda f: (-SEVERITY_RANK[f.severity], -f.confidence))
        worst = max((SEVERITY_RANK[f.severity] for f in ordered), default=0)
        status = ("healthy", "warning", "critical")[worst]
        primary = next((f.cause for f in ordered if f.severity != Severity.INFO), None)
        return cls(status=status, primary_cause=primary, findings=ordered)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "primary_cause": str(self.primary_cause) if self.primary_cause else None,
            "findings": [f.to_dict() for f in self.findings],
        }
