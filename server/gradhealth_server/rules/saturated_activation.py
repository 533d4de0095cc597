"""saturated_activation: hidden sigmoid/tanh units stuck in their flat region.

Anchor: SageMaker Debugger's SaturatedActivation (50 % of a layer). Only hidden
layers count: a confident sigmoid output head is saturated in a healthy model.
A value is saturated when sigmoid < 0.01 or > 0.99, or |tanh| > 0.99, where
less than ~2 % of the gradient passes back.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt, units_judged
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class SaturatedActivationRule(Rule):
    cause = Cause.SATURATED_ACTIVATION
    no_trial = (
        "no trial: judged on the share of units pinned at the activation's limits on the batch"
    )

    @dataclass(frozen=True)
    class Thresholds:
        saturated_fraction: float = 0.5  # SageMaker SaturatedActivation
        # A layer this saturated passes back almost no gradient: an alarm even on a
        # run that learns around it (slow is not healthy).
        pinned_fraction: float = 0.9
        min_units: int = 4

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        t = self.t
        hits, worst = units_judged(m, "saturated_fraction", t.saturated_fraction, t.min_units)
        if not hits:
            return []
        listing = ", ".join(
            f"{a.layer} ({a.activation}) {fmt(100 * (a.saturated_fraction or 0))}%" for a in hits
        )
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.INFO
                if ctx.learning and worst < t.pinned_fraction
                else Severity.WARNING,
                summary=f"saturated hidden activations on this batch: {listing}",
                remedy=(
                    'use kernel_initializer="glorot_uniform" (no large-scale init), '
                    "normalize the input, and add keras.layers.BatchNormalization() before "
                    'the activation, or switch to activation="relu"'
                ),
                layers=[a.layer for a in hits],
                evidence={"saturated_fraction": {a.layer: a.saturated_fraction for a in hits}},
                confidence=0.5 + 0.4 * worst,
            )
        ]
