"""A real two-output functional model (a classification head and a regression head):
labels as y_<output name>, each output's loss as Keras computes it, a plain y
refused in one line naming the keys, findings about the output naming it; embedded
and through the real client and server."""

from __future__ import annotations

import io

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf

from gradhealth.client import GradientHealthClient
from gradhealth_server.diagnosis import Diagnoser
from gradhealth_server.errors import InvalidBatch
from gradhealth_server.rules import judge
from gradhealth_server.verdict.findings import Cause
from tests.measurement_builder import stuck
from tests.service import TOKEN

ROWS = 128


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def data(rows: int = 512) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 8)).astype("float32")
    kind = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0.5).astype("int32")
    size = (x[:, 2] * 2.0 - x[:, 3])[:, None].astype("float32")
    return x, {"kind": kind, "size": size}


def two_heads() -> keras.Model:
    keras.utils.set_random_seed(0)
    features = keras.Input((8,), name="features")
    h = keras.layers.Dense(32, activation="relu", name="shared")(features)
    kind = keras.layers.Dense(3, activation="softmax", name="kind")(h)
    size = keras.layers.Dense(1, name="size")(h)
    model = keras.Model(features, [kind, size])
    model.compile(
        "adam",
        loss={"size": "mse", "kind": "sparse_categorical_crossentropy"},
        loss_weights={"kind": 1.0, "size": 0.5},
        metrics={"kind": ["accuracy"]},
    )
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x, y = data()
    model = two_heads()
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("multi") / "two_heads.keras"
    model.save(path)
    return model, path, x[:ROWS], {k: v[:ROWS] for k, v in y.items()}


def test_each_output_loss_is_the_one_keras_computes(trained):
    model, path, x, y = trained
    d = Diagnoser().diagnose(path, npz(x=x, y_kind=y["kind"], y_size=y["size"]))
    m = d.measurements
    assert m.static.output_names == ("kind", "size")
    assert m.static.loss == "sparse_categorical_crossentropy"  # the first output's
    expected = model.evaluate(x, y, batch_size=ROWS, verbose=0, return_dict=True)
    assert set(m.output_losses) == {"kind", "size"}
    assert m.output_losses["kind"] == pytest.approx(expected["kind_loss"], rel=1e-4)
    assert m.output_losses["size"] == pytest.approx(expected["size_loss"], rel=1e-4)
    # The probe trains on the weighted sum, exactly as fit does.
    assert m.loss == pytest.approx(expected["loss"], rel=1e-4)
    with tf.GradientTape() as tape:
        pred = model(x, training=True)
        loss = model.compute_loss(x=x, y=[y["kind"], y["size"]], y_pred=pred, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    grad_sq = sum(float(np.sum(np.square(g.numpy()))) for g in grads)
    assert sum(layer.grad_norm**2 for layer in m.layers) == pytest.approx(grad_sq, rel=1e-4)
    assert m.labels is not None and m.labels.format == "class_ids"
    assert m.optimizer is not None and m.optimizer.iterations == 48


def test_a_plain_y_for_two_outputs_is_refused_naming_the_keys(trained):
    _, path, x, y = trained
    with pytest.raises(InvalidBatch) as caught:
        Diagnoser().diagnose(path, npz(x=x, y=y["kind"]))
    text = str(caught.value)
    assert "the model has 2 outputs: the batch needs labels y_kind, y_size" in text
    assert "\n" not in text
    with pytest.raises(InvalidBatch, match="needs labels y_kind, y_size"):
        Diagnoser().diagnose(path, npz(x=x, y_kind=y["kind"]))


def test_a_finding_about_the_output_names_it():
    m = stuck(static={"output_activations": ["softmax", "softmax"]})
    m.static = type(m.static)(**{**m.static.__dict__, "output_names": ("kind", "size")})
    finding = next(f for f in judge(m).findings if f.cause is Cause.LOSS_MISMATCH)
    assert finding.summary.startswith("output 'kind': ")
    assert finding.evidence["output"] == "kind" and finding.layers[0] == "kind"


def test_two_outputs_through_the_client_and_server(server, trained):
    model, _, x, y = trained
    with GradientHealthClient(server.target, token=TOKEN, timeout=300) as client:
        verdict = client.diagnose(model, x, y, run_id="two-heads", step=1)
        assert set(verdict.measurements["output_losses"]) == {"kind", "size"}
        assert verdict.measurements["static"]["output_names"] == ["kind", "size"]
        with pytest.raises(grpc.RpcError) as caught:
            client.diagnose(model, x, y["kind"], run_id="two-heads", step=2)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs labels y_kind, y_size" in caught.value.details()


def test_the_callback_takes_a_dict_of_targets(server):
    from gradhealth.callback import GradientHealthCallback

    x, y = data()
    seen = []
    callback = GradientHealthCallback(
        server.target,
        run_id="two-heads-callback",
        sample=(x[:ROWS], {k: v[:ROWS] for k, v in y.items()}),
        token=TOKEN,
        min_interval_s=0,
        on_verdict=seen.append,
    )
    two_heads().fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[callback])
    assert callback.wait(120)
    assert callback.sent >= 1 and callback.failed == 0, callback.last_error
    assert seen and set(seen[-1].measurements["output_losses"]) == {"kind", "size"}


def test_dict_outputs_are_described_by_the_output_the_facts_name(tmp_path):
    """keras.Model(outputs={"size": ..., "kind": ...}): Keras orders the outputs by
    key; the label, output and loss facts all describe the first of that order."""
    x, y = data(256)
    keras.utils.set_random_seed(0)
    features = keras.Input((8,), name="features")
    h = keras.layers.Dense(16, activation="relu")(features)
    model = keras.Model(
        features,
        {
            "size": keras.layers.Dense(1, name="size")(h),
            "kind": keras.layers.Dense(3, activation="softmax", name="kind")(h),
        },
    )
    model.compile("adam", loss={"size": "mse", "kind": "sparse_categorical_crossentropy"})
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "dict_outputs.keras"
    model.save(path)
    d = Diagnoser().diagnose(
        path, npz(x=x[:ROWS], y_kind=y["kind"][:ROWS], y_size=y["size"][:ROWS])
    )
    m = d.measurements
    assert m.static.output_names == ("kind", "size")
    assert m.static.loss == "sparse_categorical_crossentropy" and m.static.output_units == 3
    assert m.output is not None and len(m.output.predicted_histogram or []) == 3
    expected = model.evaluate(
        x[:ROWS], {k: v[:ROWS] for k, v in y.items()}, batch_size=ROWS, verbose=0, return_dict=True
    )
    assert m.output_losses["kind"] == pytest.approx(expected["kind_loss"], rel=1e-4)
    assert m.output_losses["size"] == pytest.approx(expected["size_loss"], rel=1e-4)


def test_the_remedy_trials_run_on_every_output(trained):
    """The trials' real optimizer steps take the labels per output as the probe does."""
    from gradhealth_server.engine.trial_steps import Trials

    _, path, x, y = trained
    diagnoser = Diagnoser()
    d = diagnoser.diagnose(path, npz(x=x, y_kind=y["kind"], y_size=y["size"]))
    entry = diagnoser.cache.get(d.fingerprint)
    assert entry is not None
    (probe,) = entry.probes.values()
    targets = [y["kind"], y["size"]]
    trials = Trials(probe)
    before, after = trials.step({"features": x}, targets)
    assert before == pytest.approx(d.measurements.loss, rel=1e-4) and np.isfinite(after)
    lr = trials.learning_rate({"features": x}, targets, (0.1, 1.0, 3.0))
    assert lr is not None and len(lr.losses) == 3 and all(np.isfinite(lr.losses))


@pytest.fixture(scope="module")
def three_heads(tmp_path_factory):
    """A regression head first, a classifier second, and a third head with the bug:
    one sigmoid unit under binary crossentropy, trained on 5-class ids 0-4."""
    x, y = data()
    grade = np.digitize(x[:, 5], [-1.0, -0.3, 0.3, 1.0]).astype("float32")
    keras.utils.set_random_seed(0)
    features = keras.Input((8,), name="features")
    h = keras.layers.Dense(32, activation="relu", name="shared")(features)
    outputs = [
        keras.layers.Dense(1, name="size")(h),
        keras.layers.Dense(3, activation="softmax", name="kind")(h),
        keras.layers.Dense(1, activation="sigmoid", name="grade")(h),
    ]
    model = keras.Model(features, outputs)
    model.compile("adam", loss=["mse", "sparse_categorical_crossentropy", "binary_crossentropy"])
    model.fit(x, [y["size"], y["kind"], grade], epochs=3, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("three") / "three_heads.keras"
    model.save(path)
    return (
        path,
        x[:ROWS],
        {"size": y["size"][:ROWS], "kind": y["kind"][:ROWS], "grade": grade[:ROWS]},
    )


def test_a_wrong_loss_on_a_later_output_is_found_and_named(three_heads, trained):
    path, x, y = three_heads
    d = Diagnoser().diagnose(path, npz(x=x, **{f"y_{k}": v for k, v in y.items()}))
    assert d.measurements.static.loss == "mean_squared_error"  # the first output's
    assert d.measurements.other_output_labels["grade"].format == "class_ids"
    mismatches = [f for f in d.verdict.findings if f.cause is Cause.LOSS_MISMATCH]
    assert [f.evidence["output"] for f in mismatches] == ["grade"], mismatches
    assert mismatches[0].summary.startswith("output 'grade': binary_crossentropy")
    assert str(mismatches[0].severity) != "info"
    assert str(d.verdict.primary_cause) == "loss_mismatch"
    # The healthy two-head run: no output's loss is questioned.
    _, healthy, hx, hy = trained
    h = Diagnoser().diagnose(healthy, npz(x=hx, y_kind=hy["kind"], y_size=hy["size"]))
    assert not [f for f in h.verdict.findings if f.cause is Cause.LOSS_MISMATCH]


def test_labels_a_later_output_cannot_take_are_refused_naming_it(three_heads):
    path, x, y = three_heads
    kind = y["kind"].copy()
    kind[0] = 7  # the kind head has 3 classes
    with pytest.raises(
        InvalidBatch, match=r"labels y_kind range over \[0, 7\] but the model has 3"
    ):
        Diagnoser().diagnose(path, npz(x=x, y_size=y["size"], y_kind=kind, y_grade=y["grade"]))
