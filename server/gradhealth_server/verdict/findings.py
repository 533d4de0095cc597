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
    """Why a run does not learn (docs/architecture.md, "Causes")."""

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


@dataclass
class RuleFinding:
    cause: Cause
    severity: Severity
    summary: str
    remedy: str
    layers: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.5  # 0..1: how sure the rule is that this is the root cause
    explained_by: list[str] = field(default_factory=list)  # causes that account for it
    # The remedy's measured effect on the batch, or why no trial applies.
    trial: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cause"] = str(self.cause)
        d["severity"] = str(self.severity)
        return d


@dataclass
class RuleVerdict:
    status: str  # healthy | warning | critical
    primary_cause: Cause | None
    findings: list[RuleFinding]

    @classmethod
    def from_findings(
        cls, findings: list[RuleFinding], explained: set[int] | None = None
    ) -> RuleVerdict:
        """Status from the worst severity; primary cause from the strongest root cause.

        A root cause is an alarming finding (warning or critical) that no other
        alarming finding explains; among those the most confident wins.
        """
        explained = explained or set()
        alarming = [f for f in findings if f.severity is not Severity.INFO]
        roots = [f for i, f in enumerate(findings) if i not in explained and f in alarming]
        pool = roots or alarming
        primary = max(pool, key=lambda f: (f.confidence, SEVERITY_RANK[f.severity]), default=None)
        rest = sorted(
            (f for f in findings if f is not primary),
            key=lambda f: (-SEVERITY_RANK[f.severity], -f.confidence),
        )
        ordered = ([primary] if primary else []) + rest
        worst = max((SEVERITY_RANK[f.severity] for f in findings), default=0)
        status = ("healthy", "warning", "critical")[worst]
        return cls(
            status=status, primary_cause=primary.cause if primary else None, findings=ordered
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "primary_cause": str(self.primary_cause) if self.primary_cause else None,
            "findings": [f.to_dict() for f in self.findings],
        }
