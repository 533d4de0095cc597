"""The checkpoint optimizer's own next step: its size against the weights, per
variable and overall, and the learning-rate probe (the loss at w + s·Δw for a
few scales s)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from gradhealth_server.engine.facts import StaticFacts
from gradhealth_server.engine.measurements import OptimizerStep
from gradhealth_server.engine.quantities.base import Stats
from gradhealth_server.engine.quantities.variables import total_norm

KEY = "optimizer"


def graph_step(deltas: list[tf.Tensor], iterations: tf.Tensor) -> Stats:
    """Δw of the real step, one number per variable, and the step counter."""
    step_sq = tf.stack([tf.reduce_sum(tf.square(d)) for d in deltas])
    return {
        "step_sq": step_sq,
        "iterations": tf.cast(iterations, tf.int64),
    }


def graph_lr_probe(base_loss: tf.Tensor, losses: tf.Tensor) -> Stats:
    """The loss before the step and at each learning-rate scale (one per scale)."""
    return {"lr_probe_losses": losses, "lr_probe_base_loss": base_loss}


def loss_scale(optimizer: object) -> float | None:
    """A LossScaleOptimizer's current dynamic loss scale, read on the host between
    probes (None: no loss scaling). Halved on every non-finite step of fit: a tiny
    one means float16 overflows."""
    scale = getattr(optimizer, "dynamic_scale", None)
    if scale is None:
        return None
    try:
        return float(np.asarray(scale.numpy() if hasattr(scale, "numpy") else scale))
    except (TypeError, ValueError):
        return None


def step_squares(stats: Stats | None) -> np.ndarray | None:
    """Per-variable squared step norms, for the per-layer update ratios."""
    return stats.get("step_sq") if stats else None


def decode(
    stats: Stats | None, facts: StaticFacts, weight_sq: np.ndarray, scales: tuple[float, ...]
) -> OptimizerStep:
    if not stats or "step_sq" not in stats:
        return OptimizerStep(facts.optimizer, facts.learning_rate, None, None, None)
    u = total_norm(stats["step_sq"])
    w = total_norm(weight_sq)
    losses = stats.get("lr_probe_losses")
    return OptimizerStep(
        name=facts.optimizer,
        learning_rate=facts.learning_rate,
        update_ratio=u / w if w > 0 else None,
        update_norm=u,
        base_loss=float(stats["lr_probe_base_loss"]) if "lr_probe_base_loss" in stats else None,
        lr_scales=[float(s) for s in scales] if losses is not None else [],
        lr_losses=[float(v) for v in losses] if losses is not None else [],
        iterations=int(stats["iterations"]) if "iterations" in stats else None,
    )
