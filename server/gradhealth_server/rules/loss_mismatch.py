"""loss_mismatch: the output activation, the loss and the labels disagree.

Anchors: AutoTrainer's and UMLAUT's static checks. Facts measured on Keras 3.15
(docs/architecture.md): softmax/sigmoid outputs with `from_logits=True` are silently
repaired (Keras uses the cached logits) and train identically, so that pairing
is an info note only; `Dense(1, activation="softmax")` and a double softmax are
real failures (the loss can fall while accuracy never moves).

Labels that do not fit the loss are the user's bug, not a bad batch: Keras trains on
them silently. Binary crossentropy on labels outside [0, 1] (class ids, a regression
target) is unbounded below (the loss falls without end while nothing is learned);
sparse crossentropy truncates fractional labels (y / 255 makes every label class 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from gradhealth_server.engine.measurements import LabelStats, Measurements, PairingTrial
from gradhealth_server.engine.trials import LossRemedy
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.context import Context, fmt
from gradhealth_server.verdict.findings import Cause, RuleFinding, Severity

CROSSENTROPY = {
    "sparse_categorical_crossentropy": "sparse_categorical",
    "categorical_crossentropy": "categorical",
    "binary_crossentropy": "binary",
    "categorical_focal_crossentropy": "categorical",
    "binary_focal_crossentropy": "binary",
}
REGRESSION_LOSSES = frozenset(
    {
        "mean_squared_error",
        "mean_absolute_error",
        "huber",
        "log_cosh",
        "mean_squared_logarithmic_error",
        "mean_absolute_percentage_error",
    }
)
PROBABILITY_OUTPUTS = frozenset({"softmax", "sigmoid"})
BINARY_LOSSES = frozenset({"binary_crossentropy", "binary_focal_crossentropy"})
SEVERITY_ORDER = (Severity.INFO, Severity.WARNING, Severity.CRITICAL)


@dataclass
class _Mismatch:
    severity: Severity
    summary: str
    remedy: str
    evidence: dict | None = None
    # The remedy as the engine can try it (a loss or labels change); None when the fix
    # changes the model's output layer, which a trial on the checkpoint cannot simulate.
    trial: LossRemedy | None = None


class LossMismatchRule(Rule):
    cause = Cause.LOSS_MISMATCH
    no_trial = (
        "no trial: the fix changes the model's output layer, which a trial on this "
        "checkpoint cannot simulate; the output, the loss and the labels disagree by "
        "construction (read from the model and the batch), not by degree"
    )

    @dataclass(frozen=True)
    class Thresholds:
        # Whole-number labels from 0 (or 1) are class ids, not a regression target, when
        # they repeat (at most this share of the rows are distinct values: 10 digit
        # classes in 128 rows, 8%) or cover most ids up to their largest (a 1000-class
        # batch rarely repeats). The diabetes targets 25..346 start far from 0.
        id_distinct_share: float = 0.5
        id_coverage: float = 0.5

    def proposes(self, m: Measurements) -> LossRemedy | None:
        """The loss or labels change to try, when this rule would raise an alarm whose
        fix a trial can simulate."""
        mismatch = self._find(m)
        if mismatch is None or mismatch.severity is Severity.INFO:
            return None
        return mismatch.trial

    def check(self, m: Measurements, ctx: Context) -> list[RuleFinding]:
        mismatch = self._find(m)
        if mismatch is None:
            return []
        s = m.static
        evidence = {
            "loss": s.loss,
            "from_logits": s.from_logits,
            "output_activations": list(s.output_activations),
            "output_units": s.output_units,
            "label_format": m.labels.format if m.labels else None,
            **(mismatch.evidence or {}),
        }
        alarm = mismatch.severity is not Severity.INFO
        confidence, trial_text, trial = 0.95 if alarm else 0.3, "", m.pairing_trial
        if alarm and mismatch.trial is not None and trial is None:
            trial_text = (
                "no trial: the remedied loss could not be tried on this batch (several "
                "outputs, no optimizer state, or fewer than 16 rows)"
            )
        if alarm and mismatch.trial is not None and trial is not None:
            evidence.update(
                pairing_trial_change=trial.change,
                pairing_trial_scored_by=trial.scored_by,
                pairing_trial_steps=trial.steps,
                pairing_trial_loss_before=trial.loss_before,
                pairing_trial_as_is=trial.as_is_after,
                pairing_trial_remedied=trial.remedied_after,
            )
            trial_text = _pairing_text(trial)
            if not trial.remedied_after < trial.as_is_after:  # the fix does no better here
                # The mismatch is a fact read from the model, not a degree the trial
                # could contradict; a few steps without gain lower the confidence that
                # it is what holds this run back.
                confidence = 0.6
                trial_text += ": no gain from the fix within these steps"
        return [
            RuleFinding(
                cause=self.cause,
                severity=mismatch.severity,
                summary=mismatch.summary,
                remedy=mismatch.remedy,
                layers=[m.layers[-1].name] if m.layers else [],
                evidence=evidence,
                confidence=confidence,
                trial=trial_text,
            )
        ]

    def _find(self, m: Measurements) -> _Mismatch | None:
        """The worst disagreement between the output, the loss and the labels."""
        s = m.static
        misfit = self._label_misfit(
            s.loss or "", m.labels, m.rows, m.loss, bool(s.from_logits)
        ) or (
            _out_of_reach(s.loss or "", s.output_activation, s.output_units, m.labels)
            if s.functional
            else None
        )
        mismatch = None
        if s.functional and s.output_activation is not None:
            mismatch = self._mismatch(
                loss=s.loss or "",
                from_logits=bool(s.from_logits),
                activation=s.output_activation,
                chain=list(s.output_activations or []),
                units=s.output_units,
                labels=m.labels.format if m.labels else None,
            )
        if misfit is not None and (
            mismatch is None
            or SEVERITY_ORDER.index(misfit.severity) >= SEVERITY_ORDER.index(mismatch.severity)
        ):
            mismatch = misfit
        return mismatch

    def _label_misfit(
        self,
        loss: str,
        labels: LabelStats | None,
        rows: int,
        batch_loss: float,
        from_logits: bool,
    ) -> _Mismatch | None:
        """Labels the loss takes without complaint but reads as something else."""
        if labels is None:
            return None
        lo, hi = labels.min, labels.max
        evidence = {"label_range": [lo, hi], "label_distinct": labels.distinct}
        if loss in BINARY_LOSSES and (lo < 0 or hi > 1):
            kind, what, remedy = self._what_labels_are(labels, rows)
            evidence["labels_look_like"] = kind
            negative = (
                f"; the loss on this batch is {batch_loss:.3g}, and crossentropy on valid "
                "labels is never negative"
                if batch_loss < 0
                else ""
            )
            return _Mismatch(
                Severity.CRITICAL,
                f"{loss} needs labels in [0, 1], but y ranges over [{lo:g}, {hi:g}] ({what}): "
                "the loss is unbounded below, so it falls without end while the model learns "
                f"nothing{negative}",
                remedy,
                evidence,
            )
        if loss == "sparse_categorical_crossentropy" and labels.sent_fractional:
            sent_lo, sent_hi = labels.sent_min, labels.sent_max
            evidence["labels_as_sent"] = [sent_lo, sent_hi]
            evidence["labels_look_like"] = "fractional"
            one_class = labels.distinct == 1
            effect = (
                f"so every label becomes class {lo:g}"
                if one_class
                else f"so they become class ids {lo:g}..{hi:g} (2.7 is class 2)"
            )
            trial = None
            if labels.sent_scale:
                change = f'y = np.rint(y * {labels.sent_scale}).astype("int32")'
                remedy = (
                    f"send integer class ids: {change} (the labels look like ids divided "
                    f"by {labels.sent_scale})"
                )
                trial = LossRemedy(change, loss, from_logits, labels.sent_scale)
            else:
                remedy = 'send integer class ids: y.astype("int32") on the unscaled labels'
            return _Mismatch(
                Severity.CRITICAL if one_class else Severity.WARNING,
                f"sparse_categorical_crossentropy reads class ids, but y holds fractional "
                f"values in [{sent_lo:g}, {sent_hi:g}]: Keras truncates them, {effect}",
                remedy,
                evidence,
                trial,
            )
        return None

    def _what_labels_are(self, labels: LabelStats, rows: int) -> tuple[str, str, str]:
        """What labels outside [0, 1] look like (kind, in words), and the loss that fits."""
        lo, hi, distinct = labels.min, labels.max, labels.distinct
        ids = (
            labels.format == "class_ids"
            and distinct is not None
            and lo <= 1
            and (
                distinct <= self.t.id_distinct_share * rows
                or distinct >= self.t.id_coverage * (hi + 1)
            )
        )
        if ids:
            classes = int(hi) + 1
            return (
                "class_ids",
                f"class ids, {distinct} distinct values",
                f'loss="sparse_categorical_crossentropy" with a softmax output of '
                f'{classes} units: Dense({classes}, activation="softmax")',
            )
        if lo == -1 and hi == 1 and distinct == 2:
            return (
                "plus_minus_one",
                "-1/+1 labels",
                "map the labels to 0/1: y = (y + 1) / 2, keeping the sigmoid output and "
                "binary_crossentropy",
            )
        count = f"{distinct} distinct values" if distinct is not None else "many values"
        return (
            "continuous",
            f"a continuous target, {count}",
            'for a regression target: a linear output, Dense(1), with loss="mse" (or '
            '"huber"), and the target standardized: (y - mean) / std',
        )

    @staticmethod
    def _mismatch(
        loss: str,
        from_logits: bool,
        activation: str,
        chain: list[str],
        units: int | None,
        labels: str | None,
    ) -> _Mismatch | None:
        kind = CROSSENTROPY.get(loss)
        sparse = "sparse_categorical_crossentropy"
        if activation == "softmax" and units == 1:
            return _Mismatch(
                Severity.CRITICAL,
                "softmax over a single unit always outputs 1.0: the loss can move while "
                "accuracy never does",
                'Dense(1, activation="sigmoid") with loss="binary_crossentropy"',
            )
        if chain.count("softmax") >= 2:
            return _Mismatch(
                Severity.CRITICAL,
                "softmax is applied twice: probabilities squashed towards uniform, gradients tiny",
                'keep one: Dense(n, activation="softmax") and drop the extra Activation("softmax")',
            )
        if kind is not None and not from_logits and activation not in PROBABILITY_OUTPUTS:
            fixed = "binary_crossentropy" if kind == "binary" else loss
            cls = "".join(part.title() for part in fixed.split("_"))
            change = f"loss=keras.losses.{cls}(from_logits=True)"
            return _Mismatch(
                Severity.CRITICAL,
                f"{loss} expects probabilities but the output layer is {activation} "
                "(logits): the loss is computed on the wrong quantity",
                change,
                trial=LossRemedy(change, fixed, from_logits=True),
            )
        if kind is not None and from_logits and activation in PROBABILITY_OUTPUTS:
            return _Mismatch(
                Severity.INFO,
                f"{activation} output with from_logits=True: Keras 3 uses the cached logits, so "
                "training is correct, but the pairing is fragile",
                f"Dense(n) (no activation) with from_logits=True, or keep {activation} and set "
                "from_logits=False",
            )
        if (
            kind in ("categorical", "sparse_categorical")
            and activation == "sigmoid"
            and (units or 0) > 1
        ):
            return _Mismatch(
                Severity.WARNING,
                f"sigmoid outputs with {loss}: the classes do not compete",
                f'Dense({units}, activation="softmax") with loss="{loss}"',
            )
        if (
            kind == "binary"
            and activation == "softmax"
            and (units or 0) > 1
            and labels in ("class_ids", "one_hot")
        ):
            target = sparse if labels == "class_ids" else "categorical_crossentropy"
            return _Mismatch(
                Severity.WARNING,
                "binary_crossentropy on a softmax over several classes",
                f'loss="{target}"',
                trial=LossRemedy(f'loss="{target}"', target),
            )
        if activation == "softmax" and labels == "multi_hot":
            return _Mismatch(
                Severity.CRITICAL,
                f"softmax output with multi-hot labels ({loss}): the outputs of a row sum to 1, "
                "so the model can never give two labels a high probability at once",
                f'Dense({units}, activation="sigmoid") with loss="binary_crossentropy", one '
                "independent probability per label",
            )
        if (
            loss in REGRESSION_LOSSES
            and activation in PROBABILITY_OUTPUTS
            and labels in ("class_ids", "one_hot")
        ):
            if units == 1:  # one probability: a binary classifier
                target = "binary_crossentropy"
            else:
                target = sparse if labels == "class_ids" else "categorical_crossentropy"
            return _Mismatch(
                Severity.WARNING,
                f"{loss} (a regression loss) on a {activation} classifier",
                f'loss="{target}"',
                trial=LossRemedy(f'loss="{target}"', target),
            )
        return None


# What a bounded output activation can produce.
OUTPUT_RANGES = {"sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0), "tanh": (-1.0, 1.0)}
# Outputs bounded below only: targets under 0 are out of reach, and a ReLU output
# passes no gradient for them. Worse fits rather than no fit: a warning.
HALF_LINE_OUTPUTS = {"relu": 0.0, "softplus": 0.0}
REACHABLE = {*OUTPUT_RANGES, *HALF_LINE_OUTPUTS}


def _out_of_reach(
    loss: str, activation: str | None, units: int | None, labels: LabelStats | None
) -> _Mismatch | None:
    """A regression loss whose targets lie outside what the output activation can
    produce: the loss can never reach zero and the output saturates chasing them."""
    if loss not in REGRESSION_LOSSES or labels is None or activation not in REACHABLE:
        return None
    # class ids into several outputs are a classifier trained with a regression loss:
    # _mismatch names that pairing
    if labels.format != "continuous" and not (labels.format == "class_ids" and units == 1):
        return None
    span = max(labels.max - labels.min, 1e-12)
    remedy = "a linear output, Dense(n), and the target standardized: (y - mean) / std"
    if activation in HALF_LINE_OUTPUTS:
        low = HALF_LINE_OUTPUTS[activation]
        if low - labels.min <= 0.1 * span:
            return None
        return _Mismatch(
            Severity.WARNING,
            f"{loss} on targets in [{labels.min:g}, {labels.max:g}] through a {activation} "
            f"output, which cannot go below {low:g}: the targets under it are never fitted"
            + (" and pass no gradient back" if activation == "relu" else ""),
            remedy,
            {"label_range": [labels.min, labels.max], "output_range": [low, None]},
        )
    low, high = OUTPUT_RANGES[activation]
    outside = max(low - labels.min, labels.max - high, 0.0)
    if outside <= 0.1 * span:  # a little overshoot is a scaling choice, not a bug
        return None
    return _Mismatch(
        Severity.CRITICAL,
        f"{loss} on targets in [{labels.min:g}, {labels.max:g}] through a {activation} output, "
        f"which can only produce [{low:g}, {high:g}]: the model can never fit them and the "
        "output saturates",
        remedy,
        {"label_range": [labels.min, labels.max], "output_range": [low, high]},
    )


def _pairing_text(trial: PairingTrial) -> str:
    return (
        f"with {trial.change}, {trial.steps} steps from the checkpoint bring the held-out "
        f"{trial.scored_by} to {fmt(trial.remedied_after, 4)}, against "
        f"{fmt(trial.as_is_after, 4)} as the run is (from {fmt(trial.loss_before, 4)})"
    )
