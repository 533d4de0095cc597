"""Judging: pure functions from Measurements to Findings, one cause per module.

A rule never touches TensorFlow; it reads the plain numbers of
`engine.measurements` so it can be tested with hand-written values. Add a
cause by adding a module with a `Rule` subclass and listing it in `RULES`.
"""

from __future__ import annotations

from gradhealth_server.engine.measurements import Measurements
from gradhealth_server.rules.base import Rule
from gradhealth_server.rules.non_finite import NonFiniteRule
from gradhealth_server.verdict import Finding, Verdict

RULES: tuple[Rule, ...] = (NonFiniteRule(),)


def judge(measurements: Measurements, rules: tuple[Rule, ...] = RULES) -> Verdict:
    findings: list[Finding] = []
    for rule in rules:
        findings.extend(rule.check(measurements))
    return Verdict.from_findings(findings)


__all__ = ["RULES", "Rule", "judge"]
