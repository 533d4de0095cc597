"""Verdicts on the labelled scenario suite: every cause named on its own runs,
no alarm on any healthy run. Each scenario is its own test case."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenarios import SCENARIOS, save_run, train_cached


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return Path(tmp_path_factory.mktemp("scenarios"))


def _diagnose(diagnoser, workdir: Path, name: str):
    checkpoint, batch = save_run(train_cached(name), workdir, name)
    return diagnoser.diagnose(checkpoint, batch)


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS if s.cause], ids=str)
def test_faulty_run_gets_its_cause_as_primary(diagnoser, workdir, name):
    expected = next(s.cause for s in SCENARIOS if s.name == name)
    verdict = _diagnose(diagnoser, workdir, name).verdict
    summary = [(str(f.cause), str(f.severity), f.summary) for f in verdict.findings]
    assert verdict.status in ("warning", "critical"), summary
    assert str(verdict.primary_cause) == expected, summary
    primary = verdict.findings[0]
    assert primary.remedy and primary.evidence


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS if not s.cause], ids=str)
def test_healthy_run_raises_no_alarm(diagnoser, workdir, name):
    verdict = _diagnose(diagnoser, workdir, name).verdict
    alarms = [(str(f.cause), f.summary) for f in verdict.findings if str(f.severity) != "info"]
    assert verdict.status == "healthy" and not alarms, alarms
    assert verdict.primary_cause is None
