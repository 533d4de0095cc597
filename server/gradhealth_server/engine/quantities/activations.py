"""Per tapped layer output: mean and spread, NaN/Inf, dead ReLU units (never
fired on the batch) and saturated sigmoid/tanh units (in their flat region)."""

from __future__ import annotations

import tensorflow as tf

from gradhealth_server.engine.facts import CAN_DIE, SATURATING
from gradhealth_server.engine.measurements import ActivationMeasurement
from gradhealth_server.engine.quantities.base import (
    Merge,
    Stats,
    mean_std,
    nonfinite,
    per_unit_axes,
)
from gradhealth_server.engine.structure import ModelStructure

KEY = "activations"
# A ReLU-family unit is dead on the batch when it never outputs more than this.
DEAD_UNIT_MAX = 0.0
# A sigmoid/tanh output this close to its bounds passes back < ~2 % of the gradient.
SIGMOID_SATURATION = 0.01
TANH_SATURATION = 0.99

MERGE = Merge(maxima=frozenset({"unit_max"}), minima=frozenset({"unit_all_saturated"}))


def graph(t: tf.Tensor, activation: str) -> Stats:
    """One micro-batch's statistics of one layer output."""
    t = tf.cast(t, tf.float32)
    axes = per_unit_axes(t)
    stats = {
        "sum": tf.reduce_sum(t),
        "sum_sq": tf.reduce_sum(tf.square(t)),
        "count": tf.cast(tf.size(t), tf.float32),
        "nonfinite": nonfinite(t),
        # Per unit (last axis): did it ever fire / leave the flat region?
        "unit_max": tf.reduce_max(t, axis=axes),
    }
    if activation in SATURATING:
        if activation == "tanh":
            flat = tf.abs(t) > TANH_SATURATION
        else:
            flat = tf.logical_or(t < SIGMOID_SATURATION, t > 1.0 - SIGMOID_SATURATION)
        flat = tf.cast(flat, tf.float32)
        stats["saturated"] = tf.reduce_sum(flat)
        stats["unit_all_saturated"] = tf.reduce_min(flat, axis=axes)
    return stats


def decode(all_stats: list[Stats], structure: ModelStructure) -> list[ActivationMeasurement]:
    out = []
    for stats, tap in zip(all_stats, structure.taps, strict=True):
        mean, std = mean_std(stats)
        unit_max = stats["unit_max"]
        units = int(unit_max.size)
        m = ActivationMeasurement(
            layer=tap.layer,
            activation=tap.activation,
            units=units,
            mean=mean,
            std=std,
            nonfinite=int(stats["nonfinite"]),
            is_output=tap.is_output,
        )
        if tap.activation in CAN_DIE:
            m.dead_fraction = float((unit_max <= DEAD_UNIT_MAX).sum()) / max(units, 1)
        if tap.activation in SATURATING:
            count = max(float(stats["count"]), 1.0)
            m.saturated_fraction = float(stats["saturated"]) / count
            m.saturated_units_fraction = float(stats["unit_all_saturated"].sum()) / max(units, 1)
        out.append(m)
    return out
