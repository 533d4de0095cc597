"""A tiny custom layer, loss and metric, registered with Keras the way a team's own
library registers them: the server loads them only when allow-listed (--allow-class)."""

from __future__ import annotations

import keras

PACKAGE = "gradhealth_fixture"


@keras.saving.register_keras_serializable(package=PACKAGE)
class Scale(keras.layers.Layer):
    """Multiplies its input by one learned scalar."""

    def build(self, input_shape) -> None:
        self.factor = self.add_weight(shape=(), initializer="ones", name="factor")

    def call(self, inputs):
        return inputs * self.factor


@keras.saving.register_keras_serializable(package=PACKAGE)
def scaled_mse(y_true, y_pred):
    """Mean squared error, halved."""
    return 0.5 * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
def mean_abs_error(y_true, y_pred):
    """A custom metric function."""
    return keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=-1)
