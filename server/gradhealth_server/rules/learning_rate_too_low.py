"""learning_rate_too_low: steps too small to move the model, and bigger ones help.

Proposed by the one-step learning-rate probe (a 10x step lowers the loss several
times more than the optimizer's own step), confirmed by the learning-rate trial
(engine/trial_steps.py): a few real steps at 1x, 3x, 10x and 30x the learning rate
from a copy of the state, judged on held-out rows of the batch. Far below its best
the held-out gain grows in proportion to the learning rate (10x the rate, ~10x the
gain; 30x, ~3x more again); near its best, curvature bends the curve well before
10x. A run that learns that way is still "slow, not healthy" (a warning); one whose
own step barely moves the loss at all cannot learn (critical). A converged model
also takes tiny steps; its near-zero loss tells the two apart. Behind a layer of
dead ReLUs the gain grows with the rate whatever the rate is: no finding then.

Without a trial (norms-only mode) the older evidence stands: a tiny update ratio or
a learning rate below the optimizer's usual range, with the one-step probe agreeing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradhealth_server.engine.measurements import LearningRateTrial, Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, build_context, fmt, lr_probe, units_over
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity

# A hidden layer this dead leaves the trial unable to speak for the rate.
DEAD = 0.9


class LearningRateTooLowRule(Rule):
    cause = Cause.LEARNING_RATE_TOO_LOW
    TRIAL_SCALES = (1.0, 3.0, 10.0, 30.0)  # the learning-rate scales its trial runs
    no_trial = (
        "no trial: judged on the learning-rate probe (the optimizer's own step against a 10x one)"
    )

    @dataclass(frozen=True)
    class Thresholds:
        update_ratio: float = 1e-5  # 100x below the healthy ~1e-3
        # Proposal, from the one-step probe: the 10x step's loss drop over the 1x
        # step's. In the linear regime of a far too small step it is ~10; at a
        # well-sized step curvature keeps it below ~2.
        larger_step_gain: float = 3.0
        # ... and the drop must stand clear of float32 rounding (~6e-8 relative).
        min_relative_drop: float = 1e-6
        # Confirmation, from the trial (held-out gains g(s) after a few steps):
        # g(10x) / g(1x) and g(30x) / g(10x); proportional growth gives 10 and 3.
        gain_10x: float = 6.0
        gain_30x: float = 2.5
        # g(30x) as a share of the held-out loss: a real, not a rounding, gain
        # (float32 rounds at ~1e-7; a rate 10^4 too low gains ~1e-4 at 30x).
        min_trial_gain: float = 1e-5
        # g(1x) below this share of the loss: the run as it is barely learns.
        stuck_gain: float = 1e-3

    def proposes(self, m: Measurements) -> bool:
        """Does the one-step probe suggest a larger learning rate? (Runs the trial.)

        Not where `check` would stay silent whatever the trial says (a converged
        model, a layer of dead ReLUs): a trial costs a healthy ResNet50 minutes."""
        if self._silent(m, build_context(m)):
            return False
        helps, *_ = self._probe_says(m)
        return helps

    @staticmethod
    def _silent(m: Measurements, ctx: Context) -> bool:
        """No finding on this run, whatever the trial: converged, damaged weights,
        no optimizer state, or layers of dead ReLUs (only the head learns)."""
        return (
            ctx.converged
            or m.nonfinite.weights
            or m.optimizer is None
            or bool(units_over(m, "dead_fraction", DEAD, min_units=1))
        )

    def _probe_says(self, m: Measurements) -> tuple[bool, float, float, float]:
        """(a larger step helps, best scale, own drop, best drop) from the one-step probe."""
        t = self.t
        probe = {s: v for s, v in lr_probe(m).items() if math.isfinite(v)}
        base, own = probe.get(0.0), probe.get(1.0)
        larger = {s: v for s, v in probe.items() if s > 1}
        if base is None or own is None or not larger:
            return False, 1.0, 0.0, 0.0
        best_scale = min(larger, key=larger.get)
        own_drop, best_drop = base - own, base - larger[best_scale]
        helps = best_drop > t.min_relative_drop * abs(
            base
        ) and best_drop > t.larger_step_gain * max(own_drop, 0.0)
        return helps, best_scale, own_drop, best_drop

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        if self._silent(m, ctx):
            # Layers of dead ReLUs pass no gradient: only the layers after them learn,
            # and their gain grows with the rate whatever the rate is. A rate too low
            # to move the weights does not kill units either; the dead units are the
            # finding (dead_relu), not the rate.
            return []
        if m.lr_trial is not None and set(self.TRIAL_SCALES) <= set(m.lr_trial.scales):
            return self._by_trial(m, ctx, m.lr_trial)
        return self._by_probe(m, ctx)

    def _by_trial(
        self, m: Measurements, ctx: Context, trial: LearningRateTrial
    ) -> list[RuleFinding]:
        t = self.t
        gains = trial.gains()
        g1, g10, g30 = gains.get(1.0), gains.get(10.0), gains.get(30.0)
        if g1 is None or g10 is None or g30 is None or not math.isfinite(trial.loss_before):
            return []
        scale = max(abs(trial.loss_before), 1e-12)
        proportional = (
            g10 > 0
            and g30 > 0
            and (g1 <= 0 or g10 >= t.gain_10x * g1)
            and g30 >= t.gain_30x * g10
            and g30 >= t.min_trial_gain * scale
        )
        if not proportional:
            return []
        lr = ctx.learning_rate
        stuck = g1 < t.stuck_gain * scale
        suggested = lr * 10 if lr else None
        losses = dict(zip(trial.scales, trial.losses))
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.CRITICAL if stuck else Severity.WARNING,
                summary=(
                    f"the learning rate ({fmt(lr)} for {ctx.optimizer}) is at least 10x below"
                    f" its best: in a {trial.steps}-step trial on this batch the held-out loss"
                    f" goes from {fmt(trial.loss_before)} to {fmt(losses[1.0])} as it is, to"
                    f" {fmt(losses[10.0])} at 10x and {fmt(losses[30.0])} at 30x; the gain"
                    " still grows in proportion to the rate"
                    + (" (as it is the run barely learns)" if stuck else " (the run is slow)")
                ),
                remedy=(
                    f"{ctx.optimizer_call(f'learning_rate={fmt(suggested)}')}"
                    f" (10x; 30x, {fmt(lr * 30 if lr else None)}, was better still in the trial)"
                ),
                layers=[],
                evidence={
                    "learning_rate": lr,
                    "trial_steps": trial.steps,
                    "trial_held_out_rows": trial.held_out_rows,
                    "trial_loss_before": trial.loss_before,
                    "trial_losses": {str(s): v for s, v in losses.items()},
                    "gain_10x_over_1x": g10 / g1 if g1 > 0 else None,
                    "gain_30x_over_10x": g30 / g10,
                    "suggested_learning_rate": suggested,
                },
                confidence=0.9 if g10 >= t.gain_10x * max(g1, 0.0) * 1.3 else 0.8,
                trial=(
                    f"with learning_rate={fmt(suggested)} the held-out loss after "
                    f"{trial.steps} steps is {fmt(losses[10.0])} against {fmt(losses[1.0])} as-is"
                ),
            )
        ]

    def _by_probe(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        t = self.t
        helps, best_scale, own_drop, best_drop = self._probe_says(m)
        ratio = m.optimizer.update_ratio if m.optimizer else None
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
                    f"{ctx.optimizer_call(f'learning_rate={fmt(suggested)}')}"
                    " (from the learning-rate probe; larger may be better still)"
                ),
                layers=[],
                evidence={
                    "learning_rate": lr,
                    "update_ratio": ratio,
                    "lr_probe": {str(s): v for s, v in sorted(lr_probe(m).items())},
                    "suggested_learning_rate": suggested,
                },
                confidence=0.85 if tiny and ctx.lr_below_usual else 0.7,
                trial=(
                    f"one step at {fmt(best_scale)}x the learning rate lowers the loss by "
                    f"{fmt(best_drop)} against {fmt(own_drop)} for the optimizer's own step"
                ),
            )
        ]
