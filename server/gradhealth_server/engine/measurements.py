"""Measurements: what the probe measured, with names and meaning.

Plain dataclasses of floats, ints and lists: the rules read these, the store
keeps their summary, the wire carries them as JSON. No TensorFlow type appears
here, so the rules can be tested with hand-written numbers. Each family is
measured and decoded by its module in engine/quantities/; engine/measure.py
assembles them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gradhealth_server.engine.facts import StaticFacts


@dataclass
class LayerMeasurement:
    """Gradient, weight and optimizer-step numbers of one weight layer."""

    name: str
    class_name: str
    activation: str | None
    parameters: int
    grad_norm: float
    weight_norm: float | None  # None in norms-only mode
    grad_to_weight: float | None
    mean_abs_grad: float
    zero_grad_fraction: float
    grad_nonfinite: int
    weight_nonfinite: int
    update_norm: float | None = None
    update_ratio: float | None = None  # ‖Δw‖/‖w‖ of the optimizer's own step


@dataclass
class ActivationMeasurement:
    """What one layer's output looked like on the batch."""

    layer: str
    activation: str
    units: int
    mean: float
    std: float
    nonfinite: int
    dead_fraction: float | None = None  # ReLU family: units that never fired
    saturated_fraction: float | None = None  # sigmoid/tanh: values in the flat region
    saturated_units_fraction: float | None = None  # units flat on every example
    is_output: bool = False


@dataclass
class TensorStats:
    """Scale of a tensor: the raw input, or what the first weight layer sees."""

    name: str
    mean: float
    std: float
    min: float
    max: float
    range_class: str
    dtype: str | None = None
    shape: list[int] | None = None
    integer_valued: bool | None = None
    feature_std_min: float | None = None
    feature_std_max: float | None = None
    feature_mean_abs_max: float | None = None
    nonfinite: int = 0


@dataclass
class LabelStats:
    """The labels as the loss reads them; `sent_*` when the labels as sent differ (sparse
    crossentropy truncates fractional labels to class ids, as Keras does)."""

    format: str  # class_ids | one_hot | multi_hot | binary | continuous
    classes: int | None
    histogram: list[int] | None
    min: float
    max: float
    distinct: int | None = None  # distinct values of single-column labels
    sent_min: float | None = None
    sent_max: float | None = None
    sent_fractional: bool = False  # some labels as sent were not whole numbers
    sent_scale: int | None = None  # labels as sent x this are whole numbers (255: ids / 255)
    mean: float | None = None
    variance: float | None = None  # per column, averaged: what predicting the mean scores


@dataclass
class OutputStats:
    predicted_histogram: list[int] | None
    majority_fraction: float | None  # share of examples given the most common class
    mean_entropy: float | None  # nats per example
    row_sum_mean: float | None
    row_sum_min: float | None
    row_sum_max: float | None
    nonfinite: int


@dataclass
class OptimizerStep:
    """The checkpoint optimizer's own next step and the learning-rate probe."""

    name: str | None
    learning_rate: float | None
    update_ratio: float | None  # global ‖Δw‖/‖w‖
    update_norm: float | None
    base_loss: float | None  # loss on the probe rows before the step
    lr_scales: list[float] = field(default_factory=list)
    lr_losses: list[float] = field(default_factory=list)  # loss at w + s·Δw
    iterations: int | None = None  # steps the run has taken (the optimizer's counter)
    # A LossScaleOptimizer's current dynamic loss scale (mixed_float16): halved on
    # every non-finite step, so a tiny one means fp16 overflows. None without one.
    loss_scale: float | None = None


@dataclass
class StepTrial:
    """A remedy tested in the engine: one optimizer step with and without it."""

    change: str  # the code change tried, e.g. "x = x / 255.0"
    loss_before: float  # remedied batch, before the step
    loss_after: float  # remedied batch, after one step
    baseline_before: float  # batch as sent
    baseline_after: float

    @property
    def relative_drop(self) -> float:
        return (self.loss_before - self.loss_after) / max(abs(self.loss_before), 1e-12)

    @property
    def baseline_relative_drop(self) -> float:
        return (self.baseline_before - self.baseline_after) / max(abs(self.baseline_before), 1e-12)


@dataclass
class ScratchTrial:
    """A remedy tested from a fresh start (engine/trial_steps.py, `from_scratch`):
    `steps` steps on half the batch as sent and with the remedy (a data remedy from the
    same fresh weights, or weights drawn by standard initializers), then the loss on
    the other half. `unit` converts the remedied arm's loss to the units of the batch
    as sent (standardized targets: std² for a squared loss)."""

    change: str
    steps: int
    as_sent_before: float
    as_sent_after: float
    remedied_before: float
    remedied_after: float
    unit: float = 1.0

    @property
    def remedied_after_as_sent_units(self) -> float:
        return self.remedied_after * self.unit

    @property
    def progress(self) -> tuple[float, float]:
        """(remedied, as sent): how far each arm brought the held-out loss below the
        remedied arm's starting loss. One reference for both, because the arms start
        at different losses (raw inputs make large first logits) but the same weights."""
        start = self.remedied_before * self.unit
        return start - self.remedied_after_as_sent_units, start - self.as_sent_after


@dataclass
class LearningRateTrial:
    """The learning-rate remedy tested in the engine: `steps` optimizer steps on one
    half of the batch at each scale of the learning rate, from a copy of the state,
    then the loss on the other half (held out, so memorizing the rows does not count).
    With `folds` 2 each half is held out in turn and the losses are their means: one
    split of a small batch can point the few steps away from the other half."""

    steps: int
    train_rows: int
    held_out_rows: int
    loss_before: float  # held-out loss at the checkpoint's weights
    scales: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # held-out loss after the steps
    folds: int = 1

    def gains(self) -> dict[float, float]:
        """How much each scale lowered the held-out loss (negative: raised it)."""
        return {s: self.loss_before - loss for s, loss in zip(self.scales, self.losses)}


@dataclass
class InitGain:
    """The layers whose initializer scales the signal up at the start, and by how
    much (engine/init_gain.py; read only when the weights are already NaN)."""

    layers: list[str]
    initializers: list[str]  # e.g. "RandomNormal(stddev=1.0)", one per layer
    factors: list[float]  # per layer: the signal's RMS after it over before, at init

    @property
    def total(self) -> float:
        return math.prod(self.factors)


@dataclass
class ClipTrial:
    """Gradient clipping tested in the engine: the held-out steps of the learning-rate
    trial, as the run is and with each weight's gradient clipped to `clipnorm` (Keras's
    `clipnorm`), from the same copy of the state."""

    clipnorm: float
    steps: int
    loss_before: float  # held-out loss at the checkpoint's weights
    as_is_after: float  # held-out loss after the steps as the run is
    clipped_after: float  # ... with the gradients clipped
    clipped_layers: int  # weights whose gradient norm the clip cuts on this batch


@dataclass
class PairingTrial:
    """The loss or labels a loss_mismatch remedy names, tested in the engine: the
    held-out steps from the checkpoint, training as the run is and with the remedy,
    both scored on the held-out rows by the remedied loss on the remedied labels
    (the quantity the fix makes right, so the two arms are comparable)."""

    change: str  # the code change tried, e.g. "from_logits=True"
    scored_by: str  # the loss both arms are scored by, e.g. "sparse_categorical_crossentropy"
    steps: int
    loss_before: float  # held-out, at the checkpoint's weights
    as_is_after: float  # held-out, after the steps as the run is
    remedied_after: float  # ... after the steps with the remedy


@dataclass
class TimeGradient:
    """The gradient a sequence input gets per time step (engine/quantities/time_steps.py):
    the mean norm over the first and the last quarter of the steps."""

    steps: int
    early: float
    late: float
    early_to_late: float | None


@dataclass
class NonFinite:
    loss: bool
    gradients: int
    weights: int
    activations: int
    outputs: int
    inputs: int
    first_layer: str | None  # first layer (input to output) where values stop being finite


@dataclass
class Measurements:
    """Everything one probe run measured about a model on a batch."""

    loss: float
    accuracy: float | None
    rows: int
    mode: str
    xla: bool
    probe_seconds: float
    grad_norm: float
    weight_norm: float | None
    micro_batch_rows: list[int]
    noise_scale: float | None  # B_simple (McCandlish et al. 2018), in examples
    nonfinite: NonFinite
    layers: list[LayerMeasurement]
    activations: list[ActivationMeasurement]
    inputs: list[TensorStats]
    first_layer_inputs: list[TensorStats]
    labels: LabelStats | None
    output: OutputStats | None
    optimizer: OptimizerStep | None
    static: StaticFacts
    unavailable: list[str]
    # Every row of the sample batch is the same: what varies across examples (dead
    # or saturated units, one class for all) cannot be judged on it.
    one_distinct_row: bool = False
    trials: dict[str, StepTrial] = field(default_factory=dict)
    lr_trial: LearningRateTrial | None = None
    clip_trial: ClipTrial | None = None
    pairing_trial: PairingTrial | None = None  # loss_mismatch's remedy, tried
    # Remedies tried from a fresh start: "target_scale" (standardized regression
    # targets), "standard_init" (Keras's default initializers).
    scratch_trials: dict[str, ScratchTrial] = field(default_factory=dict)
    time_gradient: TimeGradient | None = None  # models with a recurrent layer
    # A multi-output model's loss per output (engine/output_losses.py), unweighted,
    # and the labels of each output after the first (`labels` are the first's).
    output_losses: dict[str, float] = field(default_factory=dict)
    other_output_labels: dict[str, LabelStats] = field(default_factory=dict)
    # Per weight layer, a digest of its trainable weights: the run history compares
    # consecutive checkpoints with it (unchanged_weights).
    weight_digests: dict[str, str] = field(default_factory=dict)
    # Layers left trainable=False whose weights are still their random
    # initialization (engine/weights.py): never trained, without any history.
    frozen_at_init: list[str] = field(default_factory=list)
    # With NaN weights: the layers initialized to blow the signal up, if any.
    init_gain: InitGain | None = None

    def to_dict(self) -> dict[str, Any]:
        return finite_json(asdict(self))


def finite_json(value: Any) -> Any:
    """NaN and infinities become strings so the JSON stays standard."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, np.generic):
        return finite_json(value.item())
    return value
