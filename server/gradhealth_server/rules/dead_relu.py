"""dead_relu: most of a layer's ReLU units never fire on the batch.

Anchors: SageMaker Debugger's DeadRelu (50 % of units), DeepDiagnosis (70 %).
Dead units are also what a too-high learning rate or unnormalized input leave
behind; those are reported as the root cause when present (rules.EXPLAINS).
"""

from __future__ import annotations

from dataclasses import dataclass

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt, units_judged
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class DeadReluRule(Rule):
    cause = Cause.DEAD_RELU
    no_trial = (
        "no trial: dead units need a new initialization or activation, which a few steps "
        "from this checkpoint cannot show; judged on the share of units that never fire "
        "on the batch"
    )

    @dataclass(frozen=True)
    class Thresholds:
        dead_fraction: float = 0.5  # SageMaker DeadRelu
        critical_fraction: float = 0.9
        min_units: int = 4  # below this a fraction is noise

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        t = self.t
        dead, worst = units_judged(m, "dead_fraction", t.dead_fraction, t.min_units)
        if not dead:
            return []
        if ctx.learning:
            # A layer dead as a whole carries nothing even where the run learns around
            # it (a residual path, another input): slow is not healthy.
            severity = Severity.WARNING if worst >= t.critical_fraction else Severity.INFO
        elif worst >= t.critical_fraction:
            severity = Severity.CRITICAL
        else:
            severity = Severity.WARNING
        listing = ", ".join(f"{a.layer} {fmt(100 * (a.dead_fraction or 0))}%" for a in dead)
        return [
            RuleFinding(
                cause=self.cause,
                severity=severity,
                summary=f"ReLU units that never fire on this batch: {listing}",
                remedy=(
                    'use activation="leaky_relu" (or keras.layers.LeakyReLU()), '
                    'kernel_initializer="he_normal" with bias_initializer="zeros", and '
                    "BatchNormalization before the activation; lower the learning rate if it "
                    "is high"
                ),
                layers=[a.layer for a in dead],
                evidence={
                    "dead_fraction": {a.layer: a.dead_fraction for a in dead},
                    "units": {a.layer: a.units for a in dead},
                },
                confidence=0.5 + 0.4 * worst,
            )
        ]
