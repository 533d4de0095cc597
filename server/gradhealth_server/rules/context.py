"""Facts several rules need, derived once from the measurements.

Kept apart from the rules so each rule reads as its own cause, and so the
"quiet on healthy runs" guards (converged, early, learning) are defined once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from gradhealth_server.engine.measurements import ActivationMeasurement, Measurements
from gradhealth_server.rules.config import ConfigError, checked
from gradhealth_server.rules.history import NO_HISTORY, RunHistory

CLASSIFICATION = frozenset({"sparse_categorical", "categorical", "binary"})

# The learning rates each optimizer family is normally run with. Keras defaults:
# Adam-family and RMSprop 1e-3, SGD 1e-2, Adagrad 1e-3, Adadelta 1.0.
USUAL_LEARNING_RATES: dict[str, tuple[float, float]] = {
    "SGD": (1e-4, 1.0),
    "Adam": (1e-6, 1e-2),
    "AdamW": (1e-6, 1e-2),
    "Adamax": (1e-6, 2e-2),
    "Nadam": (1e-6, 1e-2),
    "RMSprop": (1e-6, 1e-2),
    "Lion": (1e-7, 1e-3),
    "Adagrad": (1e-4, 0.5),
    "Adadelta": (1e-3, 10.0),
    "Ftrl": (1e-4, 1.0),
    "Lamb": (1e-6, 2e-2),
}


@dataclass(frozen=True)
class ContextThresholds:
    # A loss this low, or accuracy this high, is a converged model: tiny gradients
    # and tiny steps are expected there, not a fault.
    converged_loss: float = 0.02
    converged_accuracy: float = 0.995
    # Fewer optimizer steps than this is an early checkpoint: chance accuracy and
    # one predicted class are normal (docs/architecture.md: "early is not stalled or collapsed").
    early_steps: int = 30
    # "Learning" means accuracy covers this share of the way from chance to 1 (for a
    # regression with a squared loss: R², the share of the targets' variance explained).
    learning_share: float = 0.5


@dataclass(frozen=True)
class Context:
    classification: bool
    chance: float | None  # majority-class share of the batch's labels
    accuracy: float | None
    r_squared: float | None  # regression with mean_squared_error: 1 - loss / var(y)
    learning: bool  # the model already does well on the batch
    converged: bool
    early: bool
    iterations: int | None
    optimizer: str | None
    learning_rate: float | None
    momentum: float
    lr_range: tuple[float, float] | None  # the optimizer's usual learning rates
    thresholds: ContextThresholds
    history: RunHistory = NO_HISTORY  # the run's earlier checkpoints

    @property
    def lr_above_usual(self) -> bool:
        """Above the optimizer's usual range; for SGD with momentum the step it adds
        up to, learning_rate / (1 - momentum), is what the range bounds."""
        lr = self.learning_rate
        if lr and self.momentum:
            lr = lr / (1 - self.momentum)
        return bool(self.lr_range and lr and lr > self.lr_range[1])

    @property
    def lr_below_usual(self) -> bool:
        return bool(
            self.lr_range
            and self.learning_rate is not None
            and self.learning_rate < self.lr_range[0]
        )

    def optimizer_call(self, arguments: str) -> str:
        """The optimizer as a remedy writes it, `Adam(learning_rate=0.01)`: the user's own
        class, or `optimizer(...)` when the checkpoint does not say."""
        return f"{self.optimizer or 'optimizer'}({arguments})"


def build_context(
    m: Measurements, t: ContextThresholds | None = None, history: RunHistory = NO_HISTORY
) -> Context:
    t = t or ContextThresholds()
    problem = m.static.problem
    classification = problem in CLASSIFICATION
    chance = None
    # Labels beyond 1 under a binary loss are class ids (loss_mismatch): their
    # class shares are not the classes the model predicts.
    binary_ids = problem == "binary" and m.labels is not None and m.labels.max > 1
    if classification and m.labels and m.labels.histogram and not binary_ids:
        total = sum(m.labels.histogram)
        chance = max(m.labels.histogram) / total if total else None
    accuracy = m.accuracy if classification else None
    r_squared = _r_squared(m)
    learning = bool(
        accuracy is not None
        and chance is not None
        and chance < 1
        and (accuracy - chance) / (1 - chance) >= t.learning_share
    ) or (r_squared is not None and r_squared >= t.learning_share)
    loss_ok = math.isfinite(m.loss) and m.loss <= t.converged_loss
    converged = loss_ok or (accuracy is not None and accuracy >= t.converged_accuracy)
    iterations = m.optimizer.iterations if m.optimizer else None
    name = m.static.optimizer
    return Context(
        classification=classification,
        chance=chance,
        accuracy=accuracy,
        r_squared=r_squared,
        learning=learning,
        converged=converged,
        early=iterations is not None and iterations < t.early_steps,
        iterations=iterations,
        optimizer=name,
        learning_rate=m.static.learning_rate,
        momentum=m.static.momentum,
        lr_range=USUAL_LEARNING_RATES.get(name or ""),
        thresholds=t,
        history=history,
    )


def _r_squared(m: Measurements) -> float | None:
    """How much of the targets' variance a squared-loss regression explains on the
    batch: 0 is predicting their mean, 1 is exact (regularization counts as error)."""
    labels = m.labels
    if (
        m.static.problem != "regression"
        or m.static.loss != "mean_squared_error"
        or labels is None
        or not labels.variance
        or not math.isfinite(m.loss)
    ):
        return None
    return 1.0 - m.loss / labels.variance


def context_thresholds(overrides: dict) -> ContextThresholds:
    names = {f.name for f in dataclasses.fields(ContextThresholds)}
    unknown = set(overrides) - names
    if unknown:
        raise ConfigError(
            f"context has no threshold {', '.join(sorted(unknown))}; "
            f"it has {', '.join(sorted(names))}"
        )
    return dataclasses.replace(ContextThresholds(), **checked(ContextThresholds, overrides))


def gradient_profile(m: Measurements) -> list[tuple[str, float]]:
    """(layer, gradient norm) from input to output: the evidence of flow."""
    return [(layer.name, layer.grad_norm) for layer in m.layers]


def lr_probe(m: Measurements) -> dict[float, float]:
    """Loss at w + s·Δw by step scale s, plus s = 0 (the loss before the step)."""
    opt = m.optimizer
    if opt is None or opt.base_loss is None or not opt.lr_losses:
        return {}
    out = {0.0: opt.base_loss}
    out.update(dict(zip(opt.lr_scales, opt.lr_losses, strict=True)))
    return out


def units_over(
    m: Measurements, fraction: str, threshold: float, min_units: int
) -> list[ActivationMeasurement]:
    """Hidden layers whose `fraction` (dead_fraction, saturated_fraction) reaches
    `threshold`, among layers wide enough for a fraction to mean something."""
    return [
        a
        for a in m.activations
        if getattr(a, fraction) is not None
        and not a.is_output
        and a.units >= min_units
        and getattr(a, fraction) >= threshold
    ]


def units_judged(
    m: Measurements, fraction: str, threshold: float, min_units: int
) -> tuple[list[ActivationMeasurement], float]:
    """`units_over` and the worst such fraction, where the units can be judged: not on
    non-finite weights (non_finite's cause) nor on a batch of one distinct row (which
    cannot show what varies across examples). Dead and saturated units share it."""
    if m.nonfinite.weights or m.one_distinct_row:
        return [], 0.0
    hits = units_over(m, fraction, threshold, min_units)
    return hits, max((getattr(a, fraction) or 0.0 for a in hits), default=0.0)


def fmt(value: float | None, digits: int = 3) -> str:
    """Numbers in findings: short, exact enough to act on."""
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}"
