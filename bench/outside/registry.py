"""The registry of the outside runs: `@run(...)` records a run's function and its label."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

RUNS: dict[str, dict[str, Any]] = {}


def run(
    label: str = "healthy",
    twin: str | None = None,
    accept: tuple[str, ...] | list[str] = (),
    note: str = "",
    evaluated: bool = True,
) -> Callable[[Callable[[], dict[str, Any]]], Callable[[], dict[str, Any]]]:
    """Register a run. label: intended cause (or 'healthy'); accept: other
    causes an evaluator could fairly count as right for this fault."""

    def deco(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        RUNS[fn.__name__] = dict(
            fn=fn, label=label, twin=twin, accept=list(accept), note=note, evaluated=evaluated
        )
        return fn

    return deco


def all_runs() -> dict[str, dict[str, Any]]:
    """Every run, healthy ones first, in the order they were written.

    A run's training seed is its index among the sorted names: adding, removing or renaming
    a run changes the seeds of others, so the saved runs would have to be trained again.
    """
    for module in ("healthy", "healthy_synthetic", "faulty"):  # importing one registers its runs
        importlib.import_module(f"bench.outside.{module}")
    return RUNS
