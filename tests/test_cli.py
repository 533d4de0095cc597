"""`gradhealth diagnose` in embedded mode, run as a user would (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from gradhealth_server.engine.device import xla_by_default
from tests import models

ROWS = 128


def gradhealth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gradhealth.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    x, y = models.digits()
    path = tmp_path_factory.mktemp("cli") / "batch.npz"
    np.savez(path, x=x[:ROWS], y=y[:ROWS])
    return path


@pytest.fixture(scope="module")
def diverged(tmp_path_factory) -> Path:
    """A real run that diverged: SGD at lr=0.1 on 0-255 pixels ends in NaN weights."""
    x, y = models.digits(scale=16.0)
    keras.utils.set_random_seed(3)
    model = models.leaky_mlp()
    model.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    assert not np.isfinite(history.history["loss"][-1])  # the symptom is real
    path = tmp_path_factory.mktemp("cli") / "diverged.keras"
    model.save(path)
    return path


def test_json_output_shape(checkpoints, batch):
    done = gradhealth("diagnose", checkpoints.path("cnn"), "--batch", batch, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # exactly one JSON object
    assert {"status", "primary_cause", "findings", "measurements"} <= result.keys()
    assert result["status"] in ("healthy", "warning", "critical")
    m = result["measurements"]
    assert m["rows"] == ROWS and len(m["layers"]) == 4 and m["loss"] > 0
    # XLA where it pays: on a GPU; the plain graph on a CPU (engine/device.py).
    assert m["xla"] is xla_by_default()


def test_nonfinite_checkpoint_is_critical(diverged, batch):
    done = gradhealth("diagnose", diverged, "--batch", batch, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "critical"
    assert result["primary_cause"] == "non_finite"
    finding = result["findings"][0]
    assert finding["cause"] == "non_finite" and finding["severity"] == "critical"
    assert finding["evidence"]["nonfinite_weights"] > 0
    assert finding["layers"] == [finding["evidence"]["first_nonfinite_layer"]]
    assert {"cause", "severity", "layers", "evidence", "remedy"} <= finding.keys()
    assert "clipnorm=1.0" in finding["remedy"]


def test_readable_table(diverged, batch):
    done = gradhealth("diagnose", diverged, "--batch", batch)
    assert done.returncode == 0, done.stderr
    assert "CRITICAL" in done.stdout and "non_finite" in done.stdout
    assert done.stdout.index("non_finite") < done.stdout.index("Layers")


@pytest.mark.parametrize("case", ["not-a-zip", "missing", "bad-batch"])
def test_bad_files_exit_2_with_one_line(tmp_path, checkpoints, batch, case):
    if case == "not-a-zip":
        bogus = tmp_path / "x.keras"
        bogus.write_text("hello")
        args = (bogus, "--batch", batch)
    elif case == "missing":
        args = (tmp_path / "nope.keras", "--batch", batch)
    else:
        bad = tmp_path / "bad.npz"
        np.savez(bad, x=np.zeros((4, 3)), y=np.zeros(4))
        args = (checkpoints.path("cnn"), "--batch", bad)
    done = gradhealth("diagnose", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradhealth: error: "), done.stderr
    assert "Traceback" not in done.stderr


def test_rules_config_overrides_and_bad_configs(tmp_path, checkpoints, batch):
    good = tmp_path / "rules.json"
    good.write_text('{"dead_relu": {"dead_fraction": 0.7}}')
    done = gradhealth(
        "diagnose", checkpoints.path("cnn"), "--batch", batch, "--json", "--rules-config", good
    )
    assert done.returncode == 0, done.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"dead_relu": {"dead_ratio": 0.7}}')
    done = gradhealth("diagnose", checkpoints.path("cnn"), "--batch", batch, "--rules-config", bad)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "gradhealth: error: rule dead_relu has no threshold dead_ratio; "
        "it has critical_fraction, dead_fraction, min_units"
    )
