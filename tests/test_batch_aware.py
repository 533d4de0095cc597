"""Judgments a sample batch cannot support are not made: one distinct row, one class."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gradhealth_server.engine.quantities.inputs import one_distinct_row
from gradhealth_server.rules import judge
from gradhealth_server.verdict.findings import Cause, Severity
from tests.measurement_builder import activation, healthy, stuck


def dead_layers(**kw):
    return stuck(
        activations=[
            activation("dense", dead_fraction=0.95),
            activation("dense_1", dead_fraction=0.95),
            activation("dense_2", "softmax", units=10, is_output=True),
        ],
        **kw,
    )


def test_dead_units_are_judged_on_a_varied_batch():
    assert Cause.DEAD_RELU in {f.cause for f in judge(dead_layers()).findings}


def test_dead_units_are_not_judged_on_one_distinct_row():
    assert Cause.DEAD_RELU not in {
        f.cause for f in judge(dead_layers(one_distinct_row=True)).findings
    }


def test_saturation_is_not_judged_on_one_distinct_row():
    acts = [activation("dense", "sigmoid", saturated_fraction=0.9)]
    seen = {f.cause for f in judge(stuck(activations=acts)).findings}
    assert Cause.SATURATED_ACTIVATION in seen
    m = stuck(activations=acts, one_distinct_row=True)
    assert Cause.SATURATED_ACTIVATION not in {f.cause for f in judge(m).findings}


def test_collapse_is_not_judged_on_one_distinct_row():
    m = healthy(accuracy=0.1, loss=2.3)
    collapsed = dataclasses.replace(
        m.output, predicted_histogram=[256] + [0] * 9, majority_fraction=1.0
    )
    assert Cause.PREDICTION_COLLAPSE in {
        f.cause for f in judge(dataclasses.replace(m, output=collapsed)).findings
    }
    same = dataclasses.replace(m, output=collapsed, one_distinct_row=True)
    assert Cause.PREDICTION_COLLAPSE not in {f.cause for f in judge(same).findings}


def test_one_distinct_row_looks_at_every_input():
    rows = np.tile(np.arange(4.0), (8, 1))
    assert one_distinct_row({"x": rows})
    varied = rows.copy()
    varied[5, 2] = 7.0
    assert not one_distinct_row({"x": varied})
    assert not one_distinct_row({"a": rows, "b": np.arange(8.0)[:, None]})
    assert not one_distinct_row({"x": rows[:1]})


def prior_only(accuracy: float):
    """Labels 80 % class 0; the model answers class 0 for every row."""
    m = healthy(accuracy=accuracy, loss=0.7)
    labels = dataclasses.replace(m.labels, histogram=[205] + [6] * 8 + [3])
    out = dataclasses.replace(m.output, predicted_histogram=[256] + [0] * 9, majority_fraction=1.0)
    return dataclasses.replace(m, labels=labels, output=out)


def test_a_model_that_learned_only_the_labels_prior_has_collapsed():
    chance = 205 / 256
    for skill, fires in ((0.19, True), (0.21, False)):
        m = prior_only(chance + skill * (1 - chance))
        found = {f.cause: f for f in judge(m).findings}
        assert (Cause.PREDICTION_COLLAPSE in found) is fires, skill
    f = {f.cause: f for f in judge(prior_only(chance)).findings}[Cause.PREDICTION_COLLAPSE]
    assert "label pipeline" in f.remedy
    assert f.evidence["skill_over_prior"] == 0


def test_skewed_labels_with_a_model_that_knows_the_rest_are_not_a_collapse():
    chance = 205 / 256
    assert Cause.PREDICTION_COLLAPSE not in {
        f.cause for f in judge(prior_only(chance + 0.9 * (1 - chance))).findings
    }


def test_counts_are_features_to_standardize_not_pixels():
    """Integer counts in [0, 23] are standardized, not divided by 255 (the trial and
    the remedy follow the range class)."""
    from gradhealth_server.engine.quantities.inputs import range_class

    assert range_class(0.0, 23.0, 7.2, 3.7) == "wide"
    assert range_class(0.0, 255.0, 80.0, 100.0) == "byte"
    assert range_class(0.0, 101.0, 40.0, 30.0) == "byte"
    assert range_class(0.0, 100.0, 40.0, 30.0) == "wide"


def test_off_scale_input_on_one_distinct_row_is_only_noted():
    """The scale of one repeated row is real; whether it holds the run back is not
    visible on a batch the model cannot be judged on."""
    from tests.measurement_builder import BYTE, stats

    def finding(**kw):
        m = stuck(inputs=[stats(**BYTE)], first_layer_inputs=[stats("dense", **BYTE)], **kw)
        return next(f for f in judge(m).findings if f.cause is Cause.UNNORMALIZED_INPUT)

    assert str(finding().severity) == "warning"
    noted = finding(one_distinct_row=True)
    assert str(noted.severity) == "info" and "every row of this batch is the same" in noted.summary


@pytest.mark.parametrize(
    ("output", "from_logits", "predicted"),
    [
        ("sigmoid", True, [2, 2]),  # probabilities: Keras computes the loss from its logits
        ("sigmoid", False, [2, 2]),
        ("linear", True, [2, 2]),  # logits: the class is the sign
    ],
)
def test_predicted_classes_read_probabilities_as_probabilities(output, from_logits, predicted):
    """A sigmoid output under from_logits=True still predicts probabilities (Keras 3
    uses the cached logits for the loss), so 0.2 is class 0, not class 1."""
    import tensorflow as tf

    from gradhealth_server.engine.facts import StaticFacts
    from gradhealth_server.engine.quantities import outputs

    values = [0.2, 0.3, 0.7, 0.9] if output == "sigmoid" else [-1.2, -0.3, 0.4, 2.0]
    facts = StaticFacts(from_logits=from_logits, output_activation=output)
    _, pred = outputs.graph(tf.constant(values, shape=(4, 1)), facts)
    assert np.bincount(pred.numpy()).tolist() == predicted


def learned_nothing(loss: float, predicted_entropy: float, **changes):
    """Balanced digits labels (entropy 2.30); predictions whose mean entropy is given."""
    m = stuck(loss=loss, **changes)
    return dataclasses.replace(
        m, output=dataclasses.replace(m.output, mean_entropy=predicted_entropy)
    )


def test_a_model_that_predicts_the_label_prior_for_every_input_learned_nothing():
    found = {f.cause: f for f in judge(learned_nothing(2.30, 2.28)).findings}
    f = found[Cause.PREDICTION_COLLAPSE]
    assert f.severity is Severity.WARNING and f.confidence == 0.3
    assert "learned nothing from x" in f.summary and "shuffled together" in f.remedy
    assert f.evidence["label_entropy"] == pytest.approx(2.30, abs=0.01)


@pytest.mark.parametrize(
    ("loss", "predicted", "early"),
    [
        (0.9 * 2.30, 2.28, False),  # the loss is below the prior's: it learned something
        (2.30, 0.9, False),  # confident predictions: it reads x (class weights, say)
        (2.30, 2.28, True),  # an early checkpoint may know nothing yet
    ],
)
def test_what_is_not_a_model_that_learned_nothing(loss, predicted, early):
    m = learned_nothing(loss, predicted)
    if early:
        m = dataclasses.replace(m, optimizer=dataclasses.replace(m.optimizer, iterations=10))
    assert Cause.PREDICTION_COLLAPSE not in {f.cause for f in judge(m).findings}


def test_labels_shuffled_apart_from_their_inputs_end_to_end(tmp_path):
    """x and y shuffled each on its own: the model sits at the labels' prior."""
    import keras
    from sklearn.datasets import load_digits

    from gradhealth_server.diagnosis import Diagnoser

    keras.utils.set_random_seed(0)
    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target[np.random.RandomState(5).permutation(len(data.target))]
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, "relu", kernel_regularizer=keras.regularizers.L2(1e-3)),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10, "softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    model.save(tmp_path / "shuffled.keras")
    batch = {"x": x[:192], "y": y[:192]}
    verdict = Diagnoser().diagnose(tmp_path / "shuffled.keras", batch).verdict
    assert verdict.primary_cause is Cause.PREDICTION_COLLAPSE
    assert "learned nothing from x" in verdict.findings[0].summary
