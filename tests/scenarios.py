"""Labelled ground truth: real Keras runs that fail for one known reason, and healthy runs.

Every scenario trains a small model for real on a data set that ships with scikit-learn
(digits, wine, breast_cancer, iris, diabetes; nothing is downloaded) and returns the
checkpoint a training job would send plus the sample batch exactly as the job feeds it.
`tests/test_scenario_symptoms.py` proves each symptom is real; `python -m tests.scenarios`
trains them all and prints a table.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import functools
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from bench.corpus.data import shuffled

SEED = 0
BATCH_ROWS = 256

CAUSES = {
    "vanishing_gradients": "deep plain sigmoid/tanh stack: the gradient shrinks layer by layer "
    "and never reaches the first layers",
    "exploding_gradients": "deep plain stack with a large init: activations and gradients grow "
    "layer by layer, the loss is huge but still finite",
    "non_finite": "the checkpoint already holds NaN (divergence, log of a negative, 0/0)",
    "unnormalized_input": "features never scaled (0-255 pixels, raw tabular units) with plain "
    "SGD at an ordinary learning rate",
    "learning_rate_too_high": "normalized inputs, ordinary model, learning rate far too high: "
    "dead ReLUs / one class / flat loss",
    "learning_rate_too_low": "normalized inputs, ordinary model, learning rate so small that "
    "nothing moves",
    "dead_relu": "hidden ReLUs start (and stay) dead because of a large negative bias init",
    "saturated_activation": "hidden sigmoid/tanh units pinned at their limits by the "
    "initialisation, on normalized input",
    "loss_mismatch": "output activation, loss and labels do not fit together",
    "prediction_collapse": "the objective rewards predicting one class (wrong class weights, "
    "absurd L2)",
}


@dataclass(frozen=True)
class Scenario:
    name: str  # "<cause>/<variant>"; healthy ones "healthy/<variant>"
    cause: str | None  # a key of CAUSES, None for healthy runs
    dataset: str  # digits | wine | breast_cancer | iris | diabetes
    train: Callable[[], Run]  # builds, compiles, fits; seeded
    symptom: str  # see SYMPTOMS
    twin: str | None = None  # the healthy scenario this one is compared with


SYMPTOMS = {
    "chance_accuracy": "final train accuracy within a small margin of the majority-class share",
    "far_below_twin": "final train accuracy far below the healthy twin's (same setup, bug fixed)",
    "huge_loss": "final loss finite but orders of magnitude above a constant predictor's",
    "nan_loss": "final loss or some weight is NaN/inf",
    "one_class": "nearly every example of the (balanced) sample batch predicted as one class",
    "healthy": "accuracy well above chance (regression: loss well below the variance of y)",
    "converged": "train loss near zero and accuracy ~1",
    "early": "a few steps of the twin's setup: loss falling, accuracy still below the twin's",
}


@dataclass
class Run:
    model: keras.Model  # compiled and trained: the checkpoint the job would send
    x: np.ndarray | dict[str, np.ndarray]  # sample batch exactly as fed to the model
    y: np.ndarray
    history: dict[str, list[float]]  # keras History.history


SCENARIOS: list[Scenario] = []


def scenario(name: str, dataset: str, symptom: str, twin: str | None = None):
    """Register the decorated builder as a scenario; it is seeded before every call."""
    cause = None if name.startswith("healthy/") else name.split("/")[0]
    assert cause is None or cause in CAUSES, name
    assert symptom in SYMPTOMS, symptom

    def register(build: Callable[[], Run]) -> Callable[[], Run]:
        @functools.wraps(build)
        def train() -> Run:
            keras.utils.set_random_seed(SEED)
            return build()

        SCENARIOS.append(Scenario(name, cause, dataset, train, symptom, twin))
        return build

    return register


def by_name(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(name)


# Where runs trained by one process of the session are kept for the others (pytest-xdist
# workers: test_verdicts and test_scenario_symptoms train the same runs in two processes).
# None: train in this process only. Set by conftest under xdist.
SHARED_RUNS: Path | None = None


@functools.cache
def train_cached(name: str) -> Run:
    """Train a scenario once per process (the tests share these runs), and once per
    session when SHARED_RUNS is set: the first process trains and saves it while
    holding the scenario's lock, the others wait and load what it saved."""
    if SHARED_RUNS is None:
        return by_name(name).train()
    import fcntl
    import json

    SHARED_RUNS.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "__", name)
    done = SHARED_RUNS / f"{safe}.history.json"  # written last: the run is complete
    with open(SHARED_RUNS / f"{safe}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            model = keras.models.load_model(SHARED_RUNS / f"{safe}.keras")
            with np.load(SHARED_RUNS / f"{safe}.npz") as arrays:
                y = arrays["y"]
                if "x" in arrays:
                    x = arrays["x"]
                else:
                    x = {k[2:]: arrays[k] for k in arrays.files if k.startswith("x_")}
            return Run(model, x, y, json.loads(done.read_text()))
        run = by_name(name).train()
        save_run(run, SHARED_RUNS, name)
        partial = done.with_suffix(".partial")
        partial.write_text(json.dumps({k: [float(v) for v in vs] for k, vs in run.history.items()}))
        partial.rename(done)
        return run


def save_run(run: Run, directory: Path, name: str) -> tuple[Path, Path]:
    """Save the checkpoint (.keras) and the sample batch (.npz with x, y or x_<input>, y)."""
    directory.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "__", name)
    checkpoint, batch = directory / f"{safe}.keras", directory / f"{safe}.npz"
    run.model.save(checkpoint)
    x = run.x
    arrays = {f"x_{k}": v for k, v in x.items()} if isinstance(x, dict) else {"x": x}
    np.savez(batch, y=run.y, **arrays)
    return checkpoint, batch


# --- data ---


@functools.cache
def load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw features and labels in a fixed shuffled order (so the first rows are a fair sample)."""
    x, y = shuffled(dataset)
    return x, y.astype("float32" if dataset == "diabetes" else "int32")


def chance(dataset: str) -> float:
    """Accuracy of always predicting the majority class."""
    _, y = load(dataset)
    return float(np.bincount(y).max() / len(y))


def standardize(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean(0)) / np.maximum(x.std(0), 1e-6)).astype("float32")


def digits(scale: float = 1 / 16, images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Digits pixels (0-16 in sklearn) times `scale`: 1/16 -> [0, 1], 255/16 -> 0-255."""
    x, y = load("digits")
    x = (x * scale).astype("float32")
    return (x.reshape(-1, 8, 8, 1) if images else x), y


def tabular(dataset: str, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
    x, y = load(dataset)
    return (x if raw else standardize(x)), y


def one_hot(y: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype="float32")[y]


# --- helpers ---


def mlp(
    n_in: int,
    widths: list[int],
    activation: str,
    n_out: int,
    out_activation: str | None = "softmax",
    **dense,
) -> keras.Model:
    """A plain Sequential stack of Dense layers (extra kwargs go to the hidden layers)."""
    layers = [keras.Input((n_in,))]
    layers += [keras.layers.Dense(w, activation=activation, **dense) for w in widths]
    layers.append(keras.layers.Dense(n_out, activation=out_activation))
    return keras.Sequential(layers)


def fit(
    model: keras.Model,
    x,
    y: np.ndarray,
    *,
    optimizer,
    loss="sparse_categorical_crossentropy",
    epochs: int,
    batch_size: int = 32,
    metrics=("accuracy",),
    **fit_kwargs,
) -> Run:
    """Compile, fit, and return the run with the first BATCH_ROWS rows as the sample batch."""
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, **fit_kwargs)
    return Run(model, first_rows(x), y[:BATCH_ROWS], history.history)


def first_rows(x):
    """The sample batch: the first BATCH_ROWS rows (the data are already shuffled)."""
    return {k: v[:BATCH_ROWS] for k, v in x.items()} if isinstance(x, dict) else x[:BATCH_ROWS]


SGD = keras.optimizers.SGD
Adam = keras.optimizers.Adam
RMSprop = keras.optimizers.RMSprop


# --- shared setups ---
# Each faulty scenario that has a twin calls the same function as the twin with one thing changed.

DIGITS = "digits"
SPARSE_CE = "sparse_categorical_crossentropy"


def digits_mlp_sgd(
    *,
    scale: float = 1 / 16,
    lr: float = 0.01,
    depth: int = 2,
    activation: str = "relu",
    head: list[keras.layers.Layer] | None = None,
    **dense,
) -> Run:
    """MLP (`depth` x 64 units) on flat digits, SGD with momentum 0.9, 10 epochs."""
    x, y = digits(scale)
    hidden = [keras.layers.Dense(64, activation=activation, **dense) for _ in range(depth)]
    head = head or [keras.layers.Dense(10, activation="softmax")]
    model = keras.Sequential([keras.Input((64,)), *hidden, *head])
    return fit(model, x, y, optimizer=SGD(lr, momentum=0.9), epochs=10)


def tabular_mlp_sgd(
    dataset: str, *, raw: bool = False, lr: float = 0.01, activation: str = "relu", **dense
) -> Run:
    """32-32 MLP on a small tabular set, SGD with momentum 0.9, 40 epochs."""
    x, y = tabular(dataset, raw=raw)
    if dataset == "breast_cancer":  # binary: one sigmoid unit
        model = mlp(x.shape[1], [32, 32], activation, 1, "sigmoid", **dense)
        loss = "binary_crossentropy"
    else:
        model = mlp(x.shape[1], [32, 32], activation, int(y.max()) + 1, **dense)
        loss = SPARSE_CE
    return fit(model, x, y, optimizer=SGD(lr, momentum=0.9), loss=loss, epochs=40)


def digits_cnn() -> keras.Model:
    from gradhealth_server.commands.examples import digits_cnn as build

    return build()


def iris_mlp(optimizer) -> Run:
    x, y = tabular("iris")
    return fit(mlp(4, [16, 16], "relu", 3), x, y, optimizer=optimizer, epochs=60)


# --- healthy ---


@scenario("healthy/sgd_digits_mlp", DIGITS, "healthy")
def healthy_sgd_digits_mlp() -> Run:
    """Two ReLU layers, SGD with momentum, pixels scaled to [0, 1]."""
    return digits_mlp_sgd()


@scenario("healthy/tanh_digits_mlp4", DIGITS, "healthy")
def healthy_tanh_digits_mlp() -> Run:
    """Four tanh layers with Glorot init: unsaturated."""
    return digits_mlp_sgd(depth=4, activation="tanh")


@scenario("healthy/sgd_wine_mlp", "wine", "healthy")
def healthy_sgd_wine_mlp() -> Run:
    """Standardized wine features, SGD with momentum."""
    return tabular_mlp_sgd("wine")


@scenario("healthy/sgd_breast_cancer_mlp", "breast_cancer", "healthy")
def healthy_sgd_breast_cancer_mlp() -> Run:
    """Standardized breast_cancer features, sigmoid head, SGD with momentum."""
    return tabular_mlp_sgd("breast_cancer")


@scenario("healthy/adam_iris_mlp", "iris", "healthy")
def healthy_adam_iris_mlp() -> Run:
    """A small MLP on iris with Adam."""
    return iris_mlp(Adam(1e-2))


@scenario("healthy/adam_digits_cnn", DIGITS, "healthy")
def healthy_adam_digits_cnn() -> Run:
    x, y = digits(images=True)
    return fit(digits_cnn(), x, y, optimizer=Adam(1e-3), epochs=5)


@scenario("healthy/early_digits_cnn", DIGITS, "early", twin="healthy/adam_digits_cnn")
def healthy_early_digits_cnn() -> Run:
    """The CNN twin after its first 5 steps: still near chance, but nothing is wrong."""
    x, y = digits(images=True)
    model = digits_cnn()
    model.compile(optimizer=Adam(1e-3), loss=SPARSE_CE, metrics=["accuracy"])
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    for step in range(5):
        rows = slice(32 * step, 32 * (step + 1))
        logs = model.train_on_batch(x[rows], y[rows], return_dict=True)
        for key in history:
            history[key].append(float(logs[key]))
    return Run(model, x[:BATCH_ROWS], y[:BATCH_ROWS], history)


@scenario("healthy/batchnorm_deep_mlp_rmsprop", DIGITS, "healthy")
def healthy_batchnorm_deep_mlp() -> Run:
    """Ten Dense+BatchNorm+ReLU blocks: deep, but normalized, so gradients flow."""
    x, y = digits()
    layers: list[keras.layers.Layer] = [keras.Input((64,))]
    for _ in range(10):
        layers += [
            keras.layers.Dense(64, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
        ]
    layers.append(keras.layers.Dense(10, activation="softmax"))
    return fit(keras.Sequential(layers), x, y, optimizer=RMSprop(1e-3), epochs=8)


@scenario("healthy/residual_mlp_adam", DIGITS, "healthy")
def healthy_residual_mlp() -> Run:
    """Twelve sigmoid layers, but in residual blocks (Add skips) so the gradient has a path."""
    x, y = digits()
    inputs = keras.Input((64,), name="pixels")
    h = keras.layers.Dense(64, activation="relu")(inputs)
    for _ in range(6):
        branch = keras.layers.Dense(64, activation="sigmoid")(h)
        branch = keras.layers.Dense(64, activation="sigmoid")(branch)
        h = keras.layers.Add()([h, branch])
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    return fit(model, x, y, optimizer=Adam(1e-3), epochs=8)


@scenario("healthy/dropout_l2_digits_mlp", DIGITS, "healthy")
def healthy_dropout_l2() -> Run:
    """Dropout and a mild L2 penalty: regularized, still learns."""
    x, y = digits()
    l2 = keras.regularizers.L2(1e-4)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu", kernel_regularizer=l2),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(64, activation="relu", kernel_regularizer=l2),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    return fit(model, x, y, optimizer=Adam(1e-3), epochs=10)


@scenario("healthy/label_smoothing_digits", DIGITS, "healthy")
def healthy_label_smoothing() -> Run:
    """One-hot labels with label smoothing 0.1: the loss never goes near zero, by design."""
    x, y = digits()
    model = mlp(64, [64, 64], "relu", 10)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    return fit(model, x, one_hot(y, 10), optimizer=Adam(1e-3), loss=loss, epochs=10)


@scenario("healthy/class_weight_breast_cancer", "breast_cancer", "healthy")
def healthy_class_weight() -> Run:
    """'Balanced' class weights (about 1.3 vs 0.8): mild, sensible."""
    x, y = tabular("breast_cancer")
    counts = np.bincount(y)
    weights = {c: len(y) / (2 * n) for c, n in enumerate(counts)}
    model = mlp(30, [16], "relu", 1, "sigmoid")
    return fit(
        model,
        x,
        y,
        optimizer=Adam(1e-3),
        loss="binary_crossentropy",
        epochs=20,
        class_weight=weights,
    )


@scenario("healthy/confident_sigmoid_breast_cancer", "breast_cancer", "healthy")
def healthy_confident_sigmoid() -> Run:
    """Trained until the sigmoid head is saturated at 0/1: confident, not broken."""
    x, y = tabular("breast_cancer")
    model = mlp(30, [64, 32], "relu", 1, "sigmoid")
    return fit(model, x, y, optimizer=Adam(1e-2), loss="binary_crossentropy", epochs=60)


@scenario("healthy/diabetes_regression", "diabetes", "healthy")
def healthy_diabetes_regression() -> Run:
    """MSE regression, linear head, standardized features and target."""
    x, y = load("diabetes")
    x, y = standardize(x), standardize(y)
    model = mlp(10, [32, 16], "relu", 1, None)
    return fit(model, x, y, optimizer=Adam(1e-2), loss="mse", metrics=["mae"], epochs=60)


@scenario("healthy/gru_digits_rows", DIGITS, "healthy")
def healthy_gru() -> Run:
    """A GRU reading each digit as 8 rows of 8 pixels."""
    x, y = digits()
    x = x.reshape(-1, 8, 8)
    model = keras.Sequential(
        [keras.Input((8, 8)), keras.layers.GRU(32), keras.layers.Dense(10, activation="softmax")]
    )
    return fit(model, x, y, optimizer=Adam(1e-2), epochs=8)


@scenario("healthy/multi_input_digits", DIGITS, "healthy")
def healthy_multi_input() -> Run:
    """A functional model with two named inputs: the image and two summary features."""
    images, y = digits(images=True)
    stats = np.stack([images.mean(axis=(1, 2, 3)), images.std(axis=(1, 2, 3))], axis=1)
    x = {"image": images, "stats": standardize(stats)}
    image = keras.Input((8, 8, 1), name="image")
    summary = keras.Input((2,), name="stats")
    h = keras.layers.Conv2D(16, 3, activation="relu")(image)
    h = keras.layers.Flatten()(h)
    s = keras.layers.Dense(8, activation="relu")(summary)
    h = keras.layers.Concatenate()([h, s])
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model([image, summary], outputs)
    return fit(model, x, y, optimizer=Adam(1e-3), epochs=6)


@scenario("healthy/rescaling_layer_digits_0_255", DIGITS, "healthy")
def healthy_rescaling_layer() -> Run:
    """0-255 pixels are sent, but the model's first layer is Rescaling(1/255)."""
    x, y = digits(scale=255 / 16)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    return fit(model, x, y, optimizer=SGD(0.01, momentum=0.9), epochs=10)


@scenario("healthy/normalization_layer_wine_raw", "wine", "healthy")
def healthy_normalization_layer() -> Run:
    """Raw wine features are sent, but an adapted Normalization layer standardizes them."""
    x, y = tabular("wine", raw=True)
    norm = keras.layers.Normalization()
    norm.adapt(x)
    model = keras.Sequential(
        [
            keras.Input((13,)),
            norm,
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    return fit(model, x, y, optimizer=SGD(0.01, momentum=0.9), epochs=40)


@scenario("healthy/converged_digits_mlp", DIGITS, "converged")
def healthy_converged() -> Run:
    """Trained to a train loss below 0.01: tiny gradients and tiny steps are expected."""
    x, y = digits()
    model = mlp(64, [128, 64], "relu", 10)
    return fit(model, x, y, optimizer=Adam(3e-3), epochs=40)


@scenario("healthy/softmax_from_logits_digits", DIGITS, "healthy")
def healthy_softmax_from_logits() -> Run:
    """Softmax output with from_logits=True: Keras 3 uses the cached logits, training is fine."""
    x, y = digits()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return fit(mlp(64, [64, 64], "relu", 10), x, y, optimizer=Adam(1e-3), loss=loss, epochs=10)


# --- vanishing_gradients ---


@scenario("vanishing_gradients/sigmoid_digits_mlp10", DIGITS, "chance_accuracy")
def vanishing_sigmoid_digits() -> Run:
    """Ten plain sigmoid layers, SGD: sigmoid' <= 1/4 per layer."""
    x, y = digits()
    return fit(mlp(64, [32] * 10, "sigmoid", 10), x, y, optimizer=SGD(0.05), epochs=5)


@scenario("vanishing_gradients/sigmoid_wine_mlp12", "wine", "chance_accuracy")
def vanishing_sigmoid_wine() -> Run:
    """Twelve plain sigmoid layers, SGD with momentum, on standardized wine."""
    x, y = tabular("wine")
    model = mlp(13, [16] * 12, "sigmoid", 3)
    return fit(model, x, y, optimizer=SGD(0.01, momentum=0.9), epochs=40)


@scenario("vanishing_gradients/sigmoid_breast_cancer_mlp15", "breast_cancer", "chance_accuracy")
def vanishing_sigmoid_breast_cancer() -> Run:
    """Fifteen plain sigmoid layers before a sigmoid head, SGD at 0.1."""
    x, y = tabular("breast_cancer")
    model = mlp(30, [16] * 15, "sigmoid", 1, "sigmoid")
    return fit(model, x, y, optimizer=SGD(0.1), loss="binary_crossentropy", epochs=10)


# --- exploding_gradients ---


@scenario("exploding_gradients/linear_digits_mlp8_adam", DIGITS, "huge_loss")
def exploding_linear_digits() -> Run:
    """Eight linear layers with stddev-1 init: each multiplies the scale by ~8."""
    x, y = digits()
    init = keras.initializers.RandomNormal(stddev=1.0)
    model = mlp(64, [64] * 8, None, 10, None, kernel_initializer=init)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return fit(model, x, y, optimizer=Adam(1e-3), loss=loss, epochs=3)


@scenario("exploding_gradients/relu_diabetes_mlp6_rmsprop", "diabetes", "huge_loss")
def exploding_relu_diabetes() -> Run:
    """Six ReLU layers with stddev-2 init on a regression: outputs ~1e7, MSE ~1e14."""
    x, y = load("diabetes")
    x, y = standardize(x), standardize(y)
    init = keras.initializers.RandomNormal(stddev=2.0)
    model = mlp(10, [64] * 6, "relu", 1, None, kernel_initializer=init)
    return fit(model, x, y, optimizer=RMSprop(1e-3), loss="mse", metrics=["mae"], epochs=5)


@scenario("exploding_gradients/linear_breast_cancer_mlp10", "breast_cancer", "huge_loss")
def exploding_linear_breast_cancer() -> Run:
    """Ten linear layers with stddev-1.5 init before a sigmoid head."""
    x, y = tabular("breast_cancer")
    init = keras.initializers.RandomNormal(stddev=1.5)
    model = mlp(30, [32] * 10, None, 1, "sigmoid", kernel_initializer=init)
    return fit(model, x, y, optimizer=Adam(1e-3), loss="binary_crossentropy", epochs=5)


# --- non_finite ---


@scenario("non_finite/sgd_diverged_digits_0_255", DIGITS, "nan_loss")
def non_finite_diverged() -> Run:
    """0-255 pixels, leaky ReLU, SGD at 0.1: the first steps overshoot and the weights go NaN."""
    x, y = digits(scale=255 / 16)
    model = mlp(64, [64, 64], "leaky_relu", 10, None)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return fit(model, x, y, optimizer=SGD(0.1), loss=loss, epochs=1)


@scenario("non_finite/poisson_loss_negative_target", "diabetes", "nan_loss")
def non_finite_poisson() -> Run:
    """Poisson loss (log of the prediction) on a linear head and a standardized target.

    log(negative) makes the loss NaN, yet d/dx log x = 1/x stays finite: the weights are finite.
    """
    x, y = load("diabetes")
    x, y = standardize(x), standardize(y)
    model = mlp(10, [32], "relu", 1, None)
    return fit(model, x, y, optimizer=Adam(1e-3), loss="poisson", metrics=["mae"], epochs=2)


@scenario("non_finite/adam_epsilon_zero_digits", DIGITS, "nan_loss")
def non_finite_adam_epsilon_zero() -> Run:
    """Adam with epsilon=0: blank pixels give zero gradients, and 0/0 turns weights to NaN."""
    x, y = digits()
    return fit(mlp(64, [64], "relu", 10), x, y, optimizer=Adam(1e-3, epsilon=0.0), epochs=2)


# --- unnormalized_input ---


@scenario(
    "unnormalized_input/sgd_digits_0_255", DIGITS, "far_below_twin", twin="healthy/sgd_digits_mlp"
)
def unnormalized_digits() -> Run:
    """The twin's exact setup fed 0-255 pixels: the job forgot x / 255."""
    return digits_mlp_sgd(scale=255 / 16)


@scenario("unnormalized_input/sgd_wine_raw", "wine", "far_below_twin", twin="healthy/sgd_wine_mlp")
def unnormalized_wine() -> Run:
    """Raw wine features (proline ~1000, hue ~1) with the twin's SGD setup."""
    return tabular_mlp_sgd("wine", raw=True)


@scenario(
    "unnormalized_input/sgd_breast_cancer_raw",
    "breast_cancer",
    "far_below_twin",
    twin="healthy/sgd_breast_cancer_mlp",
)
def unnormalized_breast_cancer() -> Run:
    """Raw breast_cancer features (area ~1000, smoothness ~0.1) with the twin's SGD setup."""
    return tabular_mlp_sgd("breast_cancer", raw=True)


# --- learning_rate_too_high ---


@scenario("learning_rate_too_high/adam_1_digits_mlp", DIGITS, "chance_accuracy")
def lr_high_adam_digits() -> Run:
    """Adam at lr=1.0 on normalized digits."""
    x, y = digits()
    return fit(mlp(64, [64, 64], "relu", 10), x, y, optimizer=Adam(1.0), epochs=5)


@scenario("learning_rate_too_high/sgd_5_wine_mlp", "wine", "chance_accuracy")
def lr_high_sgd_wine() -> Run:
    """The healthy wine setup with SGD at lr=5."""
    return tabular_mlp_sgd("wine", lr=5.0)


@scenario("learning_rate_too_high/sgd_5_breast_cancer_mlp", "breast_cancer", "chance_accuracy")
def lr_high_sgd_breast_cancer() -> Run:
    """The healthy breast_cancer setup with SGD at lr=5."""
    return tabular_mlp_sgd("breast_cancer", lr=5.0)


@scenario("learning_rate_too_high/rmsprop_0.3_digits_cnn", DIGITS, "chance_accuracy")
def lr_high_rmsprop_cnn() -> Run:
    """The healthy digits CNN with RMSprop at 0.3 (300x its default)."""
    x, y = digits(images=True)
    return fit(digits_cnn(), x, y, optimizer=RMSprop(0.3), epochs=5)


# --- learning_rate_too_low ---


@scenario(
    "learning_rate_too_low/sgd_1e-5_digits_mlp",
    DIGITS,
    "far_below_twin",
    twin="healthy/sgd_digits_mlp",
)
def lr_low_digits() -> Run:
    """The twin's exact setup with SGD at 1e-5."""
    return digits_mlp_sgd(lr=1e-5)


@scenario(
    "learning_rate_too_low/sgd_1e-5_wine_mlp", "wine", "far_below_twin", twin="healthy/sgd_wine_mlp"
)
def lr_low_wine() -> Run:
    """The twin's exact setup with SGD at 1e-5."""
    return tabular_mlp_sgd("wine", lr=1e-5)


@scenario(
    "learning_rate_too_low/adam_1e-7_iris_mlp",
    "iris",
    "far_below_twin",
    twin="healthy/adam_iris_mlp",
)
def lr_low_iris() -> Run:
    """The twin's exact setup with Adam at 1e-7."""
    return iris_mlp(Adam(1e-7))


# --- dead_relu ---

DEAD_BIAS = keras.initializers.Constant(-5.0)


@scenario("dead_relu/negative_bias_digits_mlp", DIGITS, "chance_accuracy")
def dead_relu_digits() -> Run:
    """Hidden ReLU biases initialised at -5: no unit ever fires, Adam at an ordinary 1e-3."""
    x, y = digits()
    model = mlp(64, [64, 64], "relu", 10, bias_initializer=DEAD_BIAS)
    return fit(model, x, y, optimizer=Adam(1e-3), epochs=5)


@scenario("dead_relu/negative_bias_wine_mlp", "wine", "chance_accuracy")
def dead_relu_wine() -> Run:
    """The healthy wine setup with hidden ReLU biases initialised at -5."""
    return tabular_mlp_sgd("wine", bias_initializer=DEAD_BIAS)


@scenario("dead_relu/negative_bias_digits_cnn", DIGITS, "chance_accuracy")
def dead_relu_cnn() -> Run:
    """Conv2D ReLU biases initialised at -5 on [0, 1] pixels."""
    x, y = digits(images=True)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", bias_initializer=DEAD_BIAS),
            keras.layers.Conv2D(32, 3, activation="relu", bias_initializer=DEAD_BIAS),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    return fit(model, x, y, optimizer=Adam(1e-3), epochs=5)


# --- saturated_activation ---


@scenario(
    "saturated_activation/tanh_large_init_digits",
    DIGITS,
    "far_below_twin",
    twin="healthy/tanh_digits_mlp4",
)
def saturated_tanh_digits() -> Run:
    """The tanh twin with kernels drawn at stddev 8: pre-activations ~50, tanh' ~ 0."""
    init = keras.initializers.RandomNormal(stddev=8.0)
    return digits_mlp_sgd(depth=4, activation="tanh", kernel_initializer=init)


@scenario("saturated_activation/sigmoid_bias_breast_cancer", "breast_cancer", "chance_accuracy")
def saturated_sigmoid_bias() -> Run:
    """Hidden sigmoid biases initialised at +10: every unit outputs ~1 for every input."""
    return tabular_mlp_sgd(
        "breast_cancer",
        activation="sigmoid",
        bias_initializer=keras.initializers.Constant(10.0),
    )


@scenario("saturated_activation/sigmoid_bias_iris", "iris", "chance_accuracy")
def saturated_sigmoid_bias_iris() -> Run:
    """Hidden sigmoid biases initialised at -10: every unit outputs ~0, Adam at 1e-2."""
    x, y = tabular("iris")
    model = mlp(4, [16, 16], "sigmoid", 3, bias_initializer=keras.initializers.Constant(-10.0))
    return fit(model, x, y, optimizer=Adam(1e-2), epochs=60)


# --- loss_mismatch ---


@scenario("loss_mismatch/softmax_one_unit_bce_breast_cancer", "breast_cancer", "chance_accuracy")
def mismatch_softmax_one_unit() -> Run:
    """Dense(1, softmax) + binary crossentropy: the output is always 1.0, the loss still falls."""
    x, y = tabular("breast_cancer")
    model = mlp(30, [32], "relu", 1, "softmax")
    return fit(model, x, y, optimizer=Adam(1e-3), loss="binary_crossentropy", epochs=10)


@scenario(
    "loss_mismatch/double_softmax_digits",
    DIGITS,
    "far_below_twin",
    twin="healthy/sgd_digits_mlp",
)
def mismatch_double_softmax() -> Run:
    """Dense(10, softmax) then Activation('softmax'): the loss sees a nearly uniform output."""
    head = [keras.layers.Dense(10, activation="softmax"), keras.layers.Activation("softmax")]
    return digits_mlp_sgd(head=head)


@scenario(
    "loss_mismatch/logits_without_from_logits_digits",
    DIGITS,
    "far_below_twin",
    twin="healthy/sgd_digits_mlp",
)
def mismatch_logits() -> Run:
    """Linear output with sparse CE and from_logits=False: negative outputs are clipped away."""
    return digits_mlp_sgd(head=[keras.layers.Dense(10)])


@scenario(
    "loss_mismatch/mse_on_softmax_digits",
    DIGITS,
    "far_below_twin",
    twin="healthy/sgd_digits_mlp",
)
def mismatch_mse_on_softmax() -> Run:
    """The twin's model and optimizer, but MSE on one-hot labels: softmax' shrinks the gradient."""
    x, y = digits()
    model = mlp(64, [64, 64], "relu", 10)
    optimizer = SGD(0.01, momentum=0.9)
    return fit(model, x, one_hot(y, 10), optimizer=optimizer, loss="mse", epochs=10)


# --- prediction_collapse ---


def integer_class_weights(y: np.ndarray) -> dict[int, int]:
    """'Inverse frequency' weights with integer division: 1 for the rarest class, 0 for the rest."""
    counts = np.bincount(y)
    return {c: int(counts.min() // n) for c, n in enumerate(counts)}


@scenario("prediction_collapse/class_weight_int_division_digits", DIGITS, "one_class")
def collapse_class_weight_digits() -> Run:
    """Class weights computed with // : only digit 8 (the rarest) counts, so the model says 8."""
    x, y = digits()
    model = mlp(64, [64, 64], "relu", 10)
    return fit(model, x, y, optimizer=Adam(1e-3), epochs=5, class_weight=integer_class_weights(y))


@scenario("prediction_collapse/class_weight_int_division_wine", "wine", "one_class")
def collapse_class_weight_wine() -> Run:
    """The healthy wine setup with class weights computed with // (only class 2 counts)."""
    x, y = tabular("wine")
    model = mlp(13, [32, 32], "relu", 3)
    weights = integer_class_weights(y)
    return fit(model, x, y, optimizer=SGD(0.01, momentum=0.9), epochs=40, class_weight=weights)


@scenario("prediction_collapse/l2_1.0_digits", DIGITS, "one_class")
def collapse_l2_digits() -> Run:
    """L2 factor 1.0 instead of 1e-4 on the hidden kernels: they shrink to 0, only biases remain."""
    x, y = digits()
    model = mlp(64, [64, 64], "relu", 10, kernel_regularizer=keras.regularizers.L2(1.0))
    return fit(model, x, y, optimizer=Adam(1e-3), epochs=10)


def _main() -> None:
    """Train the named scenarios (default: all) and print what each run ended at."""
    names = sys.argv[1:] or [s.name for s in SCENARIOS]
    total = 0.0
    for name in names:
        s = by_name(name)
        start = time.perf_counter()
        run = train_cached(name)
        seconds = time.perf_counter() - start
        total += seconds
        acc = run.history.get("accuracy", [float("nan")])[-1]
        line = f"{name:58s} {s.dataset:13s} acc={acc:.3f} loss={run.history['loss'][-1]:<10.4g}"
        if s.twin:
            line += f" twin_acc={train_cached(s.twin).history['accuracy'][-1]:.3f}"
        print(f"{line:110s} {seconds:5.1f}s", flush=True)
    print(f"total training time {total:.1f}s")


if __name__ == "__main__":
    _main()
