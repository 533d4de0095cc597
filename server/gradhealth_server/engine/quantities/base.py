"""What the quantity families share: merging per-micro-batch statistics, NaN/Inf
counts in the graph, and means from running sums on the host."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

# In the graph: tensors; after the probe ran: numpy arrays.
Stats = dict[str, Any]


@dataclass(frozen=True)
class Merge:
    """How a family's statistics combine across micro-batches: every statistic is
    a sum unless it is named an extreme (a maximum or a minimum)."""

    maxima: frozenset[str] = frozenset()
    minima: frozenset[str] = frozenset()

    def __call__(self, a: Stats, b: Stats) -> Stats:
        out = {}
        for key in a:
            if key in self.maxima:
                out[key] = tf.maximum(a[key], b[key])
            elif key in self.minima:
                out[key] = tf.minimum(a[key], b[key])
            else:
                out[key] = a[key] + b[key]
        return out


def nonfinite(t: tf.Tensor) -> tf.Tensor:
    """How many NaN/Inf values t holds (0 for integer tensors)."""
    if not t.dtype.is_floating:
        return tf.constant(0.0)
    return tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(t)), tf.float32))


def nonfinite_counts(squares: tf.Tensor, tensors: list[tf.Tensor]) -> tf.Tensor:
    """NaN/Inf entries per tensor, counted only when some tensor's sum of squares
    (`squares`, one per tensor) is not finite: healthy models skip a pass over every
    parameter. One branch for all the tensors instead of a cond per tensor. (Counting
    over the tensors concatenated, with a segment sum, was measured and dropped: on a
    ResNet50 it added 4 GB to the probe's peak memory.)"""
    return tf.cond(
        tf.reduce_all(tf.math.is_finite(squares)),
        lambda: tf.zeros_like(squares),
        lambda: tf.stack([nonfinite(t) for t in tensors]),
    )


def per_unit_axes(t: tf.Tensor) -> list[int] | None:
    """Every axis but the last (units or features); None for a vector."""
    return list(range(t.shape.rank - 1)) if t.shape.rank and t.shape.rank > 1 else None


def mean_std(stats: Stats) -> tuple[float, float]:
    """Mean and standard deviation from the running sums sum, sum_sq and count."""
    count = max(float(stats["count"]), 1.0)
    mean = float(stats["sum"]) / count
    return mean, math.sqrt(max(float(stats["sum_sq"]) / count - mean * mean, 0.0))


def varying_min(feature_std: np.ndarray) -> float | None:
    """Smallest spread among features that vary (constant ones, e.g. border pixels, skip)."""
    varying = feature_std[feature_std > 1e-12]
    return float(varying.min()) if varying.size else None
