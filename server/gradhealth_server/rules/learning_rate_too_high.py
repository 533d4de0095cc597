"""learning_rate_too_high: the optimizer's own step makes things worse.

Proposed by a learning rate above the optimizer's usual range or a large update
ratio ‖Δw‖/‖w‖ (healthy is about 1e-3). A proposal runs the learning-rate trial
at 1x, 0.3x, 0.1x and 0.03x the rate (a few steps on half the batch, judged on
the other half): a smaller rate that makes real progress (or, above the usual
range, merely holds the loss while 1x bounces off the minimum) and does measurably
better than 1x confirms it, even on a run that learns (slow is not healthy: a
warning); 1x doing measurably better than every smaller rate contradicts it (no
finding). From damaged weights (dead units, blown-up weights) the trial can show
neither: the static signals decide, above the usual range with blown-up weights or
dead units (a warning while the run learns), huge steps on a run that does not
learn, or the one-step probe (the real next step raises the loss while a 10x
smaller one lowers it). A too-high rate
also kills ReLUs and collapses predictions; those findings are reported as its
symptoms (rules.EXPLAINS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradhealth_server.engine.measurements import LearningRateTrial, Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, build_context, fmt, lr_probe
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity

DAMAGED = (
    "no trial: the weights are already damaged (dead units or blown-up weights), so steps "
    "from this checkpoint cannot show what a lower rate does; restart from an earlier "
    "checkpoint with it"
)


class LearningRateTooHighRule(Rule):
    cause = Cause.LEARNING_RATE_TOO_HIGH
    no_trial = (
        "no trial confirmed it: judged on a learning rate above the optimizer's usual "
        "range, the size of its step and the run's state"
    )

    TRIAL_SCALES = (1.0, 0.3, 0.1, 0.03)  # the learning-rate scales its trial runs

    @dataclass(frozen=True)
    class Thresholds:
        probe_rise: float = 0.01  # the full step raises the probe loss by 1 % or more
        update_ratio: float = 0.05  # healthy steps move weights by about 0.1 %
        # RMS of a layer's weights; Glorot/He inits start around 0.01-0.2.
        weight_rms: float = 1.0
        # The trial: a smaller rate's held-out loss this share of the loss below 1x's
        # confirms; 1x this far below every smaller rate contradicts.
        trial_margin: float = 0.01

    def proposes(self, m: Measurements) -> bool:
        """Is the rate suspect enough to try smaller ones? (Runs the trial.)"""
        if m.nonfinite.weights or m.optimizer is None or m.static.learning_rate is None:
            return False
        ctx = build_context(m)
        if ctx.converged:
            return False
        ratio = m.optimizer.update_ratio
        return ctx.lr_above_usual or (ratio is not None and ratio > self.t.update_ratio)

    def _trial_says(
        self, trial: LearningRateTrial | None, above_usual: bool = False
    ) -> tuple[str, float]:
        """("confirms" | "contradicts" | "", the best smaller scale) from the trial.

        Above the optimizer's usual range a rate that only bounces around a minimum
        (1x measurably worse than a smaller rate that merely holds the loss) is the
        fault itself: the run cannot settle. Inside the range that is noise, and a
        smaller rate must also make real progress."""
        if trial is None or not set(self.TRIAL_SCALES) <= set(trial.scales):
            return "", 1.0
        losses = dict(zip(trial.scales, trial.losses))
        own = losses[1.0]
        smaller = {s: v for s, v in losses.items() if s < 1 and math.isfinite(v)}
        if not smaller or not math.isfinite(trial.loss_before):
            return "", 1.0
        best = min(smaller, key=smaller.get)
        margin = self.t.trial_margin * max(abs(trial.loss_before), 1e-12)
        # A smaller rate must make real progress, not just stand still while 1x adds
        # noise around a minimum.
        progress = smaller[best] < trial.loss_before - margin
        if (progress or above_usual) and (not math.isfinite(own) or smaller[best] < own - margin):
            return "confirms", best
        if own < smaller[best] - margin:
            return "contradicts", best
        return "", best

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        t = self.t
        if m.nonfinite.weights or ctx.learning_rate is None:
            return []
        rms = {
            layer.name: layer.weight_norm / math.sqrt(layer.parameters)
            for layer in m.layers
            if layer.weight_norm is not None and layer.parameters
        }
        blown = [name for name, value in rms.items() if value > t.weight_rms]
        dead = [a.layer for a in m.activations if (a.dead_fraction or 0) >= 0.9 and not a.is_output]
        # Dead units or blown-up weights: a few steps from here cannot show what a
        # lower rate would have done (only the head still moves), so the trial neither
        # confirms nor contradicts.
        damaged = bool(blown or dead)
        says, trial_scale = (
            ("", 1.0) if damaged else self._trial_says(m.lr_trial, ctx.lr_above_usual)
        )
        if says == "contradicts":
            return []
        confirmed = says == "confirms"
        probe = {s: v for s, v in lr_probe(m).items() if math.isfinite(v)}
        base, full = probe.get(0.0), probe.get(1.0)
        smaller = {s: v for s, v in probe.items() if 0 < s < 1}
        rises = base is not None and full is not None and full > base * (1 + t.probe_rise) + 1e-9
        smaller_helps = bool(smaller) and base is not None and min(smaller.values()) < base
        by_probe = rises and smaller_helps
        ratio = m.optimizer.update_ratio if m.optimizer else None
        big_steps = ratio is not None and ratio > t.update_ratio
        struggling = not ctx.learning and not ctx.converged
        fires = (
            confirmed
            or (by_probe and (big_steps or ctx.lr_above_usual or struggling))
            or (big_steps and ctx.lr_above_usual and struggling)
            or (ctx.lr_above_usual and struggling and (blown or dead or big_steps))
            # Above the usual range with the damage such a rate does (weights blown
            # up, layers of dead ReLUs): a warning even while the run still learns.
            # A regression's weights grow with its targets' scale, so there large
            # weights alone are not damage.
            or (ctx.lr_above_usual and (dead or (blown and m.static.problem != "regression")))
        )
        if not fires:
            return []
        lr = ctx.learning_rate
        best_scale = min(smaller, key=smaller.get) if smaller_helps else 0.1
        suggested = lr * (trial_scale if confirmed else best_scale)
        if ctx.lr_above_usual and ctx.lr_range:
            # back inside the optimizer's usual range, whatever the few steps preferred
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
        trial = m.lr_trial
        if confirmed and trial is not None:
            losses = dict(zip(trial.scales, trial.losses))
            parts.append(
                f"in a {trial.steps}-step trial on this batch the held-out loss goes from "
                f"{fmt(trial.loss_before)} to {fmt(losses[1.0])} as it is and to "
                f"{fmt(losses[trial_scale])} at {fmt(trial_scale)}x the rate"
            )
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
                    f"{ctx.optimizer_call(f'learning_rate={fmt(suggested)}')}"
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
                    + 0.15
                    * sum(
                        [
                            by_probe or confirmed,
                            big_steps,
                            ctx.lr_above_usual,
                            bool(blown or dead),
                        ]
                    ),
                ),
                trial=self._trial_text(m.lr_trial, trial_scale, lr * trial_scale)
                if confirmed
                else DAMAGED
                if damaged
                else (
                    f"with a {fmt(best_scale)}x step the loss goes from {fmt(base)} to "
                    f"{fmt(smaller[best_scale])}, against {fmt(full)} with the optimizer's own"
                    if by_probe
                    else ""
                ),
            )
        ]

    @staticmethod
    def _trial_text(trial: LearningRateTrial | None, scale: float, tried: float) -> str:
        if trial is None:
            return ""
        losses = dict(zip(trial.scales, trial.losses))
        return (
            f"with learning_rate={fmt(tried)} the held-out loss after {trial.steps} steps "
            f"is {fmt(losses[scale])} against {fmt(losses[1.0])} as-is"
        )
