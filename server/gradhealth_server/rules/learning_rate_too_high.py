"""learning_rate_too_high: the optimizer's own step makes things worse.

Signals, strongest first: the learning-rate probe (the checkpoint optimizer's
real next step raises the loss while a 10x smaller one lowers it); a large
update ratio ‖Δw‖/‖w‖ (healthy is about 1e-3); a learning rate above the
optimizer's usual range together with blown-up weights or a run that does not
learn. A too-high rate also kills ReLUs and collapses predictions; those
findings are reported as its symptoms (rules.EXPLAINS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt, lr_probe
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class LearningRateTooHighRule(Rule):
    cause = Cause.LEARNING_RATE_TOO_HIGH

    @dataclass(frozen=True)
    class Thresholds:
        probe_rise: float = 0.01  # the full step raises the probe loss by 1 % or more
        update_ratio: float = 0.05  # healthy steps move weights by about 0.1 %
        # RMS of a layer's weights; Glorot/He inits start around 0.01-0.2.
        weight_rms: float = 1.0

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        t = self.t
        if m.nonfinite.weights or ctx.learning_rate is None:
            return []
        probe = {s: v for s, v in lr_probe(m).items() if math.isfinite(v)}
        base, full = probe.get(0.0), probe.get(1.0)
        smaller = {s: v for s, v in probe.items() if 0 < s < 1}
        rises = base is not None and full is not None and full > base * (1 + t.probe_rise) + 1e-9
        smaller_helps = bool(smaller) and base is not None and min(smaller.values()) < base
        by_probe = rises and smaller_helps
        ratio = m.optimizer.update_ratio if m.optimizer else None
        big_steps = ratio is not None and ratio > t.update_ratio
        rms = {
            layer.name: layer.weight_norm / math.sqrt(layer.parameters)
            for layer in m.layers
            if layer.weight_norm is not None and layer.parameters
        }
        blown = [name for name, value in rms.items() if value > t.weight_rms]
        dead = [a.layer for a in m.activations if (a.dead_fraction or 0) >= 0.9 and not a.is_output]
        struggling = not ctx.learning and not ctx.converged
        fires = (
            (by_probe and (big_steps or ctx.lr_above_usual or struggling))
            or (big_steps and ctx.lr_above_usual and struggling)
            or (ctx.lr_above_usual and struggling and (blown or dead or big_steps))
        )
        if not fires:
            return []
        lr = ctx.learning_rate
        best_scale = min(smaller, key=smaller.get) if smaller_helps else 0.1
        suggested = lr * best_scale
        if ctx.lr_above_usual and ctx.lr_range:
            suggested = min(suggested, ctx.lr_range[1] / 10)
        parts = [f"learning rate {fmt(lr)} for {ctx.optimizer}"]
        if ctx.lr_above_usual and ctx.lr_range:
            parts.append(f"above its usual range (up to {fmt(ctx.lr_range[1])})")
        if by_probe:
            parts.append(
                f"the optimizer's own next step raises the loss from {fmt(base)} to {fmt(full)}"
                f" while a {fmt(best_scale)}x step gives {fmt(smaller[best_scale])}"
            )
        if big_steps:
            parts.append(f"one step moves the weights by {fmt(ratio)} of their norm")
        if blown:
            parts.append(f"weights have blown up (RMS > {fmt(t.weight_rms)}) in {', '.join(blown)}")
        if dead:
            parts.append(f"{len(dead)} layer(s) have >= 90 % dead ReLUs")
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.CRITICAL if struggling else Severity.WARNING,
                summary="; ".join(parts),
                remedy=(
                    f"{ctx.optimizer or 'optimizer'}(learning_rate={fmt(suggested)})"
                    " (from the learning-rate probe), and restart from an earlier checkpoint"
                    " if the weights have already blown up"
                ),
                layers=blown or dead,
                evidence={
                    "learning_rate": lr,
                    "usual_range": list(ctx.lr_range) if ctx.lr_range else None,
                    "update_ratio": ratio,
                    "lr_probe": {str(s): v for s, v in sorted(probe.items())},
                    "suggested_learning_rate": suggested,
                    "weight_rms": rms,
                },
                confidence=min(
                    0.95,
                    0.55
                    + 0.15 * sum([by_probe, big_steps, ctx.lr_above_usual, bool(blown or dead)]),
                ),
            )
        ]
