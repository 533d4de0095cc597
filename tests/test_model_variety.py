"""Model kinds beyond plain CNN/MLP: embeddings, loss scaling, summed losses,
leaky activations, BatchNorm as the input normalizer, learning-rate changes."""

from __future__ import annotations

import io
import json
import warnings
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradhealth_server.diagnosis import Diagnoser
from gradhealth_server.errors import InvalidBatch
from tests import models

ROWS = 128


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def eager_grad_sq(model, x, y) -> np.ndarray:
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    return np.array([np.sum(np.square(tf.convert_to_tensor(g).numpy())) for g in grads])


@pytest.fixture(scope="module")
def token_data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, size=(ROWS, 12)).astype("int32")
    y = (x[:, 0] % 3).astype("int32")
    return x, y


def test_embedding_model_is_probed_and_its_ids_are_not_unnormalized(
    tmp_path, token_data, monkeypatch
):
    # XLA as on a GPU (tried, with the plain-graph fallback), so a bad batch is shown
    # not to pass for a model XLA cannot compile.
    monkeypatch.setenv("GRADHEALTH_XLA", "on")
    x, y = token_data
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12,), dtype="int32"),
            keras.layers.Embedding(50, 8),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "embedding.keras"
    model.save(path)
    diagnoser = Diagnoser()
    d = diagnoser.diagnose(path, npz(x=x, y=y))
    grad_sq = np.array([v.grad_norm**2 for v in d.measurements.layers])
    expected = eager_grad_sq(model, x, y)
    assert grad_sq.sum() == pytest.approx(expected.sum(), rel=1e-4)
    assert "unnormalized_input" not in {str(f.cause) for f in d.verdict.findings}
    # A token id out of the vocabulary in row 5 is a bad batch, not an XLA problem.
    bad = x.copy()
    bad[5, 3] = 5000
    with pytest.raises(InvalidBatch, match=r"ids in \[0, 5000\] but its Embedding has 50 entries"):
        diagnoser.diagnose(path, npz(x=bad, y=y))
    again = diagnoser.diagnose(path, npz(x=x, y=y))
    assert again.measurements.xla is True


def test_loss_scale_optimizer_step_is_the_real_step(tmp_path):
    x, y = models.digits()
    keras.utils.set_random_seed(0)
    model = models.cnn()
    lr = 0.05
    model.compile(
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(lr)),
        "sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "scaled.keras"
    model.save(path)
    d = Diagnoser().diagnose(path, npz(x=x[:ROWS], y=y[:ROWS]))
    m = d.measurements
    assert m.static.optimizer == "SGD" and m.static.learning_rate == pytest.approx(lr)
    # Plain SGD moves each weight by lr * g: the update norm is lr * |g|.
    for layer in m.layers:
        assert layer.update_norm == pytest.approx(lr * layer.grad_norm, rel=1e-3)
    assert "learning_rate_too_low" not in {str(f.cause) for f in d.verdict.findings}


def test_summed_loss_with_regularizer_matches_fit(tmp_path):
    x, y = models.digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                32, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01)
            ),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(reduction="sum"))
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "summed.keras"
    model.save(path)
    d = Diagnoser().diagnose(path, npz(x=x[:ROWS], y=y[:ROWS]))
    expected = eager_grad_sq(model, x[:ROWS], y[:ROWS])
    got = np.array([v.grad_norm**2 for v in d.measurements.layers])
    assert got.sum() == pytest.approx(expected.sum(), rel=1e-4)
    assert d.measurements.micro_batch_rows == [ROWS]


def test_leaky_relu_units_are_never_called_dead(tmp_path):
    x, y = models.digits()
    keras.utils.set_random_seed(0)
    model = models.leaky_mlp()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "leaky.keras"
    model.save(path)
    d = Diagnoser().diagnose(path, npz(x=x[:ROWS], y=y[:ROWS]))
    assert all(a.dead_fraction is None for a in d.measurements.activations)


def test_batchnorm_first_layer_normalizes_the_input(tmp_path):
    x, y = models.digits(scale=255 / 16)  # 0-255 pixels
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=3, verbose=0)
    path = tmp_path / "bn_first.keras"
    model.save(path)
    d = Diagnoser().diagnose(path, npz(x=x[:ROWS], y=y[:ROWS]))
    assert [t.name for t in d.measurements.first_layer_inputs] == [model.layers[2].name]
    assert "unnormalized_input" not in {str(f.cause) for f in d.verdict.findings}


def test_learning_rate_is_read_from_each_checkpoint(tmp_path):
    x, y = models.digits()
    keras.utils.set_random_seed(0)
    model = models.cnn()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "a.keras")
    model.optimizer.learning_rate.assign(0.5)  # e.g. a schedule callback changed it
    model.save(tmp_path / "b.keras")
    diagnoser = Diagnoser()
    batch = npz(x=x[:ROWS], y=y[:ROWS])
    first = diagnoser.diagnose(tmp_path / "a.keras", batch)
    second = diagnoser.diagnose(tmp_path / "b.keras", batch)
    assert second.cache_hit and second.fingerprint == first.fingerprint
    assert first.measurements.static.learning_rate == pytest.approx(1e-3)
    assert second.measurements.static.learning_rate == pytest.approx(0.5)


def _attention_block() -> keras.Model:
    """A Transformer-style block whose residual is `x + y` and whose pooling is
    keras.ops.mean: the config records both as op classes (keras.src.ops.numpy.Add)."""
    seq = keras.Input((8, 8), name="rows")
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(seq, seq)
    h = keras.layers.LayerNormalization()(attended + seq)
    h = keras.ops.mean(h, axis=1)
    out = keras.layers.Dense(10, activation="softmax")(h)
    return keras.Model(seq, out)


def test_functional_attention_with_keras_ops_is_diagnosed(tmp_path):
    x, y = models.digits()
    x = x.reshape(-1, 8, 8)
    keras.utils.set_random_seed(0)
    model = _attention_block()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "attention.keras"
    model.save(path)
    ops = {
        (node["module"], node["class_name"])
        for node in json.loads(zipfile.ZipFile(path).read("config.json"))["config"]["layers"]
    }
    assert {("keras.src.ops.numpy", "Add"), ("keras.src.ops.numpy", "Mean")} <= ops
    d = Diagnoser().diagnose(path, npz(x=x[:ROWS], y=y[:ROWS]))
    expected = eager_grad_sq(model, x[:ROWS], y[:ROWS])
    got = np.array([v.grad_norm**2 for v in d.measurements.layers])
    assert got.sum() == pytest.approx(expected.sum(), rel=1e-4)
    assert np.isfinite(d.measurements.loss)


def _dict_input_model() -> keras.Model:
    """Two inputs declared as a dict whose keys are not in sorted order: Keras takes
    them by key (a list in its flat order is refused)."""
    means = keras.Input((6,), name="means")
    extremes = keras.Input((3,), name="extremes")
    h = keras.layers.Concatenate()(
        [keras.layers.Dense(8, activation="relu")(means), keras.layers.Dense(4)(extremes)]
    )
    out = keras.layers.Dense(1, activation="sigmoid")(h)
    return keras.Model(inputs={"means": means, "extremes": extremes}, outputs=out)


def _dict_data() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    means = rng.normal(size=(ROWS, 6)).astype("float32")
    extremes = rng.normal(size=(ROWS, 3)).astype("float32")
    y = (means[:, 0] + extremes[:, 1] > 0).astype("float32")
    return {"means": means, "extremes": extremes}, y


def test_dict_input_model_is_fed_by_name(tmp_path):
    x, y = _dict_data()
    keras.utils.set_random_seed(0)
    model = _dict_input_model()
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=10, verbose=0)
    path = tmp_path / "dict_inputs.keras"
    model.save(path)
    d = Diagnoser().diagnose(path, npz(x_means=x["means"], x_extremes=x["extremes"], y=y))
    expected = eager_grad_sq(model, x, y)
    got = np.array([v.grad_norm**2 for v in d.measurements.layers])
    assert got.sum() == pytest.approx(expected.sum(), rel=1e-4)
    assert d.verdict.status == "healthy", [f.summary for f in d.verdict.findings]


def test_a_one_element_input_list_gets_no_structure_warning(tmp_path):
    """keras.Model([inp], out) is called with [x], as declared, so Keras does not warn."""
    x, y = _dict_data()
    features = keras.Input((6,), name="features")
    out = keras.layers.Dense(1, activation="sigmoid")(features)
    model = keras.Model([features], out)
    model.compile("adam", "binary_crossentropy")
    path = tmp_path / "listed.keras"
    model.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = Diagnoser().diagnose(path, npz(x=x["means"], y=y))
    assert np.isfinite(d.measurements.loss)
    assert not [w for w in caught if "structure of `inputs`" in str(w.message)]
