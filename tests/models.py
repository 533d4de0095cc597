"""Model builders and a checkpoint factory for the tests (real training on digits)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from gradhealth_server.engine.device import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402


def digits(scale: float = 1.0 / 16.0) -> tuple[np.ndarray, np.ndarray]:
    from gradhealth_server.commands.examples import digits as load

    return load(scale)


def cnn() -> keras.Model:
    from gradhealth_server.commands.examples import digits_cnn

    return digits_cnn()


def dense_digits(name: str, *hidden: tuple[int, str]) -> keras.Model:
    """A dense net on the 8x8 digits: the flattened pixels, the hidden (units,
    activation) layers in order, ten logits. The tests' MLPs and the benchmarks' 1M
    one differ only in those layers."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            *(keras.layers.Dense(units, activation=activation) for units, activation in hidden),
            keras.layers.Dense(10),
        ],
        name=name,
    )


def mlp() -> keras.Model:
    return dense_digits("digits_mlp", (128, "tanh"), (64, "relu"))


def leaky_mlp() -> keras.Model:
    return dense_digits("digits_leaky_mlp", (64, "leaky_relu"), (64, "leaky_relu"))


def bn_dropout_cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="digits_bn",
    )


def two_input() -> keras.Model:
    image = keras.Input((8, 8, 1), name="image")
    stats = keras.Input((2,), name="stats")
    h = keras.layers.Conv2D(8, 3, activation="relu")(image)
    h = keras.layers.Flatten()(h)
    s = keras.layers.Dense(8, activation="relu")(stats)
    h = keras.layers.Concatenate()([h, s])
    out = keras.layers.Dense(10, activation="softmax")(h)
    return keras.Model([image, stats], out, name="two_input")


@keras.saving.register_keras_serializable(package="gradhealth_tests")
class SubclassedMLP(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(32, activation="relu")
        self.out = keras.layers.Dense(10, activation="softmax")

    def call(self, x, training=False):
        return self.out(self.hidden(self.flatten(x)))


BUILDERS: dict[str, Callable[[], keras.Model]] = {
    "cnn": cnn,
    "mlp": mlp,
    "bn_dropout": bn_dropout_cnn,
    "two_input": two_input,
}


def two_input_batch(x: np.ndarray) -> dict[str, np.ndarray]:
    stats = np.stack([x.mean(axis=(1, 2, 3)), x.std(axis=(1, 2, 3))], axis=1).astype("float32")
    return {"image": x, "stats": stats}


class CheckpointFactory:
    """Trains and saves checkpoints once per session.

    `path("cnn")` is a checkpoint after one epoch; `path("cnn@b")` is the same
    run (same model object, so same layer names) one epoch later.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        kind = name.partition("@")[0]
        if name not in self._made:
            self._make(kind)
        return self._made[name]

    def _make(self, kind: str) -> None:
        x, y = digits()
        keras.utils.set_random_seed(1)
        if kind == "mlp_logits":
            model = mlp()
            model.compile(
                optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
        elif kind == "subclassed":
            model = SubclassedMLP()
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        else:
            model = BUILDERS[kind]()
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
        inputs = two_input_batch(x) if kind == "two_input" else x
        for stage in ("a", "b"):
            model.fit(inputs, y, epochs=1, batch_size=64, verbose=0)
            path = self.root / f"{kind}_{stage}.keras"
            model.save(path)
            self._made[kind if stage == "a" else f"{kind}@b"] = path


def sgd_run_checkpoints(directory: Path, learning_rate: float, epochs: int = 5) -> list[Path]:
    """One digits MLP trained with SGD, a checkpoint after every epoch."""
    x, y = digits()
    x = x.reshape(len(x), -1)
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name=f"history_mlp_{learning_rate:g}",
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    paths = []
    for epoch in range(epochs):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
        paths.append(directory / f"epoch_{epoch}.keras")
        model.save(paths[-1])
    return paths
