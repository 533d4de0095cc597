"""The cold path: the first verdict on a new architecture against its physical floor.

Every new training job, worker and replica pays the first diagnosis of an
architecture: load, trace, compile, probe, trials, rules. Its floor is what any
TensorFlow program pays to take its first compiled train step on the same model
and batch: trace + compile + one step (forward, loss, gradient, the optimizer's
apply) of a bare `tf.function`, with the same XLA setting as the probe's default
(`engine/device.xla_by_default`: on a GPU only).

Each side runs in a fresh Python process (TensorFlow imported before the clock
starts), so nothing is cached between them; the two alternate, repetition by
repetition, and the table reports the ratio of medians. Peak RSS is the child's
own (VmHWM). `cold_ratio` counts the checkpoint load in the verdict (a
user waits for it); `cold_ratio_without_load` does not (the bare side loads the
model before its clock starts).

    python -m bench.cold_path [--quick] [--models small_cnn,resnet50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tests.service import peak_rss_mb

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TARGET = 3.0  # issue 19: the first verdict within 3x a bare first train step
ROWS = 64  # the sample batch; compile time hardly depends on it
QUICK = ("small_cnn",)


def _builders() -> dict[str, tuple[Any, tuple[int, ...], bool]]:
    """name: (builder, input shape, whether the model expects 0-255 pixels)."""
    import keras

    from gradhealth_server.commands.examples import digits_cnn

    def app(cls, **kw):
        return lambda: cls(input_shape=(64, 64, 3), weights=None, classes=10, **kw)

    return {
        "small_cnn": (lambda: digits_cnn("small_cnn"), (8, 8, 1), False),
        "mobilenet_v2": (app(keras.applications.MobileNetV2), (64, 64, 3), False),
        # Its own Rescaling/Normalization layers expect 0-255 input.
        "efficientnet_b0": (app(keras.applications.EfficientNetB0), (64, 64, 3), True),
        "resnet50": (app(keras.applications.ResNet50), (64, 64, 3), False),
    }


def _data(shape: tuple[int, ...], pixels: bool, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable synthetic images: the class is which tenth of the image is brightest."""
    rng = np.random.default_rng(0)
    x = rng.random((rows, *shape), dtype=np.float32)
    y = rng.integers(0, 10, rows).astype("int32")
    band = max(1, shape[0] // 10)
    for i, label in enumerate(y):
        x[i, label * band : (label + 1) * band] += 0.5
    return (x * 255.0 if pixels else x), y


def prepare(name: str, directory: Path) -> dict[str, Any]:
    """Train the model one short epoch and save its checkpoint and a sample batch."""
    import keras

    build, shape, pixels = _builders()[name]
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    x, y = _data(shape, pixels, 4 * ROWS)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    checkpoint, batch = directory / f"{name}.keras", directory / f"{name}.npz"
    model.save(checkpoint)
    np.savez(batch, x=x[:ROWS], y=y[:ROWS])
    return {
        "checkpoint": str(checkpoint),
        "batch": str(batch),
        "parameters": int(model.count_params()),
        "checkpoint_mb": round(checkpoint.stat().st_size / 1e6, 1),
    }


# -- the two sides, each in its own process ---------------------------------------


def _verdict_side(checkpoint: str, batch: str) -> dict[str, Any]:
    import time

    from gradhealth_server.diagnosis import Diagnoser

    start = time.perf_counter()
    diagnosis = Diagnoser().diagnose(checkpoint, batch)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "phases": {k: round(v, 3) for k, v in diagnosis.phases.items()},
        "status": str(diagnosis.verdict.status),
        "primary": str(diagnosis.verdict.primary_cause or "none"),
        "xla": diagnosis.measurements.xla,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def _bare_side(checkpoint: str, batch: str) -> dict[str, Any]:
    import time

    import keras
    import tensorflow as tf

    from gradhealth_server.engine.device import xla_by_default

    data = np.load(batch)
    x, y = tf.constant(data["x"]), tf.constant(data["y"])
    start = time.perf_counter()
    model = keras.models.load_model(checkpoint)
    load = time.perf_counter() - start
    xla = xla_by_default()

    @tf.function(jit_compile=xla)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply(grads, model.trainable_variables)
        return loss

    start = time.perf_counter()
    float(train_step(x, y))
    first = time.perf_counter() - start
    start = time.perf_counter()
    float(train_step(x, y))
    warm = time.perf_counter() - start
    return {
        "seconds": first,
        "load_s": load,
        "warm_step_s": warm,
        "xla": xla,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def _child(side: str, checkpoint: str, batch: str) -> dict[str, Any]:
    """One side in a fresh interpreter: nothing compiled or cached before it."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.cold_path", "--side", side, checkpoint, batch],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{side} side failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False, models: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Each model's cold first verdict against its bare first train step."""
    names = models or (QUICK if quick else tuple(_builders()))
    repetitions = 1 if quick else 2
    results = []
    with tempfile.TemporaryDirectory(prefix="gradhealth-cold-") as tmp:
        for name in names:
            saved = prepare(name, Path(tmp))
            verdicts, bares = [], []
            for _ in range(repetitions):  # alternating: drift hits both sides alike
                verdicts.append(_child("verdict", saved["checkpoint"], saved["batch"]))
                bares.append(_child("bare", saved["checkpoint"], saved["batch"]))
            cold = statistics.median(v["seconds"] for v in verdicts)
            bare = statistics.median(b["seconds"] for b in bares)
            load = statistics.median(v["phases"].get("load", 0.0) for v in verdicts)
            last = verdicts[-1]
            results.append(
                {
                    "bench": "cold_path",
                    "model": name,
                    "parameters": saved["parameters"],
                    "checkpoint_mb": saved["checkpoint_mb"],
                    "rows": ROWS,
                    "xla": last["xla"],
                    "repetitions": repetitions,
                    "cold_first_verdict_s": round(cold, 2),
                    "bare_first_step_s": round(bare, 2),
                    "cold_ratio": round(cold / bare, 2),
                    "cold_ratio_without_load": round((cold - load) / bare, 2),
                    "phases": last["phases"],
                    "bare_load_s": round(statistics.median(b["load_s"] for b in bares), 2),
                    "bare_warm_step_s": round(bares[-1]["warm_step_s"], 4),
                    "peak_rss_mb": max(v["peak_rss_mb"] for v in verdicts),
                    "bare_peak_rss_mb": max(b["peak_rss_mb"] for b in bares),
                    "status": last["status"],
                    "primary": last["primary"],
                    "target": TARGET,
                    "meets_target": cold / bare <= TARGET,
                }
            )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_path")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", help="comma-separated: " + ", ".join(_builders()))
    parser.add_argument("--side", choices=("verdict", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side = _verdict_side if args.side == "verdict" else _bare_side
        print(json.dumps(side(*args.paths)))
        return 0
    models = tuple(args.models.split(",")) if args.models else None
    print(json.dumps(run(args.quick, models), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
