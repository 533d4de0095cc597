"""A run's past, as the rules see it: one summary per earlier checkpoint.

Plain data, no database types: the store builds it, the worker's rules read it
(the `stalled` and `unchanged_weights` causes are only visible across checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


NO_HISTORY = RunHistory(run_id="")
