"""A run's past, as the rules see it: one summary per earlier checkpoint.

Plain data, no database types: the store builds it, the worker's rules read it
(the `stalled` and `unchanged_weights` causes are only visible across checkpoints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from gradhealth_server.engine.measurements import Measurements


@dataclass(frozen=True)
class CheckpointColumns:
    """What the store keeps of one checkpoint's measurements, for the history rules
    and the per-run gauges: typed values the worker takes from Measurements, not
    keys read back out of the verdict's JSON (renaming a measurement field cannot
    silently empty them)."""

    batch_accuracy: float | None = None
    batch_loss: float | None = None
    grad_norm: float | None = None
    weight_digests: dict[str, str] = field(default_factory=dict)  # layer -> digest

    @classmethod
    def of(cls, m: Measurements) -> CheckpointColumns:
        return cls(_finite(m.accuracy), _finite(m.loss), _finite(m.grad_norm), m.weight_digests)


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class CheckpointSummary:
    step: int
    fingerprint: str
    batch_accuracy: float | None  # measured by the probe on the sample batch
    batch_loss: float | None
    reported_accuracy: float | None  # what the training job reported, if it did
    reported_loss: float | None
    weight_digests: dict[str, str] = field(default_factory=dict)  # layer -> digest
    primary_cause: str | None = None


@dataclass(frozen=True)
class RunHistory:
    run_id: str
    past: tuple[CheckpointSummary, ...] = ()  # oldest first, before the current one
    current_step: int | None = None
    reported_accuracy: float | None = None  # the current call's, from its header
    reported_loss: float | None = None

    @property
    def previous(self) -> CheckpointSummary | None:
        return self.past[-1] if self.past else None

    def of_model(self, fingerprint: str) -> RunHistory:
        """Only this architecture's checkpoints (a run id may be reused for another
        model), before the current step, in step order, one per step (the latest)."""
        by_step: dict[int, CheckpointSummary] = {}
        for checkpoint in self.past:  # oldest first: a later row for a step wins
            if checkpoint.fingerprint == fingerprint and (
                self.current_step is None or checkpoint.step < self.current_step
            ):
                by_step[checkpoint.step] = checkpoint
        return replace(self, past=tuple(by_step[s] for s in sorted(by_step)))


NO_HISTORY = RunHistory(run_id="")
