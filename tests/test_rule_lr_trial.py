"""learning_rate_too_low judged by its trial: thresholds, severity and the trial text."""

from __future__ import annotations

import dataclasses

import pytest

from gradhealth_server.engine.measurements import LearningRateTrial
from gradhealth_server.rules import build_rules, judge
from gradhealth_server.rules.learning_rate_too_low import LearningRateTooLowRule
from gradhealth_server.verdict.findings import Cause, Severity
from tests.measurement_builder import activation, healthy

T = LearningRateTooLowRule.Thresholds()


def trial(g1: float, g10: float, g30: float, before: float = 2.0) -> LearningRateTrial:
    """A trial whose held-out gains at 1x/3x/10x/30x are the given ones."""
    g3 = (g1 + g10) / 2
    return LearningRateTrial(
        steps=5,
        train_rows=128,
        held_out_rows=128,
        loss_before=before,
        scales=[1.0, 3.0, 10.0, 30.0],
        losses=[before - g1, before - g3, before - g10, before - g30],
    )


def lr_low(m) -> list:
    return [f for f in judge(m).findings if f.cause is Cause.LEARNING_RATE_TOO_LOW]


def slow(g1=0.004, g10=0.04, g30=0.12, **kw):
    """A run that learns (its accuracy is well above chance) with a proportional trial."""
    return healthy(lr_trial=trial(g1, g10, g30), **kw)


def test_a_proportional_trial_is_a_warning_with_the_measured_effect():
    (f,) = lr_low(slow())
    assert f.severity is Severity.WARNING
    assert f.evidence["suggested_learning_rate"] == pytest.approx(1e-2)
    assert "held-out loss after 5 steps is 1.96 against 2 as-is" in f.trial
    assert judge(slow()).primary_cause is Cause.LEARNING_RATE_TOO_LOW


@pytest.mark.parametrize(
    ("ratio", "fires"), [(T.gain_10x * 1.02, True), (T.gain_10x * 0.98, False)]
)
def test_the_10x_gain_threshold(ratio, fires):
    assert bool(lr_low(slow(g1=0.004, g10=0.004 * ratio, g30=0.004 * ratio * 3))) is fires


@pytest.mark.parametrize(
    ("ratio", "fires"), [(T.gain_30x * 1.02, True), (T.gain_30x * 0.98, False)]
)
def test_the_30x_gain_threshold(ratio, fires):
    # Curvature bends the gain before 30x: the rate is near its best, not far below it.
    assert bool(lr_low(slow(g1=0.004, g10=0.04, g30=0.04 * ratio))) is fires


@pytest.mark.parametrize(("share", "fires"), [(1.1e-5, True), (0.9e-5, False)])
def test_the_gain_must_be_real(share, fires):
    g30 = share * 2.0
    assert bool(lr_low(slow(g1=g30 / 30, g10=g30 / 3, g30=g30))) is fires


def test_a_run_that_barely_moves_is_critical():
    (f,) = lr_low(slow(g1=0.0005, g10=0.005, g30=0.015))
    assert f.severity is Severity.CRITICAL


def test_a_trial_that_contradicts_is_not_emitted_even_when_the_rate_is_tiny():
    # The rate is below Adam's usual range and the one-step probe agrees, but the
    # trial shows 10x is no better than 1x: no finding.
    m = healthy(
        static={"learning_rate": 1e-7},
        lr_trial=trial(0.01, 0.011, 0.012),
    )
    assert not lr_low(m)


def test_a_converged_run_is_quiet_whatever_the_trial():
    assert not lr_low(slow(loss=0.01))


@pytest.mark.parametrize(("dead", "fires"), [(0.9, False), (0.85, True)])
def test_behind_a_dead_layer_the_trial_does_not_speak_for_the_rate(dead, fires):
    """A net whose hidden ReLUs never fire: only the head learns, and its gain grows
    with the rate whatever the rate is (the dead units are the finding)."""
    activations = [activation("dense", dead_fraction=dead), activation("dense_1", mean=0.4)]
    assert bool(lr_low(slow(g1=0.0, activations=activations))) is fires


def test_the_rule_proposes_the_trial_from_the_one_step_probe():
    rule = next(r for r in build_rules({}) if isinstance(r, LearningRateTooLowRule))
    m = healthy()
    tiny_steps = dataclasses.replace(m.optimizer, base_loss=2.3, lr_losses=[2.2999, 2.299, 2.28])
    assert rule.proposes(dataclasses.replace(m, optimizer=tiny_steps))
    curved = dataclasses.replace(m.optimizer, base_loss=2.3, lr_losses=[2.299, 2.29, 2.295])
    assert not rule.proposes(dataclasses.replace(m, optimizer=curved))
