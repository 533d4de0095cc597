"""Checkpoints trained under mixed_float16: the LossScaleOptimizer and its state are
restored, the probe runs under the checkpoint's policy without leaking it, and a
state that cannot be restored is reported instead of judged on zero moments."""

from __future__ import annotations

import io
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradhealth_server.diagnosis import Diagnoser
from gradhealth_server.intake.checkpoint import dtype_policy_scope
from tests import models

ROWS = 128


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def train(path: Path, dtype_policy: str, lr: float, epochs: int) -> tuple[Path, int]:
    """A digits MLP (float32 head, as Keras advises under mixed precision), saved."""
    x, y = models.digits()
    x = x.reshape(len(x), -1)
    with dtype_policy_scope(dtype_policy):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(10, activation="softmax", dtype="float32"),
            ]
        )
        model.compile(
            keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        model.fit(x[:512], y[:512], epochs=epochs, batch_size=64, verbose=0)
        model.save(path)
        return path, int(model.optimizer.iterations.numpy())


@pytest.fixture(scope="module")
def flat_digits() -> bytes:
    x, y = models.digits()
    return npz(x=x[:ROWS].reshape(ROWS, -1), y=y[:ROWS])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, int]:
    """A healthy run: Adam at 1e-3, 3 epochs of 8 steps, under mixed_float16."""
    return train(tmp_path_factory.mktemp("mixed") / "mixed.keras", "mixed_float16", 1e-3, 3)


def test_mixed_checkpoint_is_probed_with_its_own_optimizer_state(tmp_path, flat_digits, mixed):
    path, steps = mixed
    diagnoser = Diagnoser()
    d = diagnoser.diagnose(path, flat_digits)
    entry = diagnoser.cache.get(d.fingerprint)
    assert entry is not None and entry.dtype_policy == "mixed_float16"
    assert type(entry.model.optimizer).__name__ == "LossScaleOptimizer"
    assert entry.optimizer_state_lost is None
    m = d.measurements
    assert steps == 24 and m.optimizer is not None and m.optimizer.iterations == steps
    assert m.optimizer.loss_scale is not None and m.optimizer.loss_scale > 1
    assert m.static.optimizer == "Adam"
    assert "optimizer_state" not in m.unavailable
    # The policy was the job's, not the worker's: the next checkpoint starts clean.
    assert keras.config.dtype_policy().name == "float32"
    assert not {str(f.cause) for f in d.verdict.findings} & {"learning_rate_too_low"}
    plain, _ = train(tmp_path / "plain.keras", "float32", 1e-3, epochs=1)
    p = diagnoser.diagnose(plain, flat_digits)
    plain_entry = diagnoser.cache.get(p.fingerprint)
    assert plain_entry is not None and plain_entry.dtype_policy == "float32"
    assert plain_entry.model.layers[0].compute_dtype == "float32"
    assert p.measurements.optimizer is not None and p.measurements.optimizer.loss_scale is None
    # A cache hit (weights-only reload) keeps the state too.
    again = diagnoser.diagnose(path, flat_digits)
    assert again.cache_hit and again.measurements.optimizer.iterations == steps
    assert keras.config.dtype_policy().name == "float32"


def test_float32_and_mixed_runs_get_the_same_primary_cause(tmp_path, flat_digits):
    """The same collapsed run (Adam at 1.0) in float32 and in mixed_float16 (whose
    LossScaleOptimizer skipped the steps that overflowed float16) gets one cause."""
    causes = []
    for dtype_policy in ("float32", "mixed_float16"):
        path, _ = train(tmp_path / f"{dtype_policy}.keras", dtype_policy, 1.0, epochs=5)
        d = Diagnoser().diagnose(path, flat_digits)
        causes.append(d.verdict.primary_cause)
    assert [str(c) for c in causes] == ["learning_rate_too_high"] * 2


def test_optimizer_state_that_cannot_be_restored_is_unavailable(flat_digits, mixed, monkeypatch):
    """Loaded as float32 (as gradhealth did before), Keras builds a plain Adam and
    skips the LossScaleOptimizer's variables: the verdict says so, and no rule
    judges the step of fresh moments."""
    path, _ = mixed
    from gradhealth_server.intake import checkpoint

    monkeypatch.setattr(checkpoint, "checkpoint_policy", lambda config: "float32")
    d = Diagnoser().diagnose(path, flat_digits)
    m = d.measurements
    assert {"optimizer_state", "optimizer_step", "lr_probe"} <= set(m.unavailable)
    assert m.optimizer is None and m.lr_trial is None
    assert all(layer.update_ratio is None for layer in m.layers)
    causes = {str(f.cause) for f in d.verdict.findings}
    assert not causes & {"learning_rate_too_high", "learning_rate_too_low"}


def test_a_worker_restores_the_state_and_keeps_its_policy_to_the_job(server, mixed, tmp_path):
    """Through the real server: the worker probes the mixed checkpoint at its own
    step count, then a float32 checkpoint in the same worker gets the embedded verdict."""
    from gradhealth.client import GradientHealthClient
    from tests.service import TOKEN

    path, steps = mixed
    x, y = models.digits()
    batch = tmp_path / "batch.npz"
    np.savez(batch, x=x[:ROWS].reshape(ROWS, -1), y=y[:ROWS])
    plain, _ = train(tmp_path / "plain.keras", "float32", 1e-3, epochs=1)
    with GradientHealthClient(server.target, token=TOKEN, timeout=300) as client:
        verdict = client.diagnose(path, batch=batch, run_id="mixed", step=steps)
        after = client.diagnose(plain, batch=batch, run_id="after-mixed", step=8)
    optimizer = verdict.measurements["optimizer"]
    assert optimizer["iterations"] == steps and optimizer["loss_scale"] > 1
    assert "optimizer_state" not in verdict.measurements["unavailable"]
    embedded = Diagnoser().diagnose(plain, batch)
    assert after.measurements["loss"] == pytest.approx(embedded.measurements.loss, rel=1e-5)


def test_gradients_below_float16s_range_survive_as_fit_scales_them(tmp_path, monkeypatch):
    """A mixed_float16 regression fitted to within 1e-6: the float16 layers' gradients
    are about 1e-9, below float16's smallest value. fit() sees them through the loss
    scale, and so must the probe; differentiated unscaled they are all zero."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 16)).astype("float32")
    with dtype_policy_scope("mixed_float16"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((16,)),
                keras.layers.Dense(32, activation="tanh"),
                keras.layers.Dense(32, activation="tanh"),
                keras.layers.Dense(1, dtype="float32"),
            ]
        )
        model.compile(keras.optimizers.Adam(1e-3), "mse")
        model.fit(x, model.predict(x, verbose=0), epochs=1, batch_size=ROWS, verbose=0)
        y = model.predict(x, verbose=0) + 1e-6
        model.save(tmp_path / "mixed.keras")
    batch = npz(x=x, y=y)

    def hidden_gradients() -> list[tuple[float, float]]:
        layers = Diagnoser().diagnose(tmp_path / "mixed.keras", batch).measurements.layers
        return [(layer.grad_norm, layer.zero_grad_fraction) for layer in layers[:2]]

    scaled = hidden_gradients()
    assert all(norm > 1e-8 and zeros == 0.0 for norm, zeros in scaled), scaled
    # The case is real: without the loss scale float16 flushes them to zero.
    from gradhealth_server.engine import probe

    monkeypatch.setattr(probe, "loss_scale", lambda model: tf.constant(1.0))
    assert all(norm == 0.0 and zeros == 1.0 for norm, zeros in hidden_gradients())
