"""Labels that do not fit the loss, end to end: Keras trains on them silently, so the
diagnosis names them (loss_mismatch first) instead of refusing the batch."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest

from gradhealth_server.verdict.findings import Cause, Severity
from tests import models

ROWS = 128


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def mlp(units: int, activation: str) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(units, activation=activation),
        ]
    )


def diagnose(diagnoser, tmp_path, model, loss, x, y):
    keras.utils.set_random_seed(0)
    model.compile("adam", loss)
    model.fit(x, y, epochs=2, verbose=0)  # Keras trains on these labels without a word
    path = tmp_path / "run.keras"
    model.save(path)
    d = diagnoser.diagnose(path, npz(x=x[:ROWS], y=y[:ROWS]))
    finding = d.verdict.findings[0]
    assert d.verdict.primary_cause is Cause.LOSS_MISMATCH and finding.cause is Cause.LOSS_MISMATCH
    return d, finding


def test_binary_crossentropy_on_class_ids(diagnoser, tmp_path):
    x, y = models.digits()
    d, finding = diagnose(
        diagnoser, tmp_path, mlp(1, "sigmoid"), "binary_crossentropy", x, y.astype("float32")
    )
    assert finding.severity is Severity.CRITICAL
    assert finding.evidence["label_range"] == [0, 9]
    assert finding.evidence["labels_look_like"] == "class_ids"
    assert 'Dense(10, activation="softmax")' in finding.remedy
    assert "sparse_categorical_crossentropy" in finding.remedy
    assert np.isfinite(d.measurements.loss)  # Keras clips the sigmoid: finite, if negative
    # No accuracy or collapse read off labels the loss cannot read: a sigmoid
    # "predicting 1" against ids 1-9 is not 89 % accurate, nor a collapse.
    assert d.measurements.accuracy is None
    assert Cause.PREDICTION_COLLAPSE not in {f.cause for f in d.verdict.findings}


def test_binary_crossentropy_on_a_regression_target(diagnoser, tmp_path):
    x, _ = models.digits()
    rng = np.random.default_rng(0)
    target = np.round(30 + 316 * rng.random(len(x))).astype("float32")  # like diabetes: 30-346
    d, finding = diagnose(diagnoser, tmp_path, mlp(1, "sigmoid"), "binary_crossentropy", x, target)
    assert finding.severity is Severity.CRITICAL
    assert finding.evidence["labels_look_like"] == "continuous"
    assert 'loss="mse"' in finding.remedy and "standardized" in finding.remedy
    assert np.isfinite(d.measurements.loss)


def test_sparse_crossentropy_on_labels_divided_by_255(diagnoser, tmp_path):
    x, y = models.digits()
    d, finding = diagnose(
        diagnoser,
        tmp_path,
        mlp(10, "softmax"),
        "sparse_categorical_crossentropy",
        x,
        y.astype("float32") / 255,
    )
    assert finding.severity is Severity.CRITICAL
    assert "every label becomes class 0" in finding.summary
    assert "np.rint(y * 255)" in finding.remedy
    assert finding.evidence["labels_as_sent"] == [0.0, pytest.approx(9 / 255)]
    assert d.measurements.labels.histogram == [ROWS]  # what the loss reads: all class 0
    # The fix, tried: trained on the rounded ids, the held-out loss on them falls below
    # the run trained on all-zero labels.
    trial = d.measurements.pairing_trial
    assert trial is not None and trial.change == 'y = np.rint(y * 255).astype("int32")'
    assert trial.remedied_after < trial.as_is_after
    assert "held-out sparse_categorical_crossentropy" in finding.trial


def test_binary_crossentropy_on_a_linear_output_is_tried_from_logits(diagnoser, tmp_path):
    """Labels of shape (n,) against a (n, 1) output and integer 0/1: the remedied loss is
    built as compile() builds it (the Loss object matches their rank and dtype), so the
    trial runs instead of failing the diagnosis."""
    x, y = models.digits()
    odd = (y % 2).astype("int64")
    d, finding = diagnose(diagnoser, tmp_path, mlp(1, "linear"), "binary_crossentropy", x, odd)
    assert finding.severity is Severity.CRITICAL
    assert "BinaryCrossentropy(from_logits=True)" in finding.remedy
    trial = d.measurements.pairing_trial
    assert trial is not None and trial.scored_by == "binary_crossentropy"
    assert "held-out binary_crossentropy" in finding.trial


def test_a_relu_output_under_mse_on_targets_below_zero(diagnoser, tmp_path):
    """Standardized targets, half of them negative, through Dense(1, relu): the output
    is stuck at 0 for those (no gradient), a real loss of fit; a linear twin is fine."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = ((data.data - data.data.mean(0)) / data.data.std(0)).astype("float32")
    y = ((data.target - data.target.mean()) / data.target.std()).astype("float32")
    verdicts = {}
    for activation in ("relu", None):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((10,)),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(1, activation=activation),
            ]
        )
        model.compile("adam", "mse")
        model.fit(x, y, epochs=20, batch_size=32, verbose=0)
        path = tmp_path / f"{activation}.keras"
        model.save(path)
        d = diagnoser.diagnose(path, npz(x=x[:ROWS], y=y[:ROWS]))
        verdicts[activation] = d.verdict
    relu = [f for f in verdicts["relu"].findings if f.cause is Cause.LOSS_MISMATCH]
    assert relu and relu[0].severity is Severity.WARNING
    assert "cannot go below 0" in relu[0].summary and "no gradient" in relu[0].summary
    assert relu[0].evidence["output_range"] == [0.0, None]
    assert verdicts["relu"].primary_cause is Cause.LOSS_MISMATCH
    assert not any(f.cause is Cause.LOSS_MISMATCH for f in verdicts[None].findings)
