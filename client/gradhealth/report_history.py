"""A run's verdicts as the series `gradhealth report` draws: steps, losses,
accuracies, per-layer gradient norms and update ratios, findings, the run's
state. Reads only the public API's Verdicts."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradhealth.verdicts import Verdict, run_to_dict


class ReportError(ValueError):
    """Nothing to draw; the message is one line."""


def number(value: Any) -> float:
    """A measurement as a float: NaN when absent, inf for the strings the
    engine writes for non-finite values."""
    if isinstance(value, bool) or value is None:
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


@dataclass
class RunHistory:
    """The numbers of a run, one column per checkpoint, oldest first."""

    run_id: str
    steps: list[int]
    times: list[dt.datetime]
    statuses: list[str]
    primary: list[str | None]
    loss: np.ndarray
    accuracy: np.ndarray
    reported_loss: np.ndarray
    reported_accuracy: np.ndarray
    layers: list[str]
    grad_norm: np.ndarray  # layers x checkpoints
    update_ratio: np.ndarray  # layers x checkpoints
    findings: list[
        list[tuple[str, str, tuple[str, ...]]]
    ]  # per checkpoint: cause, severity, layers
    verdicts: list[Verdict] = field(repr=False, default_factory=list)

    @classmethod
    def from_verdicts(cls, run_id: str, verdicts: Sequence[Verdict]) -> RunHistory:
        ordered = sorted(verdicts, key=lambda v: (v.step, v.created))
        if not ordered:
            raise ReportError(f"run {run_id!r} has no verdicts to draw")
        measured = [v.measurements for v in ordered]
        layers: list[str] = []
        for m in measured:
            for layer in m.get("layers") or []:
                if layer.get("name") not in layers:
                    layers.append(layer.get("name"))
        grad = np.full((len(layers), len(ordered)), np.nan)
        ratio = np.full((len(layers), len(ordered)), np.nan)
        row = {name: i for i, name in enumerate(layers)}
        for j, m in enumerate(measured):
            for layer in m.get("layers") or []:
                i = row[layer.get("name")]
                # "nan" and "inf" (the engine's JSON for them) both draw as non-finite
                norm = number(layer.get("grad_norm"))
                grad[i, j] = np.inf if isinstance(layer.get("grad_norm"), str) else norm
                ratio[i, j] = number(layer.get("update_ratio"))
        reported = [v.proto.training_metrics for v in ordered]
        return cls(
            run_id=run_id,
            steps=[v.step for v in ordered],
            times=[v.created for v in ordered],
            statuses=[v.status or "?" for v in ordered],
            primary=[v.primary_cause for v in ordered],
            loss=np.array([number(m.get("loss")) for m in measured]),
            accuracy=np.array([number(m.get("accuracy")) for m in measured]),
            reported_loss=np.array([t.loss if t.HasField("loss") else math.nan for t in reported]),
            reported_accuracy=np.array(
                [t.accuracy if t.HasField("accuracy") else math.nan for t in reported]
            ),
            layers=layers,
            grad_norm=grad,
            update_ratio=ratio,
            findings=[
                [(f.cause or "?", f.severity or "info", f.layers) for f in v.findings]
                for v in ordered
            ],
            verdicts=list(ordered),
        )


def state_line(run: Any | None) -> str:
    if run is None:
        return ""
    info = run_to_dict(run)
    state = info["state"]
    if state == "active":
        return "state: active"
    text = f"state: {state}"
    if info.get("end_time"):
        text += f" at {info['end_time'][:19].replace('T', ' ')} UTC"
    if info.get("stop_cause"):
        text += f" by {info['stop_cause']}"
    if info.get("end_reason"):
        text += f" ({info['end_reason']})"
    return text
