"""The model's (first) output on the batch: predicted classes, mean entropy, row
sums of probability outputs, NaN/Inf; and the accuracy they give against the
labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from gradhealth_server.engine.facts import StaticFacts
from gradhealth_server.engine.measurements import OutputStats
from gradhealth_server.engine.quantities.base import Merge, Stats, nonfinite

KEY = "output"
# Per-example predicted classes, concatenated across micro-batches (not merged).
PREDICTED = "predicted"
MERGE = Merge(maxima=frozenset({"row_sum_max"}), minima=frozenset({"row_sum_min"}))


def graph(y_pred: Any, facts: StaticFacts) -> tuple[Stats, tf.Tensor]:
    """Statistics of the first output, and its predicted class per example."""
    # The model's flat output order (a dict of outputs by sorted key, as Keras
    # flattens it): the output the static facts and output_names[0] describe.
    y_pred = tf.nest.flatten(y_pred)[0]
    p = tf.cast(y_pred, tf.float32)
    units = p.shape[-1] if p.shape.rank else 1
    # A softmax or sigmoid output is probabilities even under from_logits=True: Keras 3
    # computes that loss from the cached logits, so the model trains (and predicts) as
    # if the pairing were right.
    logits = facts.from_logits and facts.output_activation not in ("softmax", "sigmoid")
    stats: Stats = {"nonfinite": nonfinite(p)}
    if p.shape.rank and p.shape.rank > 1 and units and units > 1:
        flat = tf.reshape(p, [-1, units])
        rows = tf.reduce_sum(flat, axis=-1)
        stats["row_sum_total"] = tf.reduce_sum(rows)
        stats["row_sum_min"] = tf.reduce_min(rows)
        stats["row_sum_max"] = tf.reduce_max(rows)
        stats["rows"] = tf.cast(tf.shape(flat)[0], tf.float32)
        probs = tf.nn.softmax(flat) if logits else tf.clip_by_value(flat, 1e-12, 1.0)
        if not logits:
            probs = probs / tf.reduce_sum(probs, axis=-1, keepdims=True)
        stats["entropy_total"] = -tf.reduce_sum(probs * tf.math.log(probs))
        pred = tf.cast(tf.argmax(flat, axis=-1), tf.int32)
    else:
        flat = tf.reshape(p, [-1])
        threshold = 0.0 if logits else 0.5
        stats["rows"] = tf.cast(tf.shape(flat)[0], tf.float32)
        pred = tf.cast(flat > threshold, tf.int32)
    return stats, pred


def decode(stats: Stats, problem: str) -> OutputStats:
    count = int(stats.get("nonfinite", 0))
    if problem == "regression" or PREDICTED not in stats:
        return OutputStats(None, None, None, None, None, None, count)
    pred = stats[PREDICTED].reshape(-1)
    hist = np.bincount(pred) if pred.size else np.zeros(0, dtype=int)
    rows = float(stats.get("rows", pred.size)) or 1.0
    entropy = stats.get("entropy_total")
    row_total = stats.get("row_sum_total")
    return OutputStats(
        predicted_histogram=hist.tolist(),
        majority_fraction=float(hist.max()) / max(pred.size, 1) if hist.size else None,
        mean_entropy=float(entropy) / rows if entropy is not None else None,
        row_sum_mean=float(row_total) / rows if row_total is not None else None,
        row_sum_min=float(stats["row_sum_min"]) if "row_sum_min" in stats else None,
        row_sum_max=float(stats["row_sum_max"]) if "row_sum_max" in stats else None,
        nonfinite=count,
    )


def accuracy(stats: Stats, y: np.ndarray, problem: str) -> float | None:
    """Share of examples whose predicted class is the label's."""
    if problem in ("regression", "unknown") or PREDICTED not in stats:
        return None
    pred = stats[PREDICTED].reshape(-1)
    y = np.asarray(y)
    if problem == "categorical" or (y.ndim >= 2 and y.shape[-1] > 1 and problem != "binary"):
        truth = y.reshape(-1, y.shape[-1]).argmax(axis=-1)
    elif problem == "binary":
        yf = y.astype(np.float64).reshape(-1)
        if yf.size and yf.max() > 1:
            return None  # class ids under a binary loss (loss_mismatch): no accuracy to read
        truth = (yf > (0.0 if yf.min() < 0 else 0.5)).astype(np.int64)
    else:
        truth = y.reshape(-1).astype(np.int64)
    if truth.size != pred.size:
        return None
    return float(np.mean(truth == pred))
