"""Train one corpus run for real and measure what its label will be checked against.

`train(spec)` builds the data and the model, applies the spec's fault, fits, and returns
the checkpoint, the sample batch exactly as the job feeds it, and `measures`: the final
quality on the whole training set (accuracy against the clean classes, hamming accuracy,
or R^2), the loss curve's ends, finiteness, and the mechanisms (dead / saturated units,
first-to-last gradient ratio, the share of the batch predicted as one class).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bench.corpus import data as D
from bench.corpus.models import build
from bench.corpus.specs import CLASSIFICATION_HEAD, Spec

BATCH_ROWS = 256


@dataclass
class Run:
    model: keras.Model
    x: np.ndarray | dict[str, np.ndarray]  # the sample batch as fed
    y: np.ndarray
    measures: dict[str, Any]


def run_seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % (2**31)


def optimizer(spec: Spec):
    o, lr = spec.optimizer, spec.lr
    if spec.fault == "adam epsilon 0":
        return keras.optimizers.Adam(lr, epsilon=0.0)
    return {
        "sgd": lambda: keras.optimizers.SGD(lr, momentum=0.9),
        "nesterov": lambda: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
        "adam": lambda: keras.optimizers.Adam(lr),
        "adamw": lambda: keras.optimizers.AdamW(lr),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr),
        "adagrad": lambda: keras.optimizers.Adagrad(lr),
        "nadam": lambda: keras.optimizers.Nadam(lr),
        "lion": lambda: keras.optimizers.Lion(lr),
        "adamax": lambda: keras.optimizers.Adamax(lr),
    }[o]()


def load_data(spec: Spec) -> D.Data:
    kw = dict(spec.data_kw)
    if "pad" in kw:
        return D.digits_padded_seq(int(kw["pad"]))
    if spec.fault == "bce_on_continuous":
        kw["raw_target"] = True
    return D.LOADERS[spec.dataset](**kw)


def setup(spec: Spec, d: D.Data):
    """(head, units, loss, y as fed, fit kwargs) for the task and the spec's fault."""
    f, k = spec.fault, D.n_classes(d)
    y, fit_kw = d.y, {}
    if d.task == "regression":
        head, units = "linear", (d.y.shape[1] if d.y.ndim == 2 else 1)
        loss: Any = "mse"
    else:
        head = CLASSIFICATION_HEAD[d.task]
        units = k if d.task == "multiclass" else (1 if d.task == "binary" else d.y.shape[1])
        loss = (
            "sparse_categorical_crossentropy" if d.task == "multiclass" else "binary_crossentropy"
        )
    if f == "bce_on_ids":
        head, units, loss, y = "sigmoid", 1, "binary_crossentropy", d.classes.astype("float32")
    elif f == "sparse_ce_float":
        y = d.classes.astype("float32") / 255
    elif f in ("bce_on_continuous", "sigmoid_regression"):
        head = "sigmoid"
        loss = "binary_crossentropy" if f == "bce_on_continuous" else "mse"
    elif f == "softmax_bce":
        head, loss, y = "softmax", "binary_crossentropy", D.one_hot(d.classes, k)
    elif f in ("softmax_multilabel", "softmax_one_unit"):
        head = "softmax"
    elif f == "double_softmax":
        head = "double_softmax"
    elif f == "logits_no_from_logits":
        head = "linear"
    elif f == "mse_on_softmax":
        loss, y = "mse", D.one_hot(d.classes, k)
    elif f == "from_logits_softmax":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    elif f == "label_smoothing":
        loss, y = keras.losses.CategoricalCrossentropy(label_smoothing=0.1), D.one_hot(d.y, k)
    elif f == "poisson":
        loss = "poisson"
    elif f == "diverge":
        head, loss = "linear", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    elif f.startswith("noise"):
        rng = np.random.default_rng(run_seed(spec.name))
        y = np.where(rng.random(len(y)) < float(f[5:]), 0, y).astype(y.dtype)
    elif f == "class_weight_int":
        counts = np.bincount(d.classes)
        fit_kw["class_weight"] = {c: int(counts.min() // n) for c, n in enumerate(counts)}
    elif f == "class_weight_balanced":
        counts = np.bincount(d.classes)
        fit_kw["class_weight"] = {c: len(d.classes) / (2 * n) for c, n in enumerate(counts)}
    return head, units, loss, y, fit_kw


def rows(x, idx):
    return {k: v[idx] for k, v in x.items()} if isinstance(x, dict) else x[idx]


def train(spec: Spec) -> Run:
    # Fresh layer names (dense, dense_1, ...) whatever ran before: a run's checkpoint is the
    # same in any process, and runs of one architecture share the service's model cache.
    keras.backend.clear_session()
    keras.utils.set_random_seed(run_seed(spec.name))
    d = load_data(spec)
    head, units, loss, y, fit_kw = setup(spec, d)
    knobs = spec.knobs
    if spec.fault == "diverge":
        from dataclasses import replace

        knobs = replace(knobs, act="leaky_relu")
    model = build(spec.family, d.x, knobs, units, head)
    metrics = ["accuracy"] if d.task != "regression" else ["mae"]
    # No XLA for the train step: compiling it costs more than these small runs train.
    model.compile(optimizer=optimizer(spec), loss=loss, metrics=metrics, jit_compile=False)
    if spec.steps:
        losses = []
        for step in range(spec.steps):
            idx = slice(spec.batch_size * step, spec.batch_size * (step + 1))
            logs = model.train_on_batch(rows(d.x, idx), y[idx], return_dict=True)
            losses.append(float(logs["loss"]))
    else:
        h = model.fit(d.x, y, epochs=spec.epochs, batch_size=spec.batch_size, verbose=0, **fit_kw)
        losses = [float(v) for v in h.history["loss"]]
    idx = np.zeros(BATCH_ROWS, int) if spec.trap == "identical_rows" else slice(0, BATCH_ROWS)
    x_batch, y_batch = rows(d.x, idx), y[idx]
    measures = measure(model, d, x_batch, y_batch, losses)
    if d.classes is not None:
        measures["label_top_share"] = top_share(d.classes[idx])
    return Run(model, x_batch, y_batch, measures)


def predict(model, x) -> np.ndarray:
    """The model's output in inference mode, called eagerly (no predict function to trace)."""
    n = len(next(iter(x.values())) if isinstance(x, dict) else x)
    parts = [
        np.asarray(model(rows(x, slice(i, i + 512)), training=False)) for i in range(0, n, 512)
    ]
    return np.concatenate(parts)


def top_share(classes: np.ndarray) -> float:
    return Counter(np.asarray(classes).tolist()).most_common(1)[0][1] / len(classes)


def predicted_classes(p: np.ndarray) -> np.ndarray:
    return (p[:, 0] > 0.5).astype(int) if p.shape[-1] == 1 else p.argmax(-1)


def quality(model, d: D.Data, y_fed: np.ndarray) -> float:
    """Accuracy on the clean classes, hamming accuracy (multi-label), or R^2 on the target."""
    p = np.asarray(predict(model, d.x), dtype="float64")
    if not np.all(np.isfinite(p)):
        return float("nan")
    if d.task in ("multiclass", "binary"):
        return float((predicted_classes(p) == d.classes).mean())
    if d.task == "multilabel":
        return float(((p > 0.5) == (d.y > 0.5)).mean())
    t = np.asarray(y_fed, "float64").reshape(p.shape)
    return float(1 - ((t - p) ** 2).sum() / ((t - t.mean(0)) ** 2).sum())


def measure(model, d: D.Data, xb, yb, losses: list[float]) -> dict[str, Any]:
    finite = bool(np.isfinite(losses[-1])) and all(
        np.isfinite(w).all() for w in model.get_weights()
    )
    m: dict[str, Any] = {
        "task": d.task,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "finite": finite,
        "quality": quality(model, d, d.y),
        "input_max": max(float(np.abs(v).max()) for v in _arrays(xb)),
    }
    if not finite:
        return m
    p = predict(model, xb)
    if d.task in ("multiclass", "binary"):
        m["pred_top_share"] = top_share(predicted_classes(p))
    try:
        hidden = _hidden(model, xb)
        m["dead_max"], m["sat_max"] = _dead_max(hidden), _sat_max(hidden)
    except Exception as exc:  # a mechanism we cannot read stays unknown
        m["dead_max"] = m["sat_max"] = None
        m["hidden_error"] = str(exc)[:200]
    try:
        m["grad_ratio"] = _grad_ratio(model, xb, yb)
    except Exception as exc:
        m["grad_ratio"] = None
        m["grad_ratio_error"] = str(exc)[:200]
    return m


def _arrays(x) -> list[np.ndarray]:
    return list(x.values()) if isinstance(x, dict) else [x]


def _hidden(model, xb):
    """(activation name, rows x units) of every hidden Dense/Conv/Activation layer."""
    names = ("relu", "sigmoid", "tanh", "relu6")
    layers = []
    for layer in model.layers[:-1]:
        act = getattr(layer, "activation", None)
        if isinstance(layer, keras.layers.ReLU):
            layers.append(("relu", layer))
        elif act is not None and not hasattr(layer, "cell") and act.__name__ in names:
            layers.append((act.__name__, layer))
    if not layers:
        return []
    probe = keras.Model(model.inputs, [layer.output for _, layer in layers])
    outs = probe(xb)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    return [(a, np.asarray(o).reshape(len(o), -1)) for (a, _), o in zip(layers, outs)]


def _dead_max(hidden) -> float:
    vals = [float((a.max(0) <= 0).mean()) for f, a in hidden if f.startswith("relu")]
    return max(vals, default=0.0)


def _sat_max(hidden) -> float:
    out = [0.0]
    for f, a in hidden:
        if f == "tanh":
            out.append(float((np.abs(a) > 0.99).mean()))
        elif f == "sigmoid":
            out.append(float(((a < 0.01) | (a > 0.99)).mean()))
    return max(out)


def _grad_ratio(model, xb, yb):
    """First kernel's gradient norm over the last kernel's."""
    kernels = [v for v in model.trainable_variables if v.path.endswith("/kernel")]
    xs = xb if isinstance(xb, dict) else tf.convert_to_tensor(xb)
    with tf.GradientTape() as tape:
        y_pred = model(xs, training=True)
        value = model.compute_loss(x=xs, y=yb, y_pred=y_pred, training=True)
    grads = tape.gradient(value, kernels)
    first, last = float(tf.norm(grads[0])), float(tf.norm(grads[-1]))
    return first / last if last > 0 else None
