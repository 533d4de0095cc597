"""stalled: accuracy (or loss) flat across the run's last checkpoints.

Only visible across checkpoints, so it reads the run history the store keeps.
The series is the training job's own accuracy when it reports one at every
checkpoint of the window (many batches: less noise), else the accuracy the
probe measured on the sample batch; loss for runs without accuracy. A flat run
near chance is critical; a flat run well above chance is a plateau (info);
a converged run is neither. When another cause explains the stall, the verdict
names it: "stalled: learning_rate_too_low".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class StalledRule(Rule):
    cause = Cause.STALLED
    no_trial = "no trial: judged on the run's own history of checkpoints"

    @dataclass(frozen=True)
    class Thresholds:
        window: int = 5  # checkpoints, the current one included
        accuracy_delta: float = 0.02  # max - min accuracy across the window
        loss_relative_delta: float = 0.01  # (max - min) / mean loss, runs without accuracy

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        t = self.t
        past = list(ctx.history.past)[-(t.window - 1) :] if t.window > 1 else []
        if len(past) < t.window - 1 or ctx.converged or ctx.early:
            return []  # early is not stalled: chance accuracy is normal there
        steps = [c.step for c in past] + [ctx.history.current_step]
        if any(s is None for s in steps) or steps != sorted(set(steps)):
            return []  # not a run moving forward: repeated or out-of-order checkpoints
        series, source = self._series(m, ctx, past)
        if series is None:
            return []
        low, high = min(series), max(series)
        if source.endswith("accuracy"):
            flat = high - low <= t.accuracy_delta
        else:
            mean = sum(series) / len(series)
            flat = mean > 0 and (high - low) / mean <= t.loss_relative_delta
        spread = f"{fmt(low)}-{fmt(high)}"
        if not flat:
            return []
        first_step = steps[0]
        # Critical only where "not learning" is measurable: accuracy near chance.
        # A flat loss without accuracy (regression, norms mode) may be a plateau.
        near_chance = source.endswith("accuracy") and ctx.classification and not ctx.learning
        severity = Severity.CRITICAL if near_chance else Severity.INFO
        return [
            RuleFinding(
                cause=self.cause,
                severity=severity,
                summary=(
                    f"{source.replace('_', ' ')} stayed within {spread} over the last "
                    f"{len(series)} checkpoints (step {first_step} onwards): "
                    + ("the run is not learning" if near_chance else "a plateau")
                ),
                remedy=(
                    "fix the root cause named in this verdict; with none, check the labels "
                    "and the input pipeline (shuffled labels, a constant input, a metric "
                    "computed on the wrong output)"
                ),
                evidence={
                    "series": source,
                    "values": [round(v, 6) for v in series],
                    "first_step": first_step,
                    "window": len(series),
                },
                confidence=0.6 if severity is Severity.CRITICAL else 0.2,
            )
        ]

    @staticmethod
    def _series(m: Measurements, ctx: Context, past: list) -> tuple[list[float] | None, str]:
        now = ctx.history
        candidates = (
            ("reported_accuracy", [c.reported_accuracy for c in past] + [now.reported_accuracy]),
            ("batch_accuracy", [c.batch_accuracy for c in past] + [ctx.accuracy]),
            ("reported_loss", [c.reported_loss for c in past] + [now.reported_loss]),
            ("batch_loss", [c.batch_loss for c in past] + [m.loss]),
        )
        for source, values in candidates:
            if all(v is not None and math.isfinite(v) for v in values):
                return [float(v) for v in values], source
        return None, ""
