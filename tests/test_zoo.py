"""The cheapest of bench/zoo.py's models, trained in-process until they learn and
diagnosed: each healthy one comes back healthy (no warning or critical finding),
the faulty one is named right. The whole zoo: `python -m bench.zoo`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from bench import zoo
from gradhealth_server.diagnosis import Diagnoser

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def diagnoser() -> Diagnoser:
    return Diagnoser()


def _alarms(diagnosis) -> list[str]:
    return [
        f"{f.cause} {f.severity}: {f.summary}"
        for f in diagnosis.verdict.findings
        if str(f.severity) != "info"
    ]


@pytest.mark.parametrize("name", ["lstm", "embedding"])
def test_healthy_zoo_model_is_healthy(tmp_path, diagnoser, name):
    meta = zoo.prepare(name, tmp_path)
    assert min(meta["scores"].values()) >= 0.9, meta["scores"]  # it learned
    d = diagnoser.diagnose(tmp_path / "model.keras", tmp_path / "batch.npz")
    assert d.verdict.status == "healthy", _alarms(d)


def test_wrong_loss_is_named(tmp_path, diagnoser):
    zoo.prepare("faulty_wrong_loss", tmp_path)
    d = diagnoser.diagnose(tmp_path / "model.keras", tmp_path / "batch.npz")
    assert d.verdict.status != "healthy"
    assert str(d.verdict.primary_cause) == "loss_mismatch", _alarms(d)


def test_a_mirrored_strategy_run_is_probed_with_its_state(tmp_path, diagnoser):
    """Trained under tf.distribute.MirroredStrategy over two logical CPUs (in a fresh
    process: logical devices are set before TensorFlow starts), saved, diagnosed here
    on one device: healthy, at the step count fit() reached, its momentum restored."""
    subprocess.run(
        [sys.executable, "-m", "bench.zoo", "--prepare", "mirrored_mlp", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["replicas"] == 2 and meta["scores"]["output_accuracy"] >= 0.9
    d = diagnoser.diagnose(tmp_path / "model.keras", tmp_path / "batch.npz")
    assert d.verdict.status == "healthy", _alarms(d)
    steps = meta["epochs"] * math.ceil(meta["train_rows"] / 64)
    assert d.measurements.optimizer is not None and d.measurements.optimizer.iterations == steps
    assert "optimizer_state" not in d.measurements.unavailable
