"""prediction_collapse: almost every example gets the same class, and the model knows
nothing beyond it.

Two forms: the labels are spread but the predictions are not (the classic symptom),
or the labels themselves are mostly one class and the model answers that class for
everything, so its accuracy is the labels' prior and nothing more (label noise or a
broken label pipeline that rewrote most labels; an imbalance the loss does not
weigh). The second is judged against the batch's own label distribution: a model
that also gets the minority classes right is not collapsed however skewed the labels.

A third form needs no argmax: the loss on the batch is the entropy of the labels'
class frequencies. The model predicts about the same distribution for every input
(whichever class that argmaxes to) and has learned nothing from x: x and y shuffled
apart, or labels that do not belong to their inputs. It is the weakest finding
(confidence 0.3): whenever another cause explains a model that learned nothing (a
rate far too low, vanishing gradients), that cause is the primary.

Anchor: DeepDiagnosis/UMLAUT's "one class predicted" symptom. An early
checkpoint may predict one class (docs/architecture.md: early is not collapsed), so runs with
fewer optimizer steps than the early threshold are skipped. Regression heads
have no classes and are skipped too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity


class PredictionCollapseRule(Rule):
    cause = Cause.PREDICTION_COLLAPSE
    no_trial = "no trial: judged on the predictions against the batch's own label distribution"

    @dataclass(frozen=True)
    class Thresholds:
        majority_fraction: float = 0.9  # share of examples given the top class
        label_gap: float = 0.3  # ... at least this far above the labels' top-class share
        # Or: skill over the prior, (accuracy - top label share) / (1 - top label share),
        # at most this: the model gets (almost) none of the other classes right.
        prior_skill: float = 0.2
        # Or: the loss is at least this share of the entropy of the labels' class
        # frequencies (what predicting those frequencies for every row scores), and
        # the predictions' own mean entropy is that entropy within this share: as
        # uncertain as the prior, not more (a class-weighted model predicts ~0.5).
        prior_loss_share: float = 0.95
        prior_entropy_match: float = 0.2

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
            or m.one_distinct_row
        ):
            return []
        share = out.majority_fraction
        skill = (
            (ctx.accuracy - ctx.chance) / (1 - ctx.chance)
            if ctx.accuracy is not None and ctx.chance < 1
            else None
        )
        spread_labels = share - ctx.chance >= t.label_gap
        prior_only = skill is not None and skill <= t.prior_skill
        if share < t.majority_fraction or not (spread_labels or prior_only):
            return self._learned_nothing(m, ctx, skill)
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
                    + (
                        ""
                        if spread_labels
                        else f": the model has learned the labels' prior and {fmt(100 * skill)}%"
                        " of the rest; most of the batch's labels are one class"
                    )
                ),
                remedy=(
                    "check class_weight / sample_weight and the label pipeline (shuffled, "
                    "matching x), reset the output layer's bias, and lower the learning rate"
                    if spread_labels
                    else "check the label pipeline first (labels overwritten, mis-joined or "
                    "defaulted to one class); if the imbalance is real, pass class_weight "
                    "(or resample) and judge the run by per-class recall"
                ),
                layers=[m.layers[-1].name] if m.layers else [],
                evidence={
                    "predicted_histogram": hist,
                    "label_histogram": m.labels.histogram if m.labels else None,
                    "majority_fraction": share,
                    "label_majority_fraction": ctx.chance,
                    "skill_over_prior": skill,
                },
                confidence=0.5,
            )
        ]

    def _learned_nothing(
        self, m: Measurements, ctx: Context, skill: float | None
    ) -> list[RuleFinding]:
        """The loss is the labels' prior entropy: the same prediction for every input."""
        labels = m.labels
        if (
            labels is None
            or labels.format not in ("class_ids", "binary")
            or not labels.histogram
            or m.static.label_smoothing
            or m.static.other_outputs  # m.loss would hold the other outputs' losses too
            or not math.isfinite(m.loss)
            or (skill is not None and skill > self.t.prior_skill)
        ):
            return []
        total = sum(labels.histogram)
        shares = [n / total for n in labels.histogram if n]
        entropy = -sum(p * math.log(p) for p in shares)
        if len(shares) < 2 or m.loss < self.t.prior_loss_share * entropy:
            return []
        predicted = m.output.mean_entropy if m.output else None
        if predicted is None or abs(predicted / entropy - 1) > self.t.prior_entropy_match:
            return []  # the predictions are not the prior's: the model reads x somehow
        steps = f"after {ctx.iterations} steps " if ctx.iterations else ""
        return [
            RuleFinding(
                cause=self.cause,
                severity=Severity.WARNING,
                summary=(
                    f"{steps}the loss on this batch ({fmt(m.loss)}) is "
                    f"{fmt(100 * m.loss / entropy)}% of the entropy of its labels' class "
                    f"frequencies ({fmt(entropy)}): the model predicts about the same "
                    "distribution for every input and has learned nothing from x"
                ),
                remedy=(
                    "check that x and y are shuffled together (not each on its own) and that "
                    "the labels belong to these inputs; then the learning rate and the loss"
                ),
                layers=[m.layers[-1].name] if m.layers else [],
                evidence={
                    "loss": m.loss,
                    "label_entropy": entropy,
                    "predicted_entropy": predicted,
                    "label_histogram": labels.histogram,
                    "skill_over_prior": skill,
                },
                confidence=0.3,
            )
        ]
