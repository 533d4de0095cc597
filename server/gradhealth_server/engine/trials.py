"""Data remedies the engine can try, chosen from what the probe measured.

- inputs: when the first weight layer sees inputs far from unit scale (as the
  unnormalized_input rule judges it: the diagnosis passes the rule's own test in),
  a rescaled copy of the batch (`x / 255` for 0-255 pixels, per-feature
  standardization otherwise);
- targets: regression targets far from unit scale under a squared or absolute
  loss, standardized, with the factor that brings the loss back to the units of
  the targets as sent.

engine/trial_steps.py runs them, so the finding can say what the fix does on this
very model.
"""

from __future__ import annotations

from collections.abc import Callable

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
