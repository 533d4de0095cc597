"""How much gradient each time step of a sequence input gets: the loss's gradient
with respect to the input at step t, as a norm per step. In a recurrent net the
gradient reaching the early steps has gone back through every later step; when
it dies on the way (a plain RNN over a long sequence), the early steps, where
the signal may sit, cannot be learned from, however healthy the weight gradients
look. Measured only for a model with a recurrent layer and a float sequence input
(batch, time, features)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from gradhealth_server.engine.facts import RECURRENT_LAYERS
from gradhealth_server.engine.measurements import TimeGradient
from gradhealth_server.engine.quantities.base import Merge, Stats

KEY = "time_steps"
MERGE = Merge()
# Steps at each end compared: a quarter of the sequence, at least one step.
END_SHARE = 0.25


def sequence_input(layer_classes: list[str], inputs: list[tuple[str, tuple, str]]) -> int | None:
    """Index of the input whose per-step gradient to measure: the first float input of
    rank 3 in a model with a recurrent layer; None when there is none."""
    if not RECURRENT_LAYERS & set(layer_classes):
        return None
    for i, (_name, shape, dtype) in enumerate(inputs):
        if len(shape) == 3 and "float" in dtype and (shape[1] or 0) > 1:
            return i
    return None


def graph(grad_x: tf.Tensor) -> Stats:
    g = tf.cast(grad_x, tf.float32)
    return {"step_sq": tf.reduce_sum(tf.square(g), axis=[0, 2])}


def decode(stats: Stats | None) -> TimeGradient | None:
    if not stats:
        return None
    norms = np.sqrt(np.maximum(np.asarray(stats["step_sq"], dtype=np.float64), 0.0))
    steps = int(norms.size)
    if steps < 2 or not np.all(np.isfinite(norms)):
        return None
    q = max(1, int(steps * END_SHARE))
    early, late = float(norms[:q].mean()), float(norms[-q:].mean())
    return TimeGradient(
        steps=steps,
        early=early,
        late=late,
        early_to_late=early / late if late > 0 else None,
    )
