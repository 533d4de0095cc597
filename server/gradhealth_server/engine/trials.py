"""Data remedies the engine can try, chosen from what the probe measured.

- inputs: when the first weight layer sees inputs far from unit scale (as the
  unnormalized_input rule judges it: the diagnosis passes the rule's own test in),
  a rescaled copy of the batch (`x / 255` for 0-255 pixels, per-feature
  standardization otherwise);
- targets: regression targets far from unit scale under a squared or absolute
  loss, standardized, with the factor that brings the loss back to the units of
  the targets as sent;
- the loss: the loss (or the labels) a loss_mismatch remedy names, e.g. the same
  crossentropy with `from_logits=True` on a linear output, or class ids rounded
  back from labels divided by 255 (`LossRemedy`, built by the rule).

engine/trial_steps.py runs them, so the finding can say what the fix does on this
very model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradhealth_server.engine.measurements import Measurements, TensorStats

# Loss -> the power of the targets' std that converts a standardized-target loss back.
TARGET_LOSS_UNITS = {"mean_squared_error": 2, "mean_absolute_error": 1}


def what_the_weights_see(m: Measurements) -> list[TensorStats]:
    """First-layer inputs of a functional model; raw float inputs otherwise."""
    if m.static.functional:
        return m.first_layer_inputs
    return [s for s in m.inputs if s.dtype is None or s.dtype.startswith(("float", "bfloat"))]


def input_remedy(
    raw_x: dict[str, np.ndarray], m: Measurements, off_scale: Callable[[TensorStats], bool]
) -> tuple[str, dict[str, np.ndarray]] | None:
    """The rescaled batch to try, with the code change it stands for; None if not needed."""
    if not any(off_scale(s) for s in what_the_weights_see(m)) or m.nonfinite.weights:
        return None
    changes: list[str] = []
    remedied: dict[str, np.ndarray] = {}
    by_name = {s.name: s for s in m.inputs}
    for name, arr in raw_x.items():
        stats: TensorStats = by_name[name]
        if arr.dtype.kind in "iub":  # ids or flags, not a scale to fix
            remedied[name] = arr
            continue
        value = arr.astype(np.float32)
        prefix = "x" if len(raw_x) == 1 else f"x_{name}"
        if stats.range_class == "byte":
            value = value / np.float32(255.0)
            changes.append(f"{prefix} = {prefix} / 255.0")
        elif stats.range_class == "wide":
            flat = value.reshape(-1, value.shape[-1]) if value.ndim > 1 else value[:, None]
            mean, std = flat.mean(axis=0), flat.std(axis=0)
            std = np.where(std > 1e-12, std, 1.0).astype(np.float32)
            value = ((value - mean.reshape(-1)) / std.reshape(-1)).astype(np.float32)
            changes.append(f"{prefix} = ({prefix} - mean) / std")
        remedied[name] = value
    if not changes:
        return None
    return "; ".join(changes), remedied


def target_remedy(y: np.ndarray, m: Measurements) -> tuple[str, np.ndarray, float] | None:
    """The standardized targets to try, the change, and the loss unit factor (std**p)."""
    power = TARGET_LOSS_UNITS.get(m.static.loss or "")
    if power is None or m.static.problem != "regression" or y.dtype.kind != "f":
        return None
    flat = y.reshape(y.shape[0], -1).astype(np.float64)
    std = float(flat.std())
    if not np.isfinite(std) or std <= 1e-12:
        return None
    # One mean and std over all target columns: the loss averages them, so one
    # factor converts it back exactly.
    value = ((y - flat.mean()) / std).astype(y.dtype)
    return "y = (y - mean) / std", value, std**power


@dataclass(frozen=True)
class LossRemedy:
    """A loss_mismatch remedy the engine can simulate without touching the model: train
    with this Keras loss (by name) on these labels. `label_scale`: the labels as sent
    times this, rounded, are the class ids (ids divided by 255 sent as floats)."""

    change: str  # the code change, as the finding's remedy words it
    loss: str  # a Keras loss function's name, e.g. "sparse_categorical_crossentropy"
    from_logits: bool = False
    label_scale: int | None = None

    def labels(self, y: np.ndarray, raw_y: np.ndarray | None) -> np.ndarray:
        """The labels the remedied loss trains on and scores by."""
        if self.label_scale is None:
            return y
        source = raw_y if raw_y is not None else y
        return np.rint(source.astype(np.float64) * self.label_scale).astype(np.int32)
