"""The scenario suite is honest ground truth: every faulty run fails the way its label says,
the mechanism behind the label is really there, and every healthy run really learns.

Each scenario is trained once per session (tests.scenarios.train_cached).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from collections import Counter

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.scenarios import (
    BATCH_ROWS,
    CAUSES,
    SCENARIOS,
    Run,
    Scenario,
    by_name,
    chance,
    save_run,
    train_cached,
)

CHANCE_MARGIN = 0.05  # chance_accuracy: at most this far above the majority-class share
TWIN_GAP = 0.25  # far_below_twin: at least this far below the twin's accuracy
HEALTHY_ACCURACY = 0.9  # healthy classification runs on these data sets
HUGE_LOSS = 1e3  # a constant predictor scores <= ln(10) (classification) or ~1 (standardized y)
ONE_CLASS_SHARE = 0.9  # one_class: share of the batch predicted as the most common class

FAULTY = [s for s in SCENARIOS if s.cause is not None]
HEALTHY = [s for s in SCENARIOS if s.cause is None]


def ids(s: Scenario) -> str:
    return s.name


def accuracy(run: Run) -> float:
    return float(run.history["accuracy"][-1])


def loss(run: Run) -> float:
    return float(run.history["loss"][-1])


def weights_finite(run: Run) -> bool:
    return all(np.isfinite(w).all() for w in run.model.get_weights())


def predicted_classes(run: Run) -> np.ndarray:
    p = np.asarray(run.model.predict(run.x, verbose=0))
    return (p[:, 0] > 0.5).astype(int) if p.shape[-1] == 1 else p.argmax(-1)


def label_classes(run: Run) -> np.ndarray:
    return run.y.argmax(-1) if run.y.ndim == 2 else run.y.astype(int)


def top_share(classes: np.ndarray) -> float:
    return Counter(classes.tolist()).most_common(1)[0][1] / len(classes)


# ---------------------------------------------------------------------------- the suite itself


def test_suite_covers_every_cause_and_enough_healthy_runs():
    names = [s.name for s in SCENARIOS]
    assert len(names) == len(set(names))
    per_cause = Counter(s.cause for s in FAULTY)
    assert set(per_cause) == set(CAUSES)
    assert min(per_cause.values()) >= 2, per_cause
    assert len(HEALTHY) >= 10


@pytest.mark.parametrize("s", SCENARIOS, ids=ids)
def test_scenario_is_well_formed(s: Scenario):
    prefix, _, variant = s.name.partition("/")
    assert variant
    assert prefix == (s.cause or "healthy")
    assert s.dataset in {"digits", "wine", "breast_cancer", "iris", "diabetes"}
    if s.symptom in {"far_below_twin", "early"}:
        twin = by_name(s.twin)
        assert twin.cause is None and twin.symptom == "healthy"
        assert twin.dataset == s.dataset
    else:
        assert s.twin is None


# ---------------------------------------------------------------------------- symptoms


@pytest.mark.parametrize("s", SCENARIOS, ids=ids)
def test_symptom_is_real(s: Scenario):
    run = train_cached(s.name)
    rows = len(run.y)
    xs = run.x.values() if isinstance(run.x, dict) else [run.x]
    assert 0 < rows <= BATCH_ROWS and all(len(x) == rows for x in xs)
    assert run.model.optimizer is not None and run.model.loss is not None

    if s.symptom == "nan_loss":
        assert not np.isfinite(loss(run)) or not weights_finite(run)
        return
    # Only the non_finite scenarios may hold NaN: the others must be diagnosable on their own.
    assert np.isfinite(loss(run)) and weights_finite(run), "unexpected NaN/inf"

    if s.symptom == "chance_accuracy":
        assert accuracy(run) <= chance(s.dataset) + CHANCE_MARGIN
    elif s.symptom == "far_below_twin":
        assert accuracy(run) <= accuracy(train_cached(s.twin)) - TWIN_GAP
    elif s.symptom == "huge_loss":
        assert loss(run) >= HUGE_LOSS
    elif s.symptom == "one_class":
        assert top_share(label_classes(run)) <= 0.5, "the labels themselves are one class"
        assert top_share(predicted_classes(run)) >= ONE_CLASS_SHARE
    elif s.symptom == "healthy":
        if s.dataset == "diabetes":
            assert loss(run) <= 0.5 * float(np.var(run.y))
        else:
            assert accuracy(run) >= HEALTHY_ACCURACY
    elif s.symptom == "converged":
        assert loss(run) < 0.01 and accuracy(run) >= 0.99
    elif s.symptom == "early":
        history = run.history["loss"]
        assert len(history) <= 10, "an early checkpoint has seen only a few steps"
        assert history[-1] < history[0], "its loss is already falling"
        assert accuracy(run) <= accuracy(train_cached(s.twin)) - TWIN_GAP
    else:
        pytest.fail(f"unknown symptom {s.symptom}")


# ---------------------------------------------------------------------------- mechanisms
# The symptom alone does not prove the cause; these check the cause itself is present.


def kernel_grad_and_weight_norms(run: Run) -> list[tuple[float, float]]:
    model = run.model
    kernels = [v for v in model.trainable_variables if v.path.endswith("/kernel")]
    with tf.GradientTape() as tape:
        y_pred = model(run.x, training=True)
        value = model.compute_loss(x=run.x, y=run.y, y_pred=y_pred, training=True)
    grads = tape.gradient(value, kernels)
    return [(float(tf.norm(g)), float(tf.norm(k))) for g, k in zip(grads, kernels)]


def hidden_activations(run: Run) -> list[tuple[str, np.ndarray]]:
    """(activation name, output as rows x units) of every hidden layer, on the sample batch."""
    model = run.model
    layers = [layer for layer in model.layers[:-1] if hasattr(layer, "activation")]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    outputs = keras.Model(inputs, [layer.output for layer in layers])(run.x)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    return [
        (layer.activation.__name__, np.asarray(a).reshape(len(a), -1))
        for layer, a in zip(layers, outputs)
    ]


def saturated_share(activation: str, a: np.ndarray) -> float:
    if activation == "tanh":
        return float((np.abs(a) > 0.99).mean())
    if activation == "sigmoid":
        return float(((a < 0.01) | (a > 0.99)).mean())
    return 0.0


def vanishing(run: Run) -> bool:
    """The first layer's kernel gradient is < 1/1000 of the last layer's."""
    norms = kernel_grad_and_weight_norms(run)
    return norms[0][0] < 1e-3 * norms[-1][0]


def exploding(run: Run) -> bool:
    """Some layer's kernel gradient is > 100x the kernel itself."""
    return max(g / w for g, w in kernel_grad_and_weight_norms(run)) > 100


def mostly_dead(run: Run) -> bool:
    """A hidden ReLU layer in which >= 90% of units never fire on the batch."""
    layers = [a for f, a in hidden_activations(run) if f == "relu"]
    return any(float((a.max(0) <= 0).mean()) >= 0.9 for a in layers)


def mostly_saturated(run: Run) -> bool:
    """A hidden sigmoid/tanh layer with >= 90% of its outputs at the flat ends."""
    return any(saturated_share(f, a) >= 0.9 for f, a in hidden_activations(run))


def unnormalized(run: Run) -> bool:
    """The batch holds values >= 100 and no layer in the model rescales them."""
    xs = run.x.values() if isinstance(run.x, dict) else [run.x]
    scaling = keras.layers.Rescaling | keras.layers.Normalization
    return max(float(np.abs(x).max()) for x in xs) >= 100 and not any(
        isinstance(layer, scaling) for layer in run.model.layers
    )


MECHANISMS = {
    "vanishing_gradients": vanishing,
    "exploding_gradients": exploding,
    "dead_relu": mostly_dead,
    "saturated_activation": mostly_saturated,
    "unnormalized_input": unnormalized,
}


@pytest.mark.parametrize("s", [s for s in FAULTY if s.cause in MECHANISMS], ids=ids)
def test_cause_is_present(s: Scenario):
    assert MECHANISMS[s.cause](train_cached(s.name))


@pytest.mark.parametrize("s", HEALTHY, ids=ids)
def test_healthy_run_shows_none_of_the_mechanisms(s: Scenario):
    """The same checks stay quiet on the healthy runs, so they can fail."""
    run = train_cached(s.name)
    assert [cause for cause, check in MECHANISMS.items() if check(run)] == []


# ---------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("s", SCENARIOS, ids=ids)
def test_saved_checkpoint_loads_safely_and_predicts_the_same(s: Scenario, tmp_path):
    run = train_cached(s.name)
    checkpoint, batch = save_run(run, tmp_path, s.name)
    assert checkpoint.suffix == ".keras" and "/" not in checkpoint.name
    loaded = keras.saving.load_model(checkpoint, safe_mode=True)
    assert loaded.optimizer is not None and loaded.loss is not None
    with np.load(batch) as saved:
        if isinstance(run.x, dict):
            assert sorted(saved.files) == sorted(["y", *(f"x_{k}" for k in run.x)])
            x = {k: saved[f"x_{k}"] for k in run.x}
        else:
            assert sorted(saved.files) == ["x", "y"]
            x = saved["x"]
        np.testing.assert_array_equal(saved["y"], run.y)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), run.model.predict(run.x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_a_run_shared_between_processes_loads_as_it_was_trained(tmp_path, monkeypatch):
    """Under xdist the first worker trains and saves a run, the others load it: the same
    weights, batch and history (tests.scenarios.train_cached)."""
    from tests import scenarios

    monkeypatch.setattr(scenarios, "SHARED_RUNS", tmp_path)
    name = "healthy/adam_iris_mlp"
    trained = scenarios.train_cached.__wrapped__(name)  # trains, saves
    loaded = scenarios.train_cached.__wrapped__(name)  # loads what it saved
    assert (tmp_path / "healthy__adam_iris_mlp.history.json").exists()
    assert loaded.history.keys() == trained.history.keys()
    for key, values in trained.history.items():
        assert loaded.history[key] == pytest.approx(values)
    np.testing.assert_array_equal(loaded.x, trained.x)
    np.testing.assert_array_equal(loaded.y, trained.y)
    for a, b in zip(loaded.model.get_weights(), trained.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
