"""Reading a layer's initializer without its weights: seeded draws of the same shape.

Both frozen_at_init (engine/weights.py) and the init trigger (engine/init_gain.py)
ask what a layer's initializer would draw; a custom initializer that cannot be
re-drawn means "cannot tell", never a failed diagnosis.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def seeded_draws(initializer: Any, shape: tuple[int, ...], at_least: int) -> np.ndarray | None:
    """Values the initializer draws for `shape`, seeds 0, 1, … until there are at
    least `at_least` (deterministic, and enough for a small layer); None when it
    cannot be re-drawn from its config."""
    try:
        config = initializer.get_config()
        draws = []
        for seed in range(max(1, -(-at_least // max(math.prod(shape), 1)))):
            seeded = type(initializer).from_config({**config, "seed": seed})
            draws.append(np.asarray(seeded(shape, dtype="float32")).ravel())
    except Exception:  # a custom initializer that cannot be re-drawn: cannot tell
        return None
    return np.concatenate(draws)
