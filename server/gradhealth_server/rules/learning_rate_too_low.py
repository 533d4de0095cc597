"""learning_rate_too_low: steps too small to move the model, and bigger ones help.

Signals: a tiny update ratio ‖Δw‖/‖w‖ (healthy is about 1e-3; SageMaker's
"small" anchor is 1e-8) or a learning rate below the optimizer's usual range,
confirmed by the learning-rate probe: a 10x step lowers the loss several times
more than the optimizer's own step. A converged model also takes tiny steps;
its near-zero loss tells the two apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt, lr_probe
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class LearningRateTooLowRule(Rule):
    cause = Cause.LEARNING_RATE_TOO_LOW

    @dataclass(frozen=True)
    class Thresholds:
        update_ratio: float = 1e-5  # 100x below the healthy ~1e-3
        # The 10x step's loss drop over the 1x step's. In the linear regime of a far
        # too small step it is ~10; at a well-sized step curvature keeps it below ~2.
        larger_step_gain: float = 3.0
        # ... and the drop must stand clear of float32 rounding (~6e-8 relative).
        min_relative_drop: float = 1e-6

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        t = self.t
        if ctx.converged or m.nonfinite.weights or m.optimizer is None:
            return []
        probe = {s: v for s, v in lr_probe(m).items() if math.isfinite(v)}
        base, own = probe.get(0.0), probe.get(1.0)
        larger = {s: v for s, v in probe.items() if s > 1}
        if base is None or own is None or not larger:
            return []
        best_scale = min(larger, key=larger.get)
        best = larger[best_scale]
        own_drop, best_drop = base - own, base - best
        helps = best_drop > t.min_relative_drop * abs(
            base
        ) and best_drop > t.larger_step_gain * max(own_drop, 0.0)
        ratio = m.optimizer.update_ratio
        tiny = ratio is not None and ratio < t.update_ratio
        if not (helps and (tiny or ctx.lr_below_usual)):
            return []
        lr = ctx.learning_rate
        suggested = lr * best_scale if lr else None
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.INFO if ctx.learning else Severity.WARNING,
                summary=(
                    f"one step moves the weights by only {fmt(ratio)} of their norm "
                    f"(learning rate {fmt(lr)} for {ctx.optimizer}); the optimizer's own step "
                    f"lowers the loss by {fmt(own_drop)}, a {fmt(best_scale)}x step by "
                    f"{fmt(best_drop)} ({fmt(best_drop / own_drop) if own_drop > 0 else 'far'}x "
                    "more): the steps are far too small for this loss surface"
                ),
                remedy=(
                    f"{ctx.optimizer or 'optimizer'}(learning_rate={fmt(suggested)})"
                    " (from the learning-rate probe; larger may be better still)"
                ),
                layers=[],
                evidence={
                    "learning_rate": lr,
                    "update_ratio": ratio,
                    "lr_probe": {str(s): v for s, v in sorted(probe.items())},
                    "suggested_learning_rate": suggested,
                },
                confidence=0.85 if tiny and ctx.lr_below_usual else 0.7,
            )
        ]
