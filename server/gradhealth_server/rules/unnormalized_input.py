"""unnormalized_input: the first weight layer sees values far from unit scale.

Anchors: UMLAUT and DeepDiagnosis flag inputs outside [-1, 1]. Judged on what
the first weight layer actually sees, so a 0-255 batch behind Rescaling(1/255)
or an adapted Normalization layer is fine. Adam and RMSprop often hide 0-255
pixels (the run still learns): then it is an info note, not an alarm, except
into a recurrent layer, whose saturated gates hold a run back even while it learns. Regression
targets far from unit scale are the same fault on the other side of the model.

Two trials measure the remedy. For inputs, one step from the checkpoint on the
rescaled batch (a first step that explodes as sent while the rescaled one learns
is critical). For regression targets, ten steps from one fresh initialization with
the targets as sent and standardized, judged on held-out rows in the targets' units:
reported, raising confidence when it agrees, and silencing the finding when the
targets as sent learn three times faster. It does not raise severity (ten steps
show a run's early phase, which on dev overstated what raw targets cost a whole
run). The same trial on rescaled *inputs* was measured and dropped: on the outside
set's dev half, 0-255 inputs learned faster than rescaled ones over the first ten
steps in an LSTM and a CNN whose whole runs they ruined, so it contradicted true
findings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradhealth_server.engine.facts import RECURRENT_LAYERS
from gradhealth_server.engine.measurements import Measurements, ScratchTrial, TensorStats
from gradhealth_server.engine.trials import what_the_weights_see
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class UnnormalizedInputRule(Rule):
    cause = Cause.UNNORMALIZED_INPUT
    no_trial = "no trial: the rescaled batch could not be tried on this model"

    @dataclass(frozen=True)
    class Thresholds:
        max_std: float = 3.0  # a standardized input has std 1
        max_abs_mean: float = 3.0
        # Features whose spreads differ this much hurt every optimizer.
        feature_scale_ratio: float = 100.0
        # A measured remedy counts as helping when its one-step loss drop beats the
        # batch-as-sent drop by this factor.
        trial_gain: float = 2.0
        # ...and as sent one step raises the loss by more than this fraction: critical.
        diverging_rise: float = 0.5
        # The from-scratch trial: one arm making this many times the other's progress
        # decides it (the remedy helps, or the data as sent learns faster: the trial
        # contradicts the finding, which is then not emitted) ...
        scratch_ratio: float = 3.0
        # ... provided the leading arm's progress is at least this fraction of the
        # starting loss (a few steps that move nothing show nothing).
        scratch_min_progress: float = 0.02

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        off = [s for s in what_the_weights_see(m) if self.off_scale(s)]
        if m.nonfinite.inputs:
            return []
        if not off:
            return self._targets(m, ctx)
        worst = max(off, key=lambda s: max(abs(s.max), abs(s.min), s.std))
        raw = {s.name: s for s in m.inputs}
        pixels = any(s.range_class == "byte" for s in m.inputs) or worst.range_class == "byte"
        if pixels:
            remedy = "x = x / 255.0 (or keras.layers.Rescaling(1.0 / 255) as the first layer)"
        else:
            remedy = (
                "standardize: x = (x - mean) / std per feature, with mean and std from the "
                "training set (or a keras.layers.Normalization() layer adapted on it)"
            )
            if len(raw) == 1:
                only = next(iter(raw.values()))
                remedy += f"; this batch has mean {fmt(only.mean)}, std {fmt(only.std)}"
        evidence = {
            "layer": worst.name,
            "min": worst.min,
            "max": worst.max,
            "mean": worst.mean,
            "std": worst.std,
            "range_class": worst.range_class,
            "feature_std_min": worst.feature_std_min,
            "feature_std_max": worst.feature_std_max,
        }
        summary = (
            f"the first weight layer {worst.name!r} sees inputs in "
            f"[{fmt(worst.min)}, {fmt(worst.max)}] (mean {fmt(worst.mean)}, std {fmt(worst.std)})"
        )
        confidence = 0.75
        measured = ""
        # One step as sent raises the loss while the rescaled batch lowers it: the
        # run cannot start learning, however early it is.
        diverges = False
        trial = m.trials.get("input_scale")
        if trial is not None:
            evidence.update(
                trial_change=trial.change,
                trial_loss_before=trial.loss_before,
                trial_loss_after=trial.loss_after,
                as_sent_loss_before=trial.baseline_before,
                as_sent_loss_after=trial.baseline_after,
            )
            stuck = abs(trial.relative_drop) < 1e-3 and abs(trial.baseline_relative_drop) < 1e-3
            measured = (
                f"one optimizer step with `{trial.change}` takes the loss from "
                f"{fmt(trial.loss_before, 4)} to {fmt(trial.loss_after, 4)}, against "
                f"{fmt(trial.baseline_before, 4)} to {fmt(trial.baseline_after, 4)} as sent"
            )
            if stuck:  # "from 2.303 to 2.303 ... against 2.303 to 2.303" read as unmeasured
                summary += (
                    f"; one optimizer step leaves the loss at {fmt(trial.loss_before, 4)} with "
                    f"`{trial.change}` and at {fmt(trial.baseline_before, 4)} as sent"
                )
            else:
                summary += (
                    f"; one optimizer step takes the loss from {fmt(trial.loss_before, 4)} to "
                    f"{fmt(trial.loss_after, 4)} with `{trial.change}`, against "
                    f"{fmt(trial.baseline_before, 4)} to {fmt(trial.baseline_after, 4)} as sent"
                )
            if trial.relative_drop > self.t.trial_gain * max(trial.baseline_relative_drop, 0):
                confidence = 0.9
                diverges = trial.baseline_relative_drop < -self.t.diverging_rise
            elif trial.relative_drop < 1e-3:
                summary += " (the weights are already damaged: one step cannot recover them)"
                remedy += "; retrain from the start with the fix, not from this checkpoint"
        # Pixels straight into an LSTM/GRU/SimpleRNN: its sigmoid and tanh gates read
        # W·x with x up to 255, and a run that "learns anyway" is held back.
        gates_saturated = worst.range_class == "byte" and any(
            layer.name == worst.name and layer.class_name in RECURRENT_LAYERS for layer in m.layers
        )
        if diverges:
            severity = Severity.CRITICAL
            summary += " (as sent, one step raises the loss: this run cannot start learning)"
        elif m.one_distinct_row:
            # Whether the scale holds the run back needs a batch the run can be judged
            # on; one row repeated shows its scale, not whether the model learns.
            severity = Severity.INFO
            summary += " (every row of this batch is the same: whether it holds the run back "
            summary += "cannot be judged on it)"
        elif gates_saturated:
            severity = Severity.WARNING
            summary += (
                f" (0-255 values drive the gates of the recurrent layer {worst.name!r} into "
                "saturation: it may learn, but slower and worse than with the fix)"
            )
        elif ctx.learning or ctx.early:
            severity = Severity.INFO
            summary += " (the run learns anyway; normalizing makes it robust to the optimizer)"
        else:
            severity = Severity.WARNING
        return [
            RuleFinding(
                cause=self.cause,
                severity=severity,
                summary=summary,
                remedy=remedy,
                layers=[s.name for s in off],
                evidence=evidence,
                confidence=confidence,
                trial=measured,
            )
        ]

    def _targets(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        """Regression targets far from unit scale: the loss and every gradient carry
        their scale (a squared loss, its square), so the step sizes that fit them are
        far from any optimizer's defaults. An alarm only when the run does not learn:
        Adam copes with raw targets often enough."""
        labels = m.labels
        if not self.targets_off_scale(m):
            return []
        mean, std = labels.mean or 0.0, math.sqrt(labels.variance)
        learning = ctx.learning or ctx.early or ctx.converged
        scratch = m.scratch_trials.get("target_scale")
        verdict_of_scratch = self._scratch_verdict(scratch)
        if verdict_of_scratch == "contradicts":
            return []
        severity = Severity.INFO if learning else Severity.WARNING
        explained = (
            f"; the model explains {fmt(100 * ctx.r_squared)}% of their variance on the batch"
            if ctx.r_squared is not None
            else ""
        )
        evidence = {
            "target_mean": mean,
            "target_std": std,
            "target_range": [labels.min, labels.max],
            "r_squared": ctx.r_squared,
        }
        if scratch is not None:
            evidence.update(_scratch_evidence(scratch))
        return [
            RuleFinding(
                cause=self.cause,
                severity=severity,
                summary=(
                    f"the regression targets are far from unit scale (mean {fmt(mean)}, std "
                    f"{fmt(std)}, range [{fmt(labels.min)}, {fmt(labels.max)}]) under "
                    f"{m.static.loss}{explained}"
                    + ("" if learning else ": the run is not learning them")
                    + (f"; {_scratch_text(scratch)}" if scratch is not None else "")
                ),
                remedy=(
                    "standardize the targets: y = (y - mean) / std with the training set's "
                    "mean and std, and invert it on the predictions (y * std + mean)"
                ),
                layers=[m.layers[-1].name] if m.layers else [],
                evidence=evidence,
                confidence=0.85 if verdict_of_scratch == "helps" else 0.7,
                trial=(
                    _scratch_text(scratch)
                    if scratch is not None
                    else "no trial: the standardized targets could not be tried on this model "
                    "(only a squared or absolute loss converts back to the targets' units); "
                    "judged on the targets' scale and how little of them the run has learned"
                ),
            )
        ]

    def targets_off_scale(self, m: Measurements) -> bool:
        """Regression targets far from unit scale (the target trial reads it too)."""
        labels = m.labels
        if m.static.problem != "regression" or labels is None or labels.variance is None:
            return False
        std = math.sqrt(labels.variance)
        return std > self.t.max_std or abs(labels.mean or 0.0) > self.t.max_abs_mean

    def _scratch_verdict(self, trial: ScratchTrial | None) -> str | None:
        """helps | contradicts | neutral, by this rule's thresholds; None: no trial."""
        if trial is None:
            return None
        remedied, as_sent = trial.progress
        start = trial.remedied_before * trial.unit
        if not math.isfinite(remedied) or not math.isfinite(start) or start <= 0:
            return None
        if not math.isfinite(as_sent):  # as sent the loss overflowed
            return "helps"
        least, ratio = self.t.scratch_min_progress * start, self.t.scratch_ratio
        if remedied >= least and as_sent <= remedied / ratio:
            return "helps"
        if as_sent >= least and remedied <= as_sent / ratio:
            return "contradicts"
        return "neutral"

    def off_scale(self, s: TensorStats) -> bool:
        """Far from unit scale, by this rule's thresholds (the input trial reads it too)."""
        t = self.t
        if s.range_class == "byte" or s.std > t.max_std or abs(s.mean) > t.max_abs_mean:
            return True
        big_feature = (s.feature_std_max or 0) > t.max_std or (
            s.feature_mean_abs_max or 0
        ) > t.max_abs_mean
        spread = (
            s.feature_std_min is not None
            and s.feature_std_max is not None
            and s.feature_std_max / max(s.feature_std_min, 1e-12) > t.feature_scale_ratio
        )
        return big_feature and (spread or s.std > 1.0)


def _scratch_text(trial: ScratchTrial) -> str:
    unit = "" if trial.unit == 1.0 else " (in the units of the targets as sent)"
    return (
        f"from one fresh initialization, {trial.steps} optimizer steps with `{trial.change}` "
        f"bring the held-out loss to {fmt(trial.remedied_after_as_sent_units, 4)}{unit}, "
        f"against {fmt(trial.as_sent_after, 4)} as sent"
    )


def _scratch_evidence(trial: ScratchTrial) -> dict[str, object]:
    return {
        "scratch_change": trial.change,
        "scratch_steps": trial.steps,
        "scratch_as_sent_loss": trial.as_sent_after,
        "scratch_remedied_loss": trial.remedied_after_as_sent_units,
        "scratch_progress": list(trial.progress),
    }
