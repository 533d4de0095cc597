"""Shared fixtures: real Keras models trained on scikit-learn's digits.

Checkpoints are trained once per test session and saved under a session temp
directory; tests that mutate nothing share them.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path

import numpy as np
import pytest

from tests import models


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return models.digits()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> models.CheckpointFactory:
    return models.CheckpointFactory(Path(tmp_path_factory.mktemp("checkpoints")))


@pytest.fixture(scope="session")
def diagnoser():
    from gradhealth_server.diagnosis import Diagnoser

    return Diagnoser()
