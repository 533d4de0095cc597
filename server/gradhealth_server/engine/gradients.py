"""Gradients as fit() computes them: through the optimizer's loss scale.

Under mixed_float16 the backward pass runs in float16, whose smallest positive
value is 6e-8. fit() multiplies the loss by the LossScaleOptimizer's dynamic
scale before differentiating and divides the gradients by it after, so small
gradients survive the float16 layers. The probe and the trials do the same:
without it a healthy mixed-precision run would show the vanishing gradients
that float16 alone gives it. With no loss scale the scale is 1 (nothing changes).

The scale is the checkpoint's own: the last one fit() found finite. A batch whose
scaled gradients still overflow float16 shows them as non-finite, as fit() would
(it skips that step and halves the scale).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def loss_scale(model: keras.Model) -> tf.Tensor:
    """The factor fit() multiplies the loss by before differentiating (float32)."""
    if model.optimizer is None:
        return tf.constant(1.0)
    return tf.cast(model.optimizer.scale_loss(tf.constant(1.0)), tf.float32)


def gradients(
    tape: tf.GradientTape, loss: tf.Tensor, sources: list[tf.Tensor], scale: tf.Tensor
) -> list[tf.Tensor]:
    """d loss / d sources, unscaled, dense (Embedding gradients come as
    IndexedSlices) and float32."""
    grads = tape.gradient(
        loss,
        sources,
        output_gradients=tf.cast(scale, loss.dtype),
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return [tf.cast(tf.convert_to_tensor(g), tf.float32) / scale for g in grads]
