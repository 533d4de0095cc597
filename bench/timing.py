"""Side-by-side timing: candidates interleaved round-robin, reported as ratios.

These machines are noisy, so absolute times mean little; interleaving the
candidates inside each repetition makes their ratio robust to drift.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Ratio:
    name: str
    median: float
    low: float
    high: float
    seconds: float  # median time per call of the candidate

    def to_dict(self) -> dict[str, float | str]:
        return {
            "name": self.name,
            "median": round(self.median, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
            "seconds": self.seconds,
        }


def side_by_side(
    baseline: Callable[[], object],
    candidates: dict[str, Callable[[], object]],
    repetitions: int = 7,
    calls: int = 20,
) -> list[Ratio]:
    """Ratios candidate/baseline: median and range over repetitions."""
    everything = {"baseline": baseline, **candidates}
    for fn in everything.values():  # warm-up: compile, caches
        fn()
        fn()
    per_rep: dict[str, list[float]] = {name: [] for name in everything}
    for _ in range(repetitions):
        for name, fn in everything.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            per_rep[name].append((time.perf_counter() - start) / calls)
    base = per_rep["baseline"]
    ratios = []
    for name in candidates:
        r = [c / b for c, b in zip(per_rep[name], base, strict=True)]
        ratios.append(
            Ratio(name, statistics.median(r), min(r), max(r), statistics.median(per_rep[name]))
        )
    return ratios
