"""The gradient noise scale B_simple, from the micro-batches' gradient norms:
how many examples a batch needs before its gradient stops being mostly noise."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from gradhealth_server.engine.quantities.base import Stats

KEY = "micro"


def graph(losses: list[tf.Tensor], grads: list[list[tf.Tensor]]) -> Stats:
    """Each micro-batch's loss and squared gradient norm."""
    squares = [tf.add_n([tf.reduce_sum(tf.square(g)) for g in gi]) for gi in grads]
    return {"losses": tf.stack(losses), "grad_sq": tf.stack(squares)}


def decode(stats: Stats | None, batch_grad_sq: np.ndarray, rows: tuple[int, ...]) -> float | None:
    """B_simple = tr(Σ)/|G|².

    McCandlish et al. (2018), appendix A: E|g_b|² = |G|² + tr(Σ)/b for a batch of
    b rows. Each micro-batch i against the whole batch B gives an unbiased
    tr(Σ) = (|g_i|² - |g_B|²) / (1/n_i - 1/B); their mean is used, and
    |G|² = |g_B|² - tr(Σ)/B.
    """
    if len(rows) < 2 or not stats:
        return None
    big = float(sum(rows))
    big_sq = float(batch_grad_sq.astype(np.float64).sum())
    traces = [
        (float(sq) - big_sq) / (1.0 / n - 1.0 / big)
        for sq, n in zip(stats["grad_sq"], rows, strict=True)
    ]
    trace = float(np.mean(traces))
    g2 = big_sq - trace / big
    if not (math.isfinite(g2) and math.isfinite(trace)) or g2 <= 0 or trace < 0:
        return None
    return trace / g2
