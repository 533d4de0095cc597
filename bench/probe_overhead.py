"""Probe cost as a ratio to a bare compiled loss+gradient step on the same model and batch.

Targets: full probe <= 1.5x, gradient-norms-only <= 1.05x. Anchor:
Cockpit on GPU, 1.51x for its economy set and 1.02x for GradNorm alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.timing import side_by_side
from gradhealth_server.commands.examples import digits, digits_cnn
from gradhealth_server.engine.device import configure_device

TARGETS = {"full": 1.5, "norms": 1.05}


def _models():
    import keras

    from tests.models import dense_digits

    def small_cnn():
        return digits_cnn("small_cnn")

    def mlp_1m():
        return dense_digits("mlp_1m", (1024, "relu"), (896, "relu"))

    def resnet_10m():
        """Residual conv blocks with BatchNormalization (batch-coupled: one micro-batch)
        and a wide dense head: 9.7M parameters."""
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(inputs)
        for _ in range(4):
            r = keras.layers.Conv2D(64, 3, padding="same", use_bias=False)(h)
            r = keras.layers.BatchNormalization()(r)
            r = keras.layers.Activation("relu")(r)
            r = keras.layers.Conv2D(64, 3, padding="same", use_bias=False)(r)
            r = keras.layers.BatchNormalization()(r)
            h = keras.layers.Activation("relu")(keras.layers.Add()([h, r]))
        h = keras.layers.Flatten()(h)
        h = keras.layers.Dense(2048, activation="relu")(h)
        h = keras.layers.Dense(512, activation="relu")(h)
        return keras.Model(inputs, keras.layers.Dense(10)(h), name="resnet_10m")

    logits = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # name: (builder, loss, batch sizes, how many step calls one timing takes)
    return {
        "small_cnn": (small_cnn, "sparse_categorical_crossentropy", (256, 1024), 20),
        "mlp_1m": (mlp_1m, logits, (256, 1024), 20),
        "resnet_10m": (resnet_10m, logits, (256,), 3),
    }


def trained(build, loss, x: np.ndarray, y: np.ndarray):
    """The model built (seed 0), compiled with Adam and fit one epoch on digits, and
    its structure: a checkpoint mid-training, as the service sees them."""
    import keras

    from gradhealth_server.engine.structure import read_structure

    keras.utils.set_random_seed(0)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model, read_structure(model)


def bare_step(model, xla: bool = True):
    """What the probe is compared against: forward, loss and gradient, compiled."""
    import tensorflow as tf

    @tf.function(jit_compile=xla)
    def step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        return loss, tape.gradient(loss, model.trainable_variables)

    return step


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Every model at each batch size with XLA, and at the first size without it.
    quick (CI): the small CNN and the MLP only, fewer repetitions; the ResNet's XLA
    compiles and second-long steps took most of CI's bench time."""
    configure_device()

    from gradhealth_server.engine.probe import Probe, ProbeOptions

    x_all, y_all = digits()
    results = []
    for name, (build, loss, sizes, calls) in _models().items():
        if quick and name == "resnet_10m":
            continue
        model, structure = trained(build, loss, x_all, y_all)
        input_name = structure.facts.input_names[0]
        cases = [(n, True) for n in (sizes[:1] if quick else sizes)] + [(sizes[0], False)]
        for n, xla in cases:
            idx = np.arange(n) % len(y_all)
            x, y = x_all[idx], y_all[idx]
            batch = {input_name: x}
            step = bare_step(model, xla)
            probes = {
                mode: Probe(model, structure, batch, y, ProbeOptions(mode=mode, jit_compile=xla))
                for mode in ("full", "norms")
            }
            ratios = side_by_side(
                lambda step=step, x=x, y=y: step(x, y)[0].numpy(),
                {mode: (lambda p=p, b=batch, y=y: p.run(b, y)) for mode, p in probes.items()},
                repetitions=2 if quick else 7,
                calls=max(1, calls // 4) if quick else calls,
            )
            for r in ratios:
                traces = probes[r.name].trace_count
                results.append(
                    {
                        "bench": "probe_overhead",
                        "model": name,
                        "parameters": int(model.count_params()),
                        "rows": n,
                        "mode": r.name,
                        "xla": probes[r.name].xla,
                        "ratio": round(r.median, 3),
                        "low": round(r.low, 3),
                        "high": round(r.high, 3),
                        "probe_ms": round(r.seconds * 1e3, 2),
                        "bare_ms": round(r.seconds / r.median * 1e3, 2),
                        # Warm calls reuse the one trace: no retrace after the first.
                        "traces": traces,
                        "target": TARGETS[r.name],
                        "meets_target": r.median <= TARGETS[r.name],
                    }
                )
    return results
