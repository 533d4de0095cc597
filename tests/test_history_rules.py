"""stalled and unchanged_weights with plain numbers: a run's past, one checkpoint
at a time. No TensorFlow here."""

from __future__ import annotations

import pytest

from gradhealth_server.rules import judge
from gradhealth_server.rules.history import CheckpointSummary, RunHistory
from tests.measurement_builder import healthy, stuck

DIGESTS = {"dense": "a1", "dense_1": "b1", "dense_2": "c1"}


def past(accuracies, digests=DIGESTS, reported=None, losses=None, start=100):
    return tuple(
        CheckpointSummary(
            step=start + 100 * i,
            fingerprint="f",
            batch_accuracy=a,
            batch_loss=(losses[i] if losses else 2.3),
            reported_accuracy=(reported[i] if reported else None),
            reported_loss=None,
            weight_digests={k: f"{v}-{i}" for k, v in digests.items()},
        )
        for i, a in enumerate(accuracies)
    )


def history(checkpoints, step=None, **kw):
    step = step if step is not None else (checkpoints[-1].step + 100 if checkpoints else 100)
    return RunHistory("run", checkpoints, current_step=step, **kw)


def findings(m, h):
    verdict = judge(m, history=h)
    return {str(f.cause): f for f in verdict.findings}, verdict


def test_flat_accuracy_near_chance_is_a_critical_stall():
    found, verdict = findings(stuck(), history(past([0.1, 0.105, 0.095, 0.1])))
    assert str(found["stalled"].severity) == "critical"
    assert found["stalled"].evidence["values"] == [0.1, 0.105, 0.095, 0.1, 0.1]
    assert str(verdict.primary_cause) == "stalled"


@pytest.mark.parametrize(
    ("accuracies", "fires"),
    [([0.1, 0.1, 0.1, 0.12], True), ([0.1, 0.1, 0.1, 0.121], False), ([0.1, 0.12], False)],
)
def test_stall_needs_the_whole_window_flat_within_delta(accuracies, fires):
    found, _ = findings(stuck(), history(past(accuracies)))
    assert ("stalled" in found) is fires


def test_a_plateau_well_above_chance_is_only_info():
    found, verdict = findings(healthy(), history(past([0.92, 0.92, 0.92, 0.92])))
    assert str(found["stalled"].severity) == "info"
    assert verdict.status == "healthy"


def test_a_rising_or_converged_run_is_not_stalled():
    assert "stalled" not in findings(stuck(), history(past([0.1, 0.2, 0.3, 0.4])))[0]
    converged = healthy(accuracy=0.999, loss=0.01)
    assert "stalled" not in findings(converged, history(past([0.999] * 4)))[0]


def test_repeated_steps_are_not_a_run_moving_forward():
    checkpoints = past([0.1] * 4)
    assert "stalled" not in findings(stuck(), history(checkpoints, step=checkpoints[-1].step))[0]


def test_the_reported_accuracy_is_preferred_when_every_checkpoint_has_it():
    # The sample batch says flat, the job's own accuracy over many batches rises.
    h = history(past([0.1] * 4, reported=[0.2, 0.3, 0.4, 0.5]), reported_accuracy=0.6)
    assert "stalled" not in findings(stuck(), h)[0]


def test_a_stall_names_its_root_cause():
    m = stuck(static={"learning_rate": 1e-7})  # a tiny step the lr probe shows helps
    from tests.measurement_builder import OptimizerStep

    m.optimizer = OptimizerStep(
        "Adam", 1e-7, 1e-9, 9e-9, 2.3, [0.1, 1.0, 10.0], [2.3, 2.29999, 2.2999], iterations=500
    )
    found, verdict = findings(m, history(past([0.1] * 4)))
    assert str(verdict.primary_cause) == "learning_rate_too_low"
    assert found["stalled"].summary.startswith("stalled: learning_rate_too_low")
    assert found["stalled"].explained_by == ["learning_rate_too_low"]


def test_weights_identical_to_the_previous_checkpoint():
    checkpoints = past([0.1] * 2)
    m = stuck(weight_digests=dict(checkpoints[-1].weight_digests))
    found, _ = findings(m, history(checkpoints))
    assert str(found["unchanged_weights"].severity) == "critical"
    assert found["unchanged_weights"].layers == ["dense", "dense_1", "dense_2"]


def test_some_layers_identical_is_a_warning_naming_them():
    checkpoints = past([0.1] * 2)
    digests = dict(checkpoints[-1].weight_digests, dense_2="changed")
    found, _ = findings(stuck(weight_digests=digests), history(checkpoints))
    assert str(found["unchanged_weights"].severity) == "warning"
    assert found["unchanged_weights"].layers == ["dense", "dense_1"]


def test_changed_weights_or_the_same_step_raise_nothing():
    checkpoints = past([0.1] * 2)
    assert (
        "unchanged_weights" not in findings(stuck(weight_digests=DIGESTS), history(checkpoints))[0]
    )
    same = dict(checkpoints[-1].weight_digests)
    h = history(checkpoints, step=checkpoints[-1].step)
    assert "unchanged_weights" not in findings(stuck(weight_digests=same), h)[0]


def test_history_thresholds_are_configurable():
    config = {"stalled": {"window": 3, "accuracy_delta": 0.05}}
    verdict = judge(stuck(), config=config, history=history(past([0.1, 0.14])))
    assert "stalled" in {str(f.cause) for f in verdict.findings}


def test_early_checkpoints_are_not_stalled():
    from tests.measurement_builder import OptimizerStep

    m = stuck()
    m.optimizer = OptimizerStep(
        "Adam", 1e-3, 1e-3, 9e-3, 2.3, [0.1, 1.0, 10.0], [2.3, 2.29, 2.31], iterations=20
    )
    checkpoints = past([0.1] * 4, start=4)
    assert "stalled" not in findings(m, history(checkpoints))[0]


def test_a_flat_loss_without_accuracy_is_only_a_plateau():
    regression = healthy(accuracy=None, loss=0.3, static={"problem": "regression"})
    checkpoints = past([None] * 4, losses=[0.3, 0.301, 0.299, 0.3])
    found, verdict = findings(regression, history(checkpoints))
    assert str(found["stalled"].severity) == "info"
    assert verdict.status == "healthy"


def test_non_finite_reported_accuracy_is_not_a_series():
    h = history(past([0.1, 0.2, 0.3, 0.4], reported=[0.1] * 4), reported_accuracy=float("nan"))
    assert "stalled" not in findings(stuck(), h)[0]  # the batch series rises


def test_a_reused_run_id_compares_only_the_same_architecture():
    older = past([0.1] * 4)
    other = tuple(
        CheckpointSummary(c.step, "other-model", c.batch_accuracy, c.batch_loss, None, None)
        for c in older
    )
    h = history(other).of_model("f")
    assert h.past == ()
    assert "stalled" not in findings(stuck(), h)[0]
