"""unchanged_weights without history: layers left trainable=False at their random
initialization (engine/weights.frozen_at_init), and pretrained layers frozen on
purpose, which must not be flagged."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from gradhealth_server.diagnosis import Diagnoser
from gradhealth_server.engine.weights import frozen_at_init
from gradhealth_server.verdict.findings import Cause, Severity


def digits_mlp(freeze_before_training: bool, seed: int = 0):
    """64 -> 32 tanh -> 32 tanh -> 10 softmax on digits, hidden layers frozen either
    before any training (the bug) or after training them (transfer, on purpose)."""
    keras.utils.set_random_seed(seed)
    data = load_digits()
    x, y = (data.data / 16.0).astype("float32"), data.target
    hidden = [keras.layers.Dense(32, activation="tanh") for _ in range(2)]
    model = keras.Sequential([keras.Input((64,)), *hidden, keras.layers.Dense(10, "softmax")])
    if not freeze_before_training:
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=10, batch_size=64, verbose=0)
    for layer in hidden:
        layer.trainable = False
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    return model, x, y, [layer.name for layer in hidden]


def diagnose(tmp_path, model, x, y):
    path = tmp_path / "m.keras"
    model.save(path)
    batch = {"x": x[:256], "y": y[:256]}
    return Diagnoser().diagnose(path, batch).verdict


def test_hidden_layers_frozen_at_random_init_are_named(tmp_path):
    model, x, y, hidden = digits_mlp(freeze_before_training=True)
    assert frozen_at_init(model) == hidden
    verdict = diagnose(tmp_path, model, x, y)
    (finding,) = [f for f in verdict.findings if f.cause is Cause.UNCHANGED_WEIGHTS]
    assert finding.severity is Severity.WARNING and finding.layers == hidden
    assert "frozen (trainable=False) at random initialization" in finding.summary
    assert "trainable=True" in finding.remedy


def test_layers_trained_then_frozen_on_purpose_are_not_flagged(tmp_path):
    model, x, y, _ = digits_mlp(freeze_before_training=False)
    assert frozen_at_init(model) == []
    verdict = diagnose(tmp_path, model, x, y)
    assert Cause.UNCHANGED_WEIGHTS not in {f.cause for f in verdict.findings}


@pytest.fixture(scope="module")
def backbone_and_images():
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 32, 32, 3)).astype("float32")
    y = (x[:, :16, :16, 0].mean(axis=(1, 2)) > 0).astype("int64")
    return base, x, y


def test_a_keras_applications_backbone_built_with_weights_none_and_frozen(backbone_and_images):
    """Transfer learning without the pretrained weights: the convs have no bias, so
    the witness is the frozen BatchNormalization layers' untouched statistics."""
    base, x, y = backbone_and_images
    base.trainable = False
    convs = [
        layer.name
        for layer in base._flatten_layers(include_self=False)
        if getattr(layer, "kernel", None) is not None and layer.kernel.numpy().size >= 256
    ]
    assert set(frozen_at_init(base)) == set(convs) and len(convs) > 40
    # Trained for one epoch first, then frozen: its statistics moved, nothing is flagged.
    base.trainable = True
    model = keras.Sequential([keras.Input((32, 32, 3)), base, keras.layers.Dense(2, "softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    base.trainable = False
    assert frozen_at_init(model) == []


def test_an_initializer_that_cannot_be_drawn_again_is_not_a_crash():
    """A custom initializer without a config: frozen_at_init and the init trigger
    cannot tell, and say nothing (they run inside every diagnosis)."""
    from gradhealth_server.engine.init_gain import exploding_init

    class Unreadable(keras.initializers.Initializer):
        def __call__(self, shape, dtype=None):
            return keras.ops.ones(shape, dtype=dtype) * 3.0

        def get_config(self):
            raise NotImplementedError

    layers = [keras.layers.Dense(32, kernel_initializer=Unreadable()) for _ in range(3)]
    model = keras.Sequential([keras.Input((64,)), *layers, keras.layers.Dense(2)])
    for layer in layers:
        layer.trainable = False
    assert frozen_at_init(model) == []
    assert exploding_init(model) is None
