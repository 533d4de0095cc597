"""What the first weight layers actually see: the scale of their inputs, overall
and per feature. Behind a Rescaling or Normalization layer this is unit scale
even when the raw batch is 0-255."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from gradhealth_server.engine.measurements import TensorStats
from gradhealth_server.engine.quantities.base import (
    Merge,
    Stats,
    mean_std,
    nonfinite,
    per_unit_axes,
    varying_min,
)
from gradhealth_server.engine.quantities.inputs import range_class
from gradhealth_server.engine.structure import ModelStructure

KEY = "first_inputs"
MERGE = Merge(maxima=frozenset({"max"}), minima=frozenset({"min"}))


def graph(t: tf.Tensor) -> Stats:
    t = tf.cast(t, tf.float32)
    axes = per_unit_axes(t)
    return {
        "sum": tf.reduce_sum(t),
        "sum_sq": tf.reduce_sum(tf.square(t)),
        "count": tf.cast(tf.size(t), tf.float32),
        "min": tf.reduce_min(t),
        "max": tf.reduce_max(t),
        "nonfinite": nonfinite(t),
        "feature_sum": tf.reduce_sum(t, axis=axes),
        "feature_sum_sq": tf.reduce_sum(tf.square(t), axis=axes),
        "feature_count": tf.cast(tf.size(t) // tf.maximum(tf.shape(t)[-1], 1), tf.float32),
    }


def decode(all_stats: list[Stats], structure: ModelStructure) -> list[TensorStats]:
    out = []
    for stats, tap in zip(all_stats, structure.first_layer_inputs, strict=True):
        mean, std = mean_std(stats)
        fcount = max(float(stats["feature_count"]), 1.0)
        fmean = stats["feature_sum"].astype(np.float64) / fcount
        fvar = np.maximum(stats["feature_sum_sq"].astype(np.float64) / fcount - fmean**2, 0)
        fstd = np.sqrt(fvar)
        lo, hi = float(stats["min"]), float(stats["max"])
        out.append(
            TensorStats(
                name=tap.layer,
                mean=mean,
                std=std,
                min=lo,
                max=hi,
                range_class=range_class(lo, hi, mean, std),
                feature_std_min=varying_min(fstd),
                feature_std_max=float(fstd.max()) if fstd.size else None,
                feature_mean_abs_max=float(np.abs(fmean).max()) if fmean.size else None,
                nonfinite=int(stats["nonfinite"]),
            )
        )
    return out
