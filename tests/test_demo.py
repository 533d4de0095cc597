"""`gradhealth demo` end to end: its own service, two real training runs, the fix
taken from the verdict, as a user runs it from a terminal."""

from __future__ import annotations

import re

import pytest

from tests.service import cli

FIXES = {
    "pixels": ("unnormalized_input", "applying: x = x / 255.0"),
    "learning-rate": ("learning_rate_too_high", "applying: Adam(learning_rate="),
}


@pytest.mark.parametrize("bug", sorted(FIXES))
def test_demo_names_the_bug_and_the_fix_makes_the_run_healthy(bug):
    done = cli("demo", "--bug", bug, "--epochs", "6", token=None)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    cause, applied = FIXES[bug]
    verdict_panel = out[out.index("the verdict") :]
    assert cause in verdict_panel.split("prescribed fix")[0]
    assert applied in out
    # Every checkpoint of the buggy run is alarming, the fixed run's last one healthy.
    broken, fixed = out.split("2. with the fix")
    broken_lines = re.findall(r"step +(\d+)  (\w+)", broken)
    fixed_lines = re.findall(r"step +(\d+)  (\w+)", fixed)
    # The callback skips a checkpoint while the previous diagnosis still runs (the
    # first one compiles the probe and, on a broken run, its trials): at least 3 of 6.
    assert len(broken_lines) >= 3 and len(fixed_lines) >= 3
    assert {status for _, status in broken_lines} == {"critical"}
    assert max(fixed_lines, key=lambda line: int(line[0]))[1] == "healthy"
    before, after = map(
        float, re.search(r"accuracy ([\d.]+)% as written -> ([\d.]+)%", out).groups()
    )
    assert before < 30 and after > 80
    assert "the fixed run is healthy" in out
    assert "Traceback" not in done.stderr and "UserWarning" not in done.stderr


def test_demo_refuses_too_few_epochs():
    done = cli("demo", "--epochs", "2", token=None)
    assert done.returncode == 2
    assert "--epochs must be at least 5" in done.stderr
