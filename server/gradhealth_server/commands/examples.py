"""A small faulty training run on scikit-learn's digits, for trying gradhealth."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digits(scale: float = 1.0 / 16.0) -> tuple[np.ndarray, np.ndarray]:
    """Digits as (n, 8, 8, 1) images; scale=16.0 gives 0-255 pixels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images * scale).astype("float32")[..., None]
    return x, data.target.astype("int32")


def digits_cnn(name: str = "digits_cnn"):
    """The small CNN used by the example, the benchmarks and the tests."""
    import keras

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name=name,
    )


def write_example(directory: Path, rows: int = 256) -> tuple[Path, Path]:
    """The classic bug: a digits CNN fed 0-255 pixels (no `x / 255`) with plain SGD.

    Five epochs in it sits near chance accuracy; the same run on scaled pixels
    reaches ~97 %. Saves the checkpoint and a sample batch as the job sends it.
    """
    from gradhealth_server.engine.device import quiet_tensorflow

    quiet_tensorflow()
    import keras

    directory.mkdir(parents=True, exist_ok=True)
    x, y = digits(scale=255.0 / 16.0)  # the bug: pixels never divided by 255
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    checkpoint = directory / "digits_cnn.keras"
    batch = directory / "digits_batch.npz"
    model.save(checkpoint)
    np.savez(batch, x=x[:rows], y=y[:rows])
    return checkpoint, batch
