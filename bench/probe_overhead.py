"""Probe cost as a ratio to a bare compiled loss+gradient step on the same model and batch.

Targets (DESIGN.md): full probe <= 1.5x, gradient-norms-only <= 1.05x. Anchor:
Cockpit on GPU, 1.51x for its economy set and 1.02x for GradNorm alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.timing import side_by_side
from gradhealth_server.device import configure_device
from gradhealth_server.examples import digits, digits_cnn

TARGETS = {"full": 1.5, "norms": 1.05}


def _models():
    import keras

    def small_cnn():
        return digits_cnn("small_cnn")

    def mlp_1m():
        return keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(1024, activation="relu"),
                keras.layers.Dense(896, activation="relu"),
                keras.layers.Dense(10),
            ],
            name="mlp_1m",
        )

    return {
        "small_cnn": (small_cnn, "sparse_categorical_crossentropy"),
        "mlp_1m": (mlp_1m, keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
    }


def bare_step(model):
    """What the probe is compared against: forward, loss and gradient, compiled."""
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        return loss, tape.gradient(loss, model.trainable_variables)

    return step


def run(quick: bool = False, rows: tuple[int, ...] = (256, 1024)) -> list[dict[str, Any]]:
    configure_device()
    import keras

    from gradhealth_server.engine.probe import Probe, ProbeOptions
    from gradhealth_server.engine.structure import read_structure

    x_all, y_all = digits()
    results = []
    for name, (build, loss) in _models().items():
        keras.utils.set_random_seed(0)
        model = build()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        model.fit(x_all, y_all, epochs=1, batch_size=64, verbose=0)
        structure = read_structure(model)
        input_name = structure.facts.input_names[0]
        for n in rows if not quick else rows[:1]:
            idx = np.arange(n) % len(y_all)
            x, y = x_all[idx], y_all[idx]
            batch = {input_name: x}
            step = bare_step(model)
            probes = {
                mode: Probe(model, structure, batch, y, ProbeOptions(mode=mode))
                for mode in ("full", "norms")
            }
            ratios = side_by_side(
                lambda step=step, x=x, y=y: step(x, y)[0].numpy(),
                {mode: (lambda p=p, b=batch, y=y: p.run(b, y)) for mode, p in probes.items()},
                repetitions=3 if quick else 9,
                calls=5 if quick else 20,
            )
            for r in ratios:
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
                        "target": TARGETS[r.name],
                        "meets_target": r.median <= TARGETS[r.name],
                    }
                )
    return results
