"""The probe against TensorFlow ground truth on real models trained on digits."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradhealth_server.engine.measure import build_measurements
from gradhealth_server.engine.probe import Probe, ProbeOptions
from gradhealth_server.engine.structure import read_structure
from gradhealth_server.engine.trial_steps import Trials
from gradhealth_server.intake.checkpoint import ModelCache
from gradhealth_server.intake.limits import Limits
from tests import models

ROWS = 256


def load(path):
    entry, _, _ = ModelCache().load(path)
    return entry.model


def state(model) -> list[np.ndarray]:
    return [
        v.numpy().copy()
        for v in list(model.variables)
        + list(model.optimizer.variables)
        + list(model.metrics_variables)
    ]


def eager_loss_and_grads(model, x, y):
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    return float(loss), [g.numpy() for g in grads]


def run_probe(model, x, y, **options):
    structure = read_structure(model)
    name = structure.facts.input_names[0]
    batch = x if isinstance(x, dict) else {name: x}
    probe = Probe(model, structure, batch, y, ProbeOptions(**options))
    result = probe.run(batch, y)
    raw_x = batch
    return probe, result, build_measurements(result, structure, raw_x, y, probe.options.mode)


@pytest.mark.parametrize("kind", ["cnn", "mlp_logits"])
def test_gradients_match_eager_tape(checkpoints, kind):
    model = load(checkpoints.path(kind))
    x, y = models.digits()
    x, y = x[:ROWS], y[:ROWS]
    _, result, m = run_probe(model, x, y)
    loss, grads = eager_loss_and_grads(model, x, y)
    expected_sq = np.array([np.sum(np.square(g.astype(np.float64))) for g in grads])
    np.testing.assert_allclose(result.raw["variables"]["grad_sq"], expected_sq, rtol=1e-4)
    assert m.loss == pytest.approx(loss, rel=1e-5)
    # Per-layer norms are the root of the summed squares of that layer's variables.
    first = m.layers[0]
    n_vars = len(read_structure(model).layers[0].variable_indices)
    assert first.grad_norm == pytest.approx(np.sqrt(expected_sq[:n_vars].sum()), rel=1e-4)
    assert m.grad_norm == pytest.approx(np.sqrt(expected_sq.sum()), rel=1e-4)
    assert m.micro_batch_rows == [64, ROWS - 64]  # the probe rows first, then the rest
    assert m.noise_scale is not None and m.noise_scale > 0


@pytest.mark.parametrize("kind", ["cnn", "mlp_logits", "bn_dropout"])
def test_probe_leaves_every_variable_bit_identical(checkpoints, kind):
    model = load(checkpoints.path(kind))
    x, y = models.digits()
    before = state(model)
    iterations = int(model.optimizer.iterations.numpy())
    run_probe(model, x[:ROWS], y[:ROWS])
    after = state(model)
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    assert int(model.optimizer.iterations.numpy()) == iterations


@pytest.mark.parametrize("kind", ["cnn", "mlp_logits"])
def test_update_ratio_equals_a_real_optimizer_step(checkpoints, kind):
    model = load(checkpoints.path(kind))
    x, y = models.digits()
    x, y = x[:ROWS], y[:ROWS]
    probe, _, m = run_probe(model, x, y)
    saved = state(model)
    _, grads = eager_loss_and_grads(model, x, y)
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.optimizer.apply(grads, model.trainable_variables)
    after = [v.numpy() for v in model.trainable_variables]
    structure = read_structure(model)
    for layer, info in zip(m.layers, structure.layers, strict=True):
        idx = list(info.variable_indices)
        step = np.sqrt(sum(np.sum((after[i] - before[i]).astype(np.float64) ** 2) for i in idx))
        norm = np.sqrt(sum(np.sum(before[i].astype(np.float64) ** 2) for i in idx))
        assert layer.update_ratio == pytest.approx(step / norm, rel=2e-3), layer.name
    # The learning-rate probe's scale-1 loss is the loss after that real step,
    # on the first micro-batch.
    rows = m.micro_batch_rows[0]
    scale_one = m.optimizer.lr_scales.index(1.0)
    after_loss, _ = eager_loss_and_grads(model, x[:rows], y[:rows])
    assert m.optimizer.lr_losses[scale_one] == pytest.approx(after_loss, rel=2e-3)
    for var, value in zip(
        list(model.variables) + list(model.optimizer.variables) + list(model.metrics_variables),
        saved,
        strict=True,
    ):
        var.assign(value)
    assert probe.trace_count == 1


def test_nan_and_inf_are_counted_per_variable_as_the_tape_sees_them(checkpoints):
    model = load(checkpoints.path("mlp_logits"))
    x, y = models.digits()
    x, y = x[:ROWS], y[:ROWS]
    saved = state(model)
    variables = model.trainable_variables
    planted = variables[0].numpy()
    planted.flat[[0, 5, 9]] = np.nan
    variables[0].assign(planted)
    bias = variables[-1].numpy()
    bias[:2] = np.inf
    variables[-1].assign(bias)
    _, result, m = run_probe(model, x, y)
    counts = result.raw["variables"]["weight_nonfinite"]
    expected = [int((~np.isfinite(v.numpy())).sum()) for v in variables]
    assert list(counts) == expected and expected[0] == 3 and expected[-1] == 2
    assert m.nonfinite.weights == 5
    _, grads = eager_loss_and_grads(model, x, y)
    expected_grads = [int((~np.isfinite(g)).sum()) for g in grads]
    assert list(result.raw["variables"]["grad_nonfinite"]) == expected_grads
    assert sum(expected_grads) > 0
    for var, value in zip(
        list(model.variables) + list(model.optimizer.variables) + list(model.metrics_variables),
        saved,
        strict=True,
    ):
        var.assign(value)
    # Healthy again: nothing counted (the counting branch does not run).
    _, result, m = run_probe(model, x, y)
    assert not result.raw["variables"]["grad_nonfinite"].any() and m.nonfinite.weights == 0


def test_activation_statistics_match_the_layer_outputs(checkpoints):
    import keras

    model = load(checkpoints.path("cnn"))
    x, y = models.digits()
    x, y = x[:ROWS], y[:ROWS]
    _, _, m = run_probe(model, x, y)
    outputs = keras.Model(model.inputs, [layer.output for layer in model.layers])(x)
    by_name = {layer.name: out.numpy() for layer, out in zip(model.layers, outputs)}
    for act in m.activations:
        out = by_name[act.layer]
        assert act.mean == pytest.approx(float(out.mean()), rel=1e-3, abs=1e-5)
        if act.activation == "relu":
            unit_max = out.reshape(-1, out.shape[-1]).max(axis=0)
            assert act.dead_fraction == pytest.approx(float((unit_max <= 0).mean()))
    assert m.output is not None and sum(m.output.predicted_histogram) == ROWS
    predicted = by_name[model.layers[-1].name].argmax(axis=-1)
    assert m.accuracy == pytest.approx(float((predicted == y).mean()))
    assert m.output.row_sum_mean == pytest.approx(1.0, abs=1e-4)
    first = m.first_layer_inputs[0]
    assert first.max == pytest.approx(float(x.max())) and first.min == pytest.approx(0.0)


def test_norms_mode_measures_only_gradient_norms(checkpoints):
    model = load(checkpoints.path("mlp_logits"))
    x, y = models.digits()
    _, result, m = run_probe(model, x[:ROWS], y[:ROWS], mode="norms")
    _, grads = eager_loss_and_grads(model, x[:ROWS], y[:ROWS])
    expected = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    assert m.grad_norm == pytest.approx(expected, rel=1e-4)
    assert "optimizer" not in result.raw and m.optimizer is None
    assert {"activations", "optimizer_step", "lr_probe"} <= set(m.unavailable)


def test_xla_and_plain_graph_agree(checkpoints):
    model = load(checkpoints.path("cnn"))
    x, y = models.digits()
    _, with_xla, a = run_probe(model, x[:ROWS], y[:ROWS], jit_compile=True)
    _, without, b = run_probe(model, x[:ROWS], y[:ROWS], jit_compile=False)
    assert with_xla.xla is True and without.xla is False
    grads = [r.raw["variables"]["grad_sq"] for r in (with_xla, without)]
    np.testing.assert_allclose(*grads, rtol=1e-4)
    assert a.loss == pytest.approx(b.loss, rel=1e-5)


def test_batchnorm_model_uses_one_micro_batch(checkpoints):
    model = load(checkpoints.path("bn_dropout"))
    x, y = models.digits()
    _, _, m = run_probe(model, x[:ROWS], y[:ROWS])
    assert m.micro_batch_rows == [ROWS]
    assert "noise_scale" in m.unavailable
    assert m.static.batch_coupled is True
    assert "BatchNormalization" in m.static.normalization_layers


def test_multi_input_model(checkpoints):
    model = load(checkpoints.path("two_input"))
    x, y = models.digits()
    batch = models.two_input_batch(x[:ROWS])
    _, result, m = run_probe(model, batch, y[:ROWS])
    _, grads = eager_loss_and_grads(model, [batch["image"], batch["stats"]], y[:ROWS])
    expected = np.array([np.sum(np.square(g.astype(np.float64))) for g in grads])
    np.testing.assert_allclose(result.raw["variables"]["grad_sq"], expected, rtol=1e-4)
    assert m.static.input_names == ("image", "stats")
    # One first weight layer per branch: the conv sees pixels, the dense sees stats.
    seen = sorted(round(t.max, 4) for t in m.first_layer_inputs)
    expected_max = sorted(round(float(v.max()), 4) for v in batch.values())
    assert seen == expected_max


def test_subclassed_model_gets_gradients_and_says_what_is_missing(checkpoints):
    path = checkpoints.path("subclassed")
    limits = Limits(allowed_classes=frozenset({"gradhealth_tests>SubclassedMLP"}))
    entry, _, _ = ModelCache(limits=limits).load(path)
    model = entry.model
    x, y = models.digits()
    _, result, m = run_probe(model, x[:ROWS], y[:ROWS])
    _, grads = eager_loss_and_grads(model, x[:ROWS], y[:ROWS])
    expected = np.array([np.sum(np.square(g.astype(np.float64))) for g in grads])
    np.testing.assert_allclose(result.raw["variables"]["grad_sq"], expected, rtol=1e-4)
    assert "activations" in m.unavailable and m.activations == []
    assert m.optimizer is not None and m.optimizer.update_ratio > 0
    assert len(m.layers) == 2


def test_second_checkpoint_of_an_architecture_reuses_model_and_probe(checkpoints):
    from gradhealth_server.diagnosis import Diagnoser

    diagnoser = Diagnoser()
    first = diagnoser.diagnose(checkpoints.path("cnn"), _npz(checkpoints, "cnn"))
    entry = diagnoser.cache.get(first.fingerprint)
    model = entry.model
    second = diagnoser.diagnose(checkpoints.path("cnn@b"), _npz(checkpoints, "cnn"))
    assert second.fingerprint == first.fingerprint
    assert second.cache_hit and second.probe_cached
    assert diagnoser.cache.get(first.fingerprint).model is model  # no rebuild
    (probe,) = entry.probes.values()
    assert probe.trace_count == 1  # no retrace
    # ... and the numbers are the second checkpoint's, optimizer state included.
    fresh = load(checkpoints.path("cnn@b"))
    x, y = models.digits()
    loss, _ = eager_loss_and_grads(fresh, x[:ROWS], y[:ROWS])
    assert second.measurements.loss == pytest.approx(loss, rel=1e-5)
    assert int(model.optimizer.iterations.numpy()) == int(fresh.optimizer.iterations.numpy())
    assert second.measurements.loss != pytest.approx(first.measurements.loss, rel=1e-6)


def _npz(checkpoints, kind: str):
    path = checkpoints.root / f"{kind}_batch.npz"
    if not path.exists():
        x, y = models.digits()
        np.savez(path, x=x[:ROWS], y=y[:ROWS])
    return path


def test_an_out_of_memory_in_the_probe_is_resource_exhausted_naming_memory():
    """TensorFlow reports a failed allocation in a compiled function as
    "Graph execution error" (a ResourceExhaustedError): it is the worker's
    memory, not a bad batch (it was INVALID_ARGUMENT)."""
    import tensorflow as tf

    from gradhealth_server.engine.probe_errors import probe_error
    from gradhealth_server.errors import InvalidBatch, LimitExceeded

    @tf.function
    def huge(n):
        return tf.reduce_sum(tf.zeros(tf.stack([n, n])))  # 64 TiB of float32

    with pytest.raises(tf.errors.ResourceExhaustedError) as oom:
        huge(tf.constant(1 << 22))
    assert "Graph execution error" in str(oom.value)
    error = probe_error(oom.value)
    assert isinstance(error, LimitExceeded)
    assert "ran out of memory" in str(error) and "OOM when allocating" in str(error)

    with pytest.raises(tf.errors.InvalidArgumentError) as bad:
        tf.function(lambda: tf.gather(tf.zeros(3), tf.constant(7)))()
    assert isinstance(probe_error(bad.value), InvalidBatch)


def _sequence_model(layer, steps: int):
    import keras

    model = keras.Sequential(
        [keras.Input((steps, 8)), layer, keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_the_input_gradient_per_time_step_matches_the_tape_and_shows_a_fading_rnn():
    """The digits' 8 pixel rows, then 56 blank steps, into a SimpleRNN whose recurrent
    weights shrink the state (orthogonal x 0.3): the first rows get next to no gradient.
    The same rows alone into a GRU get about as much as the last ones."""
    import keras

    from gradhealth_server.rules import judge

    x, y = models.digits()
    rows = x[:ROWS].reshape(ROWS, 8, 8)
    padded = np.concatenate([rows, np.zeros((ROWS, 56, 8), np.float32)], axis=1)
    keras.utils.set_random_seed(0)
    rnn = _sequence_model(
        keras.layers.SimpleRNN(32, recurrent_initializer=keras.initializers.Orthogonal(0.3)),
        64,
    )
    _, _, m = run_probe(rnn, padded, y[:ROWS])
    with tf.GradientTape() as tape:
        xt = tf.constant(padded)
        tape.watch(xt)
        loss = rnn.compute_loss(x=xt, y=y[:ROWS], y_pred=rnn(xt, training=True), training=True)
    per_step = np.sqrt(np.sum(np.square(tape.gradient(loss, xt).numpy()), axis=(0, 2)))
    assert m.time_gradient.steps == 64
    assert m.time_gradient.early == pytest.approx(per_step[:16].mean(), rel=1e-3)
    assert m.time_gradient.late == pytest.approx(per_step[-16:].mean(), rel=1e-3)
    assert m.time_gradient.early_to_late < 1e-3
    finding = next(f for f in judge(m).findings if str(f.cause) == "vanishing_gradients")
    assert "across time" in finding.summary and "GRU" in finding.remedy

    gru = _sequence_model(keras.layers.GRU(32), 8)
    _, _, short = run_probe(gru, rows, y[:ROWS])
    assert short.time_gradient.early_to_late > 0.01
    _, _, flat = run_probe(_sequence_model(keras.layers.Flatten(), 8), rows, y[:ROWS])
    assert flat.time_gradient is None  # no recurrent layer: not measured


@pytest.mark.parametrize("kind", ["cnn", "mlp_logits"])
def test_the_from_scratch_trial_starts_every_arm_afresh_and_restores_the_checkpoint(
    checkpoints, kind
):
    """Both arms start from one fresh (seeded) initialization and a fresh optimizer:
    the same batch twice gives the same numbers, starting near chance (log 10) rather than at
    the trained checkpoint's loss; afterwards every variable is as it was."""
    from gradhealth_server.engine.trial_steps import Trials

    model = load(checkpoints.path(kind))
    x, y = models.digits()
    x, y = x[:ROWS], y[:ROWS]
    probe, _, m = run_probe(model, x, y)
    assert m.loss < 1.0  # the checkpoint has learned
    before = state(model)
    name = probe.input_order[0]
    trials = Trials(probe)
    sent, pixels = {name: x}, {name: (x * 255).astype(x.dtype)}
    (a0, a1), (b0, b1), (p0, _p1) = trials.from_scratch([(sent, y), (sent, y), (pixels, y)])
    assert (a0, a1) == pytest.approx((b0, b1), rel=1e-4)
    # Seeded initializers: the same checkpoint gets the same trial, call after call.
    assert trials.from_scratch([(sent, y)])[0] == pytest.approx((a0, a1), rel=1e-4)
    assert 1.8 < a0 < 3.0 and a1 < a0  # fresh weights near chance, and they learn
    assert p0 > a0  # the same fresh weights on 255x inputs: larger logits, larger loss
    for old, new in zip(before, state(model), strict=True):
        assert np.array_equal(old, new, equal_nan=True)


def test_the_exploding_gradient_trials_draw_a_standard_init_and_clip_then_restore():
    """A deep linear stack drawn with std 1 kernels: from a fresh draw of its own init
    the held-out loss is huge, from Keras's standard initializers it is near chance;
    the clipping trial cuts every weight's gradient; the model is left as it was."""
    import keras

    from gradhealth_server.engine.trial_steps import Trials

    x, y = models.digits()
    x, y = x[:ROWS], y[:ROWS]
    large = keras.initializers.RandomNormal(stddev=1.0)
    inputs = keras.Input((8, 8))
    h = keras.layers.Flatten()(inputs)
    for _ in range(6):
        h = keras.layers.Dense(32, kernel_initializer=large)(h)
    model = keras.Model(inputs, keras.layers.Dense(10, kernel_initializer=large)(h))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.optimizer.build(model.trainable_variables)  # as intake does for an unstepped one
    probe, _, _ = run_probe(model, x, y)
    before = state(model)
    trials = Trials(probe)
    sent = {probe.input_order[0]: x}
    (_, own), (_, standard) = trials.from_scratch([(sent, y), (sent, y)], (False, True))
    assert standard < 3.0 and own > 100 * standard
    clip = trials.clipped(sent, y, clipnorm=1.0)
    assert 7 <= clip.clipped_layers <= 14  # every kernel's gradient is above 1, some biases
    assert clip.loss_before == pytest.approx(trials.clipped(sent, y, 1.0).loss_before)
    assert clip.clipped_after != clip.as_is_after
    for old, new in zip(before, state(model), strict=True):
        assert np.array_equal(old, new, equal_nan=True)


def test_the_pairing_trial_scores_both_arms_by_the_remedied_loss_then_restores():
    """A linear output trained with a crossentropy that expects probabilities: trained
    with from_logits=True instead, a few steps bring the held-out loss (from logits)
    down, while the run as it is does not lower it; the model is left as it was."""
    import keras

    from gradhealth_server.engine.trial_steps import Trials
    from gradhealth_server.engine.trials import LossRemedy

    x, y = models.digits()
    x, y = x[:ROWS], y[:ROWS]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
         keras.layers.Dense(10)]
    )  # fmt: skip
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)  # Keras trains on it without a word
    probe, _, _ = run_probe(model, x, y)
    before = state(model)
    remedy = LossRemedy("from_logits=True", "sparse_categorical_crossentropy", from_logits=True)
    trial = Trials(probe).paired({probe.input_order[0]: x}, y, y, remedy)
    assert trial.scored_by == "sparse_categorical_crossentropy" and trial.steps == 5
    assert trial.as_is_after > trial.loss_before - 0.01  # the wrong loss: no progress
    assert trial.remedied_after < trial.loss_before - 0.03
    for old, new in zip(before, state(model), strict=True):
        assert np.array_equal(old, new, equal_nan=True)


def test_the_probe_and_the_trials_trace_without_autograph_as_keras_fit_does():
    """AutoGraph's conversion was most of a cold call; Keras 3's fit() does not use
    it either, so a layer branching on a tensor in Python cannot train at all.
    The probe and its trials trace plain: a trace converts none of their code."""
    from tensorflow.python.autograph.impl import api

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
    model.fit(x, y, epochs=1, verbose=0)
    converted = []
    original = api._convert_actual
    api._convert_actual = lambda entity, program_ctx: (
        converted.append(entity) or original(entity, program_ctx)
    )
    try:
        probe, _, m = run_probe(model, x, y)
        trial = Trials(probe).learning_rate({probe.input_order[0]: x}, y, (0.1, 1.0))
    finally:
        api._convert_actual = original
    assert np.isfinite(m.loss) and trial is not None and all(np.isfinite(trial.losses))
    assert converted == []


def test_the_learning_rate_trial_holds_out_each_half_in_turn():
    """Two folds: the held-out loss before the steps is the mean of both halves' loss
    (one split of a small batch alone decided verdicts), and the state is restored."""
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(65, 8)).astype("float32"), rng.integers(0, 3, 65)
    x[32:] *= 3.0  # the halves differ: their losses are far apart
    model.fit(x, y, epochs=1, verbose=0)
    before = state(model)
    probe, _, _ = run_probe(model, x, y)
    trial = Trials(probe).learning_rate({probe.input_order[0]: x}, y, (1.0, 10.0))

    def loss(rows: list[int]) -> float:
        return float(keras.losses.SparseCategoricalCrossentropy()(y[rows], model(x[rows])))

    # 65 rows: fold one trains on 0-31 and holds out 32-64; fold two trains on
    # 32-63 and holds out 64 and 0-31.
    second, first = loss(list(range(32, 65))), loss([64, *range(32)])
    assert abs(first - second) > 0.05
    assert trial.folds == 2 and trial.train_rows == 32 and trial.held_out_rows == 33
    assert trial.loss_before == pytest.approx((first + second) / 2, rel=1e-4)
    assert trial.losses[1] < trial.losses[0] < trial.loss_before  # SGD on a convex loss
    for old, new in zip(before, state(model), strict=True):
        assert np.array_equal(old, new)


def test_swapped_halves_trade_the_trained_and_the_held_out_rows():
    from gradhealth_server.intake.batch import swapped_halves

    x, y = {"a": np.arange(7.0)[:, None]}, [np.arange(7), np.arange(7) * 10]
    sx, (sy, sy10) = swapped_halves(x, y, 3)
    assert sx["a"][:, 0].tolist() == [3, 4, 5, 6, 0, 1, 2]
    assert sy.tolist() == [3, 4, 5, 6, 0, 1, 2] and sy10.tolist() == [30, 40, 50, 60, 0, 10, 20]
    trained, held = set(sy[:3]), set(sy[3:])  # the trial's split of the swapped batch
    assert trained == {3, 4, 5} and held == {6, 0, 1, 2} and not trained & held
