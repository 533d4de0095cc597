"""The zoo's models (bench/zoo.py): each a compiled Keras model, the learnable data it
trains on and the verdict it should get."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

HEALTHY = frozenset({"healthy"})


@dataclass(frozen=True)
class Spec:
    """One zoo entry: a compiled model, its training data and what it should get."""

    build: Callable[[], Any]  # returns a compiled Keras model
    data: Callable[[], tuple[Any, Any]]  # (x, y) to train on; the batch is the first rows
    optimizer: str  # as printed
    epochs: int
    batch_size: int = 32
    rows: int = 128  # the sample batch
    expect: frozenset[str] = HEALTHY  # "healthy" or the primary causes that are right
    dtype_policy: str = "float32"
    # "mirrored": built, compiled and trained under tf.distribute.MirroredStrategy over
    # two logical CPU devices (bench/zoo.py sets them up in its training child).
    strategy: str | None = None


# -- learnable synthetic data ------------------------------------------------------


def gratings(n: int, size: int, pixels: bool = False, classes: int = 4, seed: int = 0):
    """Images of a sine grating, random phase, plus noise: the class is its orientation
    (translation-invariant, so global-pooling networks can learn it). [0, 1], or
    0-255 with pixels=True."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype("int32")
    theta = y * np.pi / classes
    phase = rng.uniform(0, 2 * np.pi, n)
    rows, cols = np.mgrid[0:size, 0:size].astype("float32")
    freq = 2 * np.pi * 4 / size  # four periods across the image
    arg = freq * (
        np.cos(theta)[:, None, None] * cols[None] + np.sin(theta)[:, None, None] * rows[None]
    )
    x = 0.5 + 0.35 * np.sin(arg + phase[:, None, None])
    x = x[..., None] + 0.05 * rng.normal(size=(n, size, size, 3))
    x = np.clip(x, 0.0, 1.0).astype("float32")
    return (x * 255.0 if pixels else x), y


def waves(n: int, steps: int = 24, features: int = 3, classes: int = 4, seed: int = 0):
    """Noisy sine sequences: the class is the frequency."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype("int32")
    omega = (y + 1) * np.pi / 12
    t = np.arange(steps, dtype="float32")
    phase = rng.uniform(0, 2 * np.pi, (n, 1, features))
    x = np.sin(omega[:, None, None] * t[None, :, None] + phase)
    x = x + 0.3 * rng.normal(size=x.shape)
    return x.astype("float32"), y


VOCAB, LENGTH = 64, 24


def keywords(n: int, classes: int = 4, seed: int = 0):
    """Token sequences: filler ids, plus three keywords of the class (two per class,
    ids 1-8) at random positions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype("int32")
    x = rng.integers(2 * classes + 1, VOCAB, (n, LENGTH))
    for i, label in enumerate(y):
        where = rng.choice(LENGTH, 3, replace=False)
        x[i, where] = 1 + 2 * label + rng.integers(0, 2, 3)
    return x.astype("int32"), y


def two_targets(n: int = 1024, seed: int = 0):
    """Features -> (a 3-class label, a regression target)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    kind = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0.5).astype("int32")
    size = (x[:, 2] * 2.0 - x[:, 3] + 0.5 * x[:, 4] * x[:, 5])[:, None].astype("float32")
    return x, {"kind": kind, "size": size}


def _digits(pixels: bool = False):
    from gradhealth_server.commands.examples import digits

    return digits(255.0 / 16.0 if pixels else 1.0 / 16.0)


def _digit_columns():
    x, y = _digits()
    return x, y[:, None]


# -- the zoo -----------------------------------------------------------------------


def builders() -> dict[str, Spec]:
    import keras

    L = keras.layers

    def compiled(model, optimizer, loss="sparse_categorical_crossentropy", **kw):
        model.compile(optimizer, loss, metrics=kw.pop("metrics", ["accuracy"]), **kw)
        return model

    def app(cls, size, optimizer, **kw):
        def build():
            model = cls(input_shape=(size, size, 3), weights=None, classes=4, **kw)
            return compiled(model, optimizer())

        return build

    def recurrent(layer, optimizer):
        def build():
            model = keras.Sequential(
                [
                    keras.Input((24, 3)),
                    layer(32, return_sequences=True),
                    layer(32),
                    L.Dense(4, activation="softmax"),
                ],
                name=f"{layer.__name__.lower()}_classifier",
            )
            return compiled(model, optimizer())

        return build

    def conv1d(optimizer):
        def build():
            model = keras.Sequential(
                [
                    keras.Input((24, 3)),
                    L.Conv1D(32, 5, activation="relu", padding="same"),
                    L.MaxPooling1D(2),
                    L.Conv1D(64, 3, activation="relu", padding="same"),
                    L.GlobalAveragePooling1D(),
                    L.Dense(32, activation="relu"),
                    L.Dense(4, activation="softmax"),
                ],
                name="conv1d_classifier",
            )
            return compiled(model, optimizer())

        return build

    def transformer():
        tokens = keras.Input((LENGTH,), dtype="int32", name="tokens")
        positions = keras.ops.cumsum(keras.ops.ones_like(tokens), axis=1) - 1
        h = L.Embedding(VOCAB, 32, name="token_embedding")(tokens)
        h = h + L.Embedding(LENGTH, 32, name="position_embedding")(positions)
        for i in range(2):
            attended = L.MultiHeadAttention(num_heads=4, key_dim=8, name=f"attention_{i}")(h, h)
            h = L.LayerNormalization(name=f"norm_a{i}")(h + L.Dropout(0.1)(attended))
            ff = L.Dense(64, activation="gelu", name=f"ff_in_{i}")(h)
            ff = L.Dense(32, name=f"ff_out_{i}")(ff)
            h = L.LayerNormalization(name=f"norm_b{i}")(h + L.Dropout(0.1)(ff))
        h = L.GlobalAveragePooling1D()(h)
        out = L.Dense(4, activation="softmax", name="label")(h)
        schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=400, alpha=0.1)
        return compiled(keras.Model(tokens, out, name="transformer_encoder"),
                        keras.optimizers.Lion(schedule))  # fmt: skip

    def embedding():
        model = keras.Sequential(
            [
                keras.Input((LENGTH,), dtype="int32"),
                L.Embedding(VOCAB, 16),
                L.GlobalAveragePooling1D(),
                L.Dense(16, activation="relu"),
                L.Dense(4, activation="softmax"),
            ],
            name="embedding_bag",
        )
        return compiled(model, keras.optimizers.AdamW(3e-3, weight_decay=1e-4))

    def bn_dropout_cnn():
        model = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                L.Conv2D(32, 3, padding="same", use_bias=False),
                L.BatchNormalization(),
                L.Activation("relu"),
                L.Conv2D(32, 3, use_bias=False),
                L.BatchNormalization(),
                L.Activation("relu"),
                L.Flatten(),
                L.Dropout(0.3),
                L.Dense(64, activation="relu"),
                L.Dropout(0.3),
                L.Dense(10, activation="softmax"),
            ],
            name="bn_dropout_cnn",
        )
        optimizer = keras.optimizers.SGD(0.02, momentum=0.9, nesterov=True)
        return compiled(model, optimizer)

    def multi_output():
        features = keras.Input((8,), name="features")
        h = L.Dense(64, activation="relu", name="shared_1")(features)
        h = L.Dense(64, activation="relu", name="shared_2")(h)
        kind = L.Dense(3, activation="softmax", name="kind")(h)
        size = L.Dense(1, name="size")(h)
        model = keras.Model(features, [kind, size], name="two_heads")
        return compiled(
            model,
            keras.optimizers.Adam(3e-3),
            loss={"kind": "sparse_categorical_crossentropy", "size": "mse"},
            loss_weights={"kind": 1.0, "size": 0.5},
            metrics={"kind": ["accuracy"]},
        )

    def digits_mlp(optimizer, loss="sparse_categorical_crossentropy", name="digits_mlp", units=10):
        def build():
            model = keras.Sequential(
                [
                    keras.Input((8, 8, 1)),
                    L.Flatten(),
                    L.Dense(128, activation="relu"),
                    L.Dense(64, activation="relu"),
                    # float32 head, as Keras advises under mixed precision
                    L.Dense(
                        units, activation="softmax" if units > 1 else "sigmoid", dtype="float32"
                    ),
                ],
                name=name,
            )
            return compiled(model, optimizer(), loss)

        return build

    def raw_pixels_cnn():
        from gradhealth_server.commands.examples import digits_cnn

        return compiled(
            digits_cnn("raw_pixels_cnn"), keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
        )

    images32 = lambda: gratings(768, 32)  # noqa: E731
    images64 = lambda: gratings(384, 64)  # noqa: E731
    pixels64 = lambda: gratings(384, 64, pixels=True)  # noqa: E731
    seqs = lambda: waves(1024)  # noqa: E731
    tokens = lambda: keywords(1024)  # noqa: E731
    o = keras.optimizers
    return {
        "mobilenet_v2": Spec(
            app(keras.applications.MobileNetV2, 32, lambda: o.Adam(1e-3), alpha=0.35),
            images32, "Adam 1e-3", epochs=8,
        ),
        "resnet50": Spec(
            app(keras.applications.ResNet50, 64,
                lambda: o.SGD(0.01, momentum=0.9, nesterov=True)),
            images64, "SGD 0.01 nesterov m0.9", epochs=4, rows=64,
        ),
        "efficientnet_b0": Spec(  # its own Rescaling/Normalization: 0-255 in is right
            app(keras.applications.EfficientNetB0, 64,
                lambda: o.AdamW(1e-3, weight_decay=1e-4)),
            pixels64, "AdamW 1e-3 wd1e-4", epochs=5, rows=64,
        ),
        "transformer": Spec(transformer, tokens, "Lion CosineDecay(1e-3)", epochs=8),
        "lstm": Spec(recurrent(L.LSTM, lambda: o.RMSprop(2e-3)), seqs, "RMSprop 2e-3", epochs=8),
        "gru": Spec(recurrent(L.GRU, lambda: o.Adam(2e-3)), seqs, "Adam 2e-3", epochs=8),
        "conv1d": Spec(conv1d(lambda: o.Adagrad(0.05)), seqs, "Adagrad 0.05", epochs=10),
        "bn_dropout_cnn": Spec(bn_dropout_cnn, _digits, "SGD 0.02 nesterov m0.9", epochs=10),
        "embedding": Spec(embedding, tokens, "AdamW 3e-3 wd1e-4", epochs=10),
        "multi_output": Spec(multi_output, two_targets, "Adam 3e-3", epochs=20),
        "mixed_float16": Spec(
            digits_mlp(lambda: o.Adam(1e-3), name="mixed_mlp"), _digits,
            "Adam 1e-3 (LossScaleOptimizer)", epochs=8, dtype_policy="mixed_float16",
        ),
        "mirrored_mlp": Spec(
            digits_mlp(lambda: o.SGD(0.05, momentum=0.9), name="mirrored_mlp"), _digits,
            "SGD 0.05 m0.9 (MirroredStrategy, 2 CPUs)", epochs=8, batch_size=64,
            strategy="mirrored",
        ),
        # -- faulty: each must be named right
        "faulty_lr_high": Spec(
            conv1d(lambda: o.Adam(1.0)), seqs, "Adam 1.0", epochs=5,
            expect=frozenset({"learning_rate_too_high", "exploding_gradients", "non_finite"}),
        ),
        "faulty_raw_pixels": Spec(
            raw_pixels_cnn, lambda: _digits(pixels=True), "SGD 0.01 nesterov m0.9", epochs=5,
            expect=frozenset({"unnormalized_input"}),
        ),
        # Keras 3 refuses BCE between (n,) ids and a (n, 10) softmax outright, so the
        # bug that trains: one sigmoid unit under BCE, fed the 10-class ids 0-9.
        "faulty_wrong_loss": Spec(
            digits_mlp(lambda: o.Adam(1e-3), "binary_crossentropy", "bce_on_ids", units=1),
            _digit_columns, "Adam 1e-3", epochs=8, expect=frozenset({"loss_mismatch"}),
        ),
    }  # fmt: skip
