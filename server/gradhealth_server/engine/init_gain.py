"""How much each weight layer's initializer scales the signal at the start.

A checkpoint whose weights are already NaN cannot be measured, but its
initializers can still be read: a layer drawn with variance v over fan_in inputs
multiplies the signal's variance by v * fan_in, against 2 that keeps it (He) ahead
of a ReLU and 1 ahead of anything else. A stack of layers each far above that is
an exploding initialization: the activations, and with them the first gradients,
grow geometrically with depth (non_finite names it as the likely trigger).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradhealth_server.engine.initializers import seeded_draws
from gradhealth_server.engine.measurements import InitGain
from gradhealth_server.engine.output_facts import activation_of

# Layers whose kernel is (..., fan_in, units): fan_in is every axis but the last.
FAN_IN_KERNELS = frozenset({"Dense", "Conv1D", "Conv2D", "Conv3D"})
# The variance gain that keeps the signal's scale ahead of these activations.
PRESERVING = {"relu": 2.0, "leaky_relu": 2.0, "relu6": 2.0, "elu": 2.0, "gelu": 2.0}
# A layer counts when it scales the signal's RMS by at least this much.
LAYER_FACTOR = 2.0
# Seeded draws of an initializer, enough values for its variance to 1 %.
DRAWN = 65536


def exploding_init(model: Any) -> InitGain | None:
    """The layers drawn to scale the signal up by LAYER_FACTOR or more, in model
    order; None when fewer than two do (one such layer is not a stack)."""
    layers, names, factors = [], [], []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kernel = getattr(layer, "kernel", None)
        init = getattr(layer, "kernel_initializer", None)
        if type(layer).__name__ not in FAN_IN_KERNELS or kernel is None or init is None:
            continue
        shape = tuple(int(d) for d in kernel.shape)
        variance = _variance(init, shape)
        if variance is None:
            continue
        keeps = PRESERVING.get(activation_of(layer) or "", 1.0)
        factor = math.sqrt(variance * math.prod(shape[:-1]) / keeps)
        if factor >= LAYER_FACTOR:
            layers.append(layer.name)
            names.append(_described(init))
            factors.append(factor)
    return InitGain(layers, names, factors) if len(layers) >= 2 else None


def _variance(initializer: Any, shape: tuple[int, ...]) -> float | None:
    """The variance of the initializer's values for this shape, from seeded draws."""
    values = seeded_draws(initializer, shape, DRAWN)
    if values is None or values.size < 2 or not np.all(np.isfinite(values)):
        return None
    return float(values.astype(np.float64).var())


def _described(initializer: Any) -> str:
    """`RandomNormal(stddev=1.0)`: the class and the arguments that set its scale."""
    try:
        config = initializer.get_config()
    except Exception:  # a custom initializer without a config
        return type(initializer).__name__
    keys = ("stddev", "minval", "maxval", "scale", "mode", "gain")
    args = ", ".join(f"{k}={config[k]!r}" for k in keys if k in config)
    return f"{type(initializer).__name__}({args})"
