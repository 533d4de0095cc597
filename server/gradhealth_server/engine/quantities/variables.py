"""Per weight layer: gradient and weight norms, mean |gradient|, zero and NaN/Inf
gradient entries, and the update of the optimizer's own step.

In the graph the probe reduces each trainable variable to a few sums; on the
host the variables of one layer add up to its LayerMeasurement.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from gradhealth_server.engine.measurements import LayerMeasurement
from gradhealth_server.engine.quantities.base import Stats, nonfinite_counts
from gradhealth_server.engine.structure import ModelStructure

KEY = "variables"


def graph_norms(grads: list[tf.Tensor]) -> Stats:
    """Norms-only mode: the squared gradient norm of each variable, nothing else."""
    return {"grad_sq": tf.stack([tf.reduce_sum(tf.square(g)) for g in grads])}


def graph(grads: list[tf.Tensor], weights: list[tf.Tensor]) -> Stats:
    """Whole-batch gradients (already merged) and weights, one number per variable."""
    grad_sq = tf.stack([tf.reduce_sum(tf.square(g)) for g in grads])
    weights = [tf.cast(w, tf.float32) for w in weights]
    weight_sq = tf.stack([tf.reduce_sum(tf.square(w)) for w in weights])
    return {
        "grad_sq": grad_sq,
        "weight_sq": weight_sq,
        "grad_abs_sum": tf.stack([tf.reduce_sum(tf.abs(g)) for g in grads]),
        "grad_zero": tf.stack(
            [tf.reduce_sum(tf.cast(tf.equal(g, 0.0), tf.float32)) for g in grads]
        ),
        "grad_nonfinite": nonfinite_counts(grad_sq, grads),
        "weight_nonfinite": nonfinite_counts(weight_sq, weights),
    }


def decode(stats: Stats, structure: ModelStructure, step_sq: np.ndarray | None) -> list:
    """One LayerMeasurement per weight layer, input to output."""
    full = "weight_sq" in stats
    out = []
    for info in structure.layers:
        idx = list(info.variable_indices)
        g = _norm(stats["grad_sq"], idx)
        w = _norm(stats["weight_sq"], idx) if full else None
        params = int(sum(structure.variable_sizes[i] for i in idx))
        layer = LayerMeasurement(
            name=info.name,
            class_name=info.class_name,
            activation=info.activation,
            parameters=params,
            grad_norm=g,
            weight_norm=w,
            grad_to_weight=g / w if w else None,
            mean_abs_grad=float(stats["grad_abs_sum"][idx].sum()) / max(params, 1) if full else 0.0,
            zero_grad_fraction=float(stats["grad_zero"][idx].sum()) / max(params, 1)
            if full
            else 0.0,
            grad_nonfinite=int(stats["grad_nonfinite"][idx].sum()) if full else 0,
            weight_nonfinite=int(stats["weight_nonfinite"][idx].sum()) if full else 0,
        )
        if full and step_sq is not None:
            u = _norm(step_sq, idx)
            layer.update_norm = u
            layer.update_ratio = u / w if w else None
        out.append(layer)
    return out


def total_norm(squares: np.ndarray) -> float:
    """The global norm from per-variable squared norms."""
    return float(np.sqrt(squares.astype(np.float64).sum()))


def gradient_nonfinite(stats: Stats) -> int:
    if "grad_nonfinite" in stats:
        return int(stats["grad_nonfinite"].sum())
    return int((~np.isfinite(stats["grad_sq"])).sum())  # norms-only mode


def first_nonfinite_layer(layers: list[LayerMeasurement], activation_nonfinite: dict) -> str | None:
    """The first weight layer (input to output) where values stop being finite."""
    for layer in layers:
        if layer.weight_nonfinite or layer.grad_nonfinite or activation_nonfinite.get(layer.name):
            return layer.name
        norms = (layer.grad_norm, layer.weight_norm)
        if any(n is not None and not math.isfinite(n) for n in norms):
            return layer.name
    return next((name for name, count in activation_nonfinite.items() if count), None)


def _norm(squares: np.ndarray, idx: list[int]) -> float:
    return float(np.sqrt(squares[idx].astype(np.float64).sum()))
