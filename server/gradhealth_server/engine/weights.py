"""What the checkpoint's weights say before any probe runs (unchanged_weights).

- `weight_digests`: a digest of each layer's trainable weights. Consecutive
  checkpoints of a run that trains differ in every layer; a layer whose digest
  does not change is not being trained.
- `frozen_at_init`: layers left `trainable=False` whose weights are still their
  random initialization. Freezing a backbone built with `weights=None`, or freezing
  the wrong layers, leaves the rest of the model learning on random features; no
  history is needed to see it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from gradhealth_server.engine.initializers import seeded_draws
from gradhealth_server.engine.structure import ModelStructure


def weight_digests(model: Any, structure: ModelStructure) -> dict[str, str]:
    variables = model.trainable_variables
    out = {}
    for layer in structure.layers:
        digest = hashlib.blake2b(digest_size=16)
        for index in layer.variable_indices:
            digest.update(np.ascontiguousarray(variables[index].numpy()).tobytes())
        out[layer.name] = digest.hexdigest()
    return out


# The weight arrays a frozen layer was initialized with: (weights, initializer) attributes.
INITIALIZED = (
    ("kernel", "kernel_initializer"),
    ("kernel", "depthwise_initializer"),  # DepthwiseConv*
    ("embeddings", "embeddings_initializer"),
)
# Fewer weights than this say too little about their distribution.
MIN_WEIGHTS = 256
# |w| against seeded draws of the initializer (a sanity check beside the exact
# witnesses: a kernel loaded from elsewhere does not match): the two-sample
# Kolmogorov-Smirnov coefficient of the 0.1 % level, and the values drawn.
KS_001 = 1.95
DRAWN = 8192


def frozen_at_init(model: Any) -> list[str]:
    """Layers with `trainable=False` whose weights match a fresh draw of their own
    initializer and that carry an exact witness of never having been trained: their
    bias still its initial constant, or (no bias: a conv before BatchNormalization)
    every frozen BatchNormalization of the model still at its initial statistics.

    The kernel alone cannot tell: a wide layer trained for a few hundred steps can
    still match its initializer's spread. A bias or a normalization layer's moving
    statistics move in the first step that trains them."""
    frozen = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if not layer.trainable and not getattr(layer, "_layers", None)  # not a container
    ]
    norms = [layer for layer in frozen if type(layer).__name__ == "BatchNormalization"]
    norms_untouched = bool(norms) and all(_normalization_untouched(n) for n in norms)
    out = []
    for layer in frozen:
        found = [(getattr(layer, w, None), getattr(layer, i, None)) for w, i in INITIALIZED]
        found = [(w, i) for w, i in found if w is not None and i is not None]
        if not found:
            continue
        bias = getattr(layer, "bias", None)
        witness = norms_untouched if bias is None else _untouched(bias, "bias", layer)
        if witness and all(_matches_a_fresh_draw(np.asarray(w.numpy()), i) for w, i in found):
            out.append(layer.name)
    return out


def _normalization_untouched(layer: Any) -> bool:
    """A BatchNormalization whose moving statistics (and scale and offset) are still
    what its initializers wrote: it never ran in training mode."""
    parts = [("moving_mean", "moving_mean"), ("moving_variance", "moving_variance")]
    parts += [("gamma", "gamma"), ("beta", "beta")]
    present = [(getattr(layer, v, None), i) for v, i in parts]
    return all(v is None or _untouched(v, i, layer) for v, i in present)


def _untouched(variable: Any, initializer: str, layer: Any) -> bool:
    """Every entry still the constant the layer's `<initializer>_initializer` writes."""
    initial = _constant(getattr(layer, f"{initializer}_initializer", None))
    return initial is not None and bool(np.all(np.asarray(variable.numpy()) == initial))


def _constant(initializer: Any) -> float | None:
    name = type(initializer).__name__
    if name == "Zeros":
        return 0.0
    if name == "Ones":
        return 1.0
    if name == "Constant":
        try:
            return float(initializer.get_config().get("value", 0.0))
        except (TypeError, ValueError):  # a per-unit constant: not one value
            return None
    return None


def _matches_a_fresh_draw(weights: np.ndarray, initializer: Any) -> bool:
    """|w| drawn from the same distribution as seeded draws of the initializer of the
    same shape (at least DRAWN values: deterministic, precise for a small layer):
    a two-sample Kolmogorov-Smirnov distance under its 0.1 % critical value."""
    if weights.size < MIN_WEIGHTS or not np.all(np.isfinite(weights)):
        return False
    draws = seeded_draws(initializer, weights.shape, DRAWN)
    if draws is None:
        return False
    # Every k-th value: the distance over 8k values is as telling as over millions.
    stride = max(1, weights.size // DRAWN)
    now = np.sort(np.abs(weights.ravel()[::stride].astype(np.float64)))
    drawn = np.sort(np.abs(draws[::stride].astype(np.float64)))
    grid = np.concatenate([now, drawn])
    cdf_now = np.searchsorted(now, grid, side="right") / now.size
    cdf_drawn = np.searchsorted(drawn, grid, side="right") / drawn.size
    distance = float(np.max(np.abs(cdf_now - cdf_drawn)))
    return distance < KS_001 * np.sqrt(1 / now.size + 1 / drawn.size)
