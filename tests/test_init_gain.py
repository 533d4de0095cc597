"""The trigger named when the weights are already NaN: an exploding initialization
read from the initializers (engine/init_gain.py), not from the NaN weights."""

from __future__ import annotations

import keras
import numpy as np
from sklearn.datasets import load_wine
from sklearn.preprocessing import StandardScaler

from gradhealth_server.diagnosis import Diagnoser
from gradhealth_server.engine.init_gain import exploding_init
from gradhealth_server.verdict.findings import Cause


def diverged_wine_mlp(tmp_path, initializer, learning_rate: float):
    """8 ReLU layers of 48 on standardized wine, trained until the weights are NaN."""
    keras.utils.set_random_seed(0)
    data = load_wine()
    x = StandardScaler().fit_transform(data.data).astype("float32")
    hidden = [
        keras.layers.Dense(48, activation="relu", kernel_initializer=initializer) for _ in range(8)
    ]
    model = keras.Sequential([keras.Input((13,)), *hidden, keras.layers.Dense(3, "softmax")])
    model.compile(
        keras.optimizers.SGD(learning_rate, momentum=0.9), "sparse_categorical_crossentropy"
    )
    for _ in range(20):
        model.fit(x, data.target, epochs=1, batch_size=16, verbose=0)
        if not all(np.isfinite(w).all() for w in model.get_weights()):
            break
    assert not all(np.isfinite(w).all() for w in model.get_weights()), "never diverged"
    path = tmp_path / "diverged.keras"
    model.save(path)
    finding = next(
        f
        for f in Diagnoser().diagnose(path, {"x": x[:128], "y": data.target[:128]}).verdict.findings
        if f.cause is Cause.NON_FINITE
    )
    return finding, [layer.name for layer in hidden]


def test_an_exploding_initialization_is_named_as_the_trigger(tmp_path):
    finding, hidden = diverged_wine_mlp(tmp_path, keras.initializers.RandomNormal(stddev=1.0), 0.01)
    assert "likely trigger: an exploding initialization: 8 layers" in finding.summary
    assert f"({hidden[0]} to {hidden[-1]}) start from RandomNormal(stddev=1.0)" in finding.summary
    assert "about 4.88x" in finding.summary  # sqrt(48 / 2) per layer after the first
    assert "he_normal" in finding.remedy


def test_a_rate_that_diverged_a_he_initialized_stack_names_the_rate_only(tmp_path):
    finding, _ = diverged_wine_mlp(tmp_path, "he_normal", 5.0)
    assert "exploding initialization" not in finding.summary
    assert "learning rate 5 is above the usual range" in finding.summary


def test_keras_default_initializers_do_not_explode():
    dense = keras.Sequential(
        [keras.Input((64,)), *[keras.layers.Dense(256, activation="relu") for _ in range(6)]]
    )
    plain_linear = keras.Sequential(
        [keras.Input((64,)), *[keras.layers.Dense(64) for _ in range(6)]]
    )
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    assert exploding_init(dense) is None
    assert exploding_init(plain_linear) is None
    assert exploding_init(backbone) is None
