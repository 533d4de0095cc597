"""Judging: pure functions from Measurements to Findings, one cause per module.

A rule never touches TensorFlow; it reads the plain numbers of
`engine.measurements`, so it is tested with hand-written values. To add a cause,
add a module with a `Rule` subclass and list it in `RULE_TYPES`.

The primary cause is the most likely *root* cause, not the loudest symptom:
`EXPLAINS` says which findings another finding accounts for (a too-high
learning rate kills ReLUs; dead ReLUs starve earlier layers of gradient), and
the primary is the strongest finding that nothing else present explains.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gradhealth_server.engine.facts import as_first_output
from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import ConfigError, Rule
from gradhealth_server.rules.context import Context, build_context, context_thresholds
from gradhealth_server.rules.dead_relu import DeadReluRule
from gradhealth_server.rules.exploding_gradients import ExplodingGradientsRule
from gradhealth_server.rules.history import NO_HISTORY, RunHistory
from gradhealth_server.rules.learning_rate_too_high import LearningRateTooHighRule
from gradhealth_server.rules.learning_rate_too_low import LearningRateTooLowRule
from gradhealth_server.rules.loss_mismatch import LossMismatchRule
from gradhealth_server.rules.non_finite import NonFiniteRule
from gradhealth_server.rules.prediction_collapse import PredictionCollapseRule
from gradhealth_server.rules.saturated_activation import SaturatedActivationRule
from gradhealth_server.rules.stalled import StalledRule
from gradhealth_server.rules.unchanged_weights import UnchangedWeightsRule
from gradhealth_server.rules.unnormalized_input import UnnormalizedInputRule
from gradhealth_server.rules.vanishing_gradients import VanishingGradientsRule
from gradhealth_server.verdict.findings import Cause, RuleFinding, RuleVerdict, Severity

RULE_TYPES: tuple[type[Rule], ...] = (
    NonFiniteRule,
    LossMismatchRule,
    LearningRateTooHighRule,
    LearningRateTooLowRule,
    UnnormalizedInputRule,
    VanishingGradientsRule,
    ExplodingGradientsRule,
    DeadReluRule,
    SaturatedActivationRule,
    PredictionCollapseRule,
    UnchangedWeightsRule,
    StalledRule,
)

_SYMPTOMS = {
    Cause.EXPLODING_GRADIENTS,
    Cause.VANISHING_GRADIENTS,
    Cause.DEAD_RELU,
    Cause.SATURATED_ACTIVATION,
    Cause.PREDICTION_COLLAPSE,
    Cause.NON_FINITE,
}
# cause -> the findings it accounts for when both are present. A stall is the
# visible effect of whatever root cause is found alongside it.
_STALL = {Cause.STALLED}
EXPLAINS: dict[Cause, frozenset[Cause]] = {
    Cause.LOSS_MISMATCH: frozenset(_SYMPTOMS | _STALL | {Cause.LEARNING_RATE_TOO_LOW}),
    Cause.LEARNING_RATE_TOO_HIGH: frozenset(_SYMPTOMS | _STALL),
    Cause.UNNORMALIZED_INPUT: frozenset(_SYMPTOMS | _STALL | {Cause.LEARNING_RATE_TOO_LOW}),
    Cause.LEARNING_RATE_TOO_LOW: frozenset(_STALL | {Cause.PREDICTION_COLLAPSE}),
    Cause.DEAD_RELU: frozenset(_STALL | {Cause.VANISHING_GRADIENTS, Cause.PREDICTION_COLLAPSE}),
    # Saturated units pass back almost no gradient, so larger steps look better in
    # the learning-rate trial; the saturation is what to fix.
    Cause.SATURATED_ACTIVATION: frozenset(
        _STALL | {Cause.VANISHING_GRADIENTS, Cause.PREDICTION_COLLAPSE, Cause.LEARNING_RATE_TOO_LOW}
    ),
    Cause.EXPLODING_GRADIENTS: frozenset(
        _STALL | {Cause.DEAD_RELU, Cause.SATURATED_ACTIVATION, Cause.PREDICTION_COLLAPSE}
    ),
    Cause.VANISHING_GRADIENTS: frozenset(_STALL | {Cause.PREDICTION_COLLAPSE}),
    Cause.NON_FINITE: frozenset(_STALL),
    Cause.PREDICTION_COLLAPSE: frozenset(_STALL),
    Cause.UNCHANGED_WEIGHTS: frozenset(_STALL | {Cause.PREDICTION_COLLAPSE}),
}


def build_rules(config: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[Rule, ...]:
    """Rules with operator overrides: {"dead_relu": {"dead_fraction": 0.7}, ...}."""
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError("the rules config must be an object of {rule: {threshold: value}}")
    config = dict(config or {})
    for name, overrides in config.items():
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"the config of {name!r} must be an object of thresholds")
    context_thresholds(dict(config.pop("context", {})))  # validate now, not mid-diagnosis
    known = {str(r.cause) for r in RULE_TYPES}
    unknown = set(config) - known
    if unknown:
        raise ConfigError(f"no rule named {', '.join(sorted(unknown))}; rules: {sorted(known)}")
    return tuple(r(**config.get(str(r.cause), {})) for r in RULE_TYPES)


def judge(
    m: Measurements,
    rules: tuple[Rule, ...] | None = None,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    history: RunHistory = NO_HISTORY,
) -> RuleVerdict:
    rules = rules or build_rules(config)
    thresholds = context_thresholds(dict((config or {}).get("context", {})))
    ctx = build_context(m, thresholds, history)
    findings: list[RuleFinding] = []
    for rule in rules:
        findings += _checked(rule, m, ctx)
    _name_the_output(findings, m.static.output_names)
    findings += _judge_other_outputs(m, rules, ctx)
    explained = _mark_explained(findings, [a.layer for a in m.activations])
    verdict = RuleVerdict.from_findings(findings, explained)
    _name_the_stall(verdict)
    return verdict


# Causes judged on the model's output, its loss and its labels: with several
# outputs these are the first output's (engine/facts.py), and say which it is.
OUTPUT_CAUSES = frozenset({Cause.LOSS_MISMATCH, Cause.PREDICTION_COLLAPSE})
# Those judged on every output, from its loss, its output layer and its labels.
PER_OUTPUT_CAUSES = frozenset({Cause.LOSS_MISMATCH})


def _checked(rule: Rule, m: Measurements, ctx: Context) -> list[RuleFinding]:
    """The rule's findings; an alarm without a trial says why none applies."""
    findings = rule.check(m, ctx)
    for finding in findings:
        if finding.severity is not Severity.INFO and not finding.trial:
            finding.trial = rule.no_trial or "no remedy trial applies to this cause"
    return findings


def _name_the_output(findings: list[RuleFinding], outputs: tuple[str, ...]) -> None:
    """On a multi-output model, a finding about the output names it."""
    if len(outputs) < 2:
        return
    for finding in findings:
        if finding.cause in OUTPUT_CAUSES:
            _name(finding, outputs[0])


def _name(finding: RuleFinding, output: str) -> None:
    finding.summary = f"output {output!r}: {finding.summary}"
    finding.evidence["output"] = output
    if output not in finding.layers:
        finding.layers = [output, *finding.layers]


def _judge_other_outputs(
    m: Measurements, rules: tuple[Rule, ...], ctx: Context
) -> list[RuleFinding]:
    """Each output after the first, judged on its own loss, output layer and labels
    by the rules that read those facts only (no output statistics: the probe
    measures the first output's)."""
    findings: list[RuleFinding] = []
    for output in m.static.other_outputs:
        view = replace(
            m,
            static=as_first_output(m.static, output),
            labels=m.other_output_labels.get(output.name),
            output=None,
            pairing_trial=None,  # tried on the first output's loss only
        )
        for rule in rules:
            if rule.cause in PER_OUTPUT_CAUSES:
                for finding in _checked(rule, view, ctx):
                    finding.layers = []  # the last weight layer is the first output's
                    _name(finding, output.name)
                    findings.append(finding)
    return findings


def _name_the_stall(verdict: RuleVerdict) -> None:
    """A stall explained by a root cause says so: "stalled: learning_rate_too_low"."""
    root = verdict.primary_cause
    for finding in verdict.findings:
        if finding.cause is Cause.STALLED and root and root is not Cause.STALLED:
            finding.summary = f"stalled: {root}: {finding.summary}"
            finding.evidence["root_cause"] = str(root)


def _mark_explained(findings: list[RuleFinding], order: list[str]) -> set[int]:
    """Indices of findings accounted for by another alarming finding."""
    alarming = [f for f in findings if f.severity is not Severity.INFO]
    explained: set[int] = set()
    for i, finding in enumerate(findings):
        # NaN weights hide everything downstream: they are never someone's symptom.
        if finding.cause is Cause.NON_FINITE and finding.confidence >= 1.0:
            continue
        causes = [
            other.cause
            for other in alarming
            if other is not finding and explains(other, finding, order)
        ]
        if causes:
            finding.explained_by = sorted(str(c) for c in causes)
            explained.add(i)
    return explained


def explains(cause: RuleFinding, symptom: RuleFinding, order: list[str]) -> bool:
    """Whether `cause` accounts for `symptom`: EXPLAINS, refined where severity or
    the layers' order decide it (docs/architecture.md, "the explains graph")."""
    pair = (cause.cause, symptom.cause)
    if pair == (Cause.DEAD_RELU, Cause.PREDICTION_COLLAPSE):
        # Only a layer dead as a whole cuts the input off; a partly dead one still
        # passes the signal through its live units.
        return cause.severity is Severity.CRITICAL
    if pair == (Cause.PREDICTION_COLLAPSE, Cause.DEAD_RELU):
        # Units an output collapsed onto its prior does not use go quiet (label noise,
        # heavy L2): a partly dead layer there is the effect.
        return symptom.severity is not Severity.CRITICAL
    if pair == (Cause.SATURATED_ACTIVATION, Cause.DEAD_RELU):
        # A saturated layer outputs a constant, so the ReLUs after it see nothing
        # that varies and stay off; ReLUs before it died of something else.
        return _first(cause.layers, order) < _first(symptom.layers, order)
    return symptom.cause in EXPLAINS.get(cause.cause, ())


def _first(layers: list[str], order: list[str]) -> int:
    """The earliest of `layers` in the model's order (unknown layers last)."""
    return min((order.index(name) for name in layers if name in order), default=len(order))


__all__ = ["EXPLAINS", "RULE_TYPES", "ConfigError", "Rule", "build_rules", "explains", "judge"]
