"""prediction_collapse: almost every example gets the same class, the labels do not.

Anchor: DeepDiagnosis/UMLAUT's "one class predicted" symptom. An early
checkpoint may predict one class (docs/architecture.md: early is not collapsed), so runs with
fewer optimizer steps than the early threshold are skipped. Regression heads
have no classes and are skipped too.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class PredictionCollapseRule(Rule):
    cause = Cause.PREDICTION_COLLAPSE

    @dataclass(frozen=True)
    class Thresholds:
        majority_fraction: float = 0.9  # share of examples given the top class
        label_gap: float = 0.3  # ... at least this far above the labels' top-class share

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        t = self.t
        out = m.output
        if (
            not ctx.classification
            or ctx.early
            or out is None
            or out.majority_fraction is None
            or ctx.chance is None
            or m.nonfinite.weights
        ):
            return []
        share = out.majority_fraction
        if share < t.majority_fraction or share - ctx.chance < t.label_gap:
            return []
        hist = out.predicted_histogram or []
        top = max(range(len(hist)), key=hist.__getitem__) if hist else None
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.WARNING,
                summary=(
                    f"{fmt(100 * share)}% of the batch is predicted as class {top} while the "
                    f"most common label covers {fmt(100 * ctx.chance)}%"
                    f" (accuracy {fmt(ctx.accuracy)})"
                ),
                remedy=(
                    "check class_weight / sample_weight and the label pipeline (shuffled, "
                    "matching x), reset the output layer's bias, and lower the learning rate"
                ),
                layers=[m.layers[-1].name] if m.layers else [],
                evidence={
                    "predicted_histogram": hist,
                    "label_histogram": m.labels.histogram if m.labels else None,
                    "majority_fraction": share,
                    "label_majority_fraction": ctx.chance,
                },
                confidence=0.5,
            )
        ]
