"""Is a run's label true? A pure function of its measures and its twin's.

A faulty run keeps its label only when its symptom shows against the healthy twin it was
derived from (same family, data set, optimizer; the one fault removed) and, for the causes
with a visible mechanism, when the mechanism is there. A run that went NaN is relabelled
`non_finite`; anything else whose symptom does not show is dropped. A healthy run is kept
only if it really learns (or, for the traps, really is what it claims: converged, early).
"""

from __future__ import annotations

import math
from typing import Any

HEALTHY = "healthy"
GAP = {"regression": 0.3}  # quality gap to the twin (R^2); 0.2 for accuracies
DEFAULT_GAP = 0.2
MECHANISM_GAP = 0.1  # dead/saturated: the mechanism is checked, the gap may be smaller
LEARNS = {"multiclass": 0.85, "binary": 0.85, "multilabel": 0.88, "regression": 0.4}
HUGE_LOSS = 1e3
ONE_CLASS = 0.9
DEAD = 0.5  # some ReLU layer with at least this share of units that never fire
SATURATED = 0.9  # some sigmoid/tanh layer with this share of outputs at the flat ends


def decide(
    label: str, trap: str, m: dict[str, Any], twin: dict[str, Any] | None
) -> tuple[str | None, str]:
    """(final label or None to drop, the reason)."""
    q = m.get("quality")
    if not m["finite"]:
        if label == HEALTHY:
            return None, "healthy run went NaN"
        return "non_finite", "loss or weights NaN/inf" + (
            "" if label == "non_finite" else f" (relabelled from {label})"
        )
    if label == "non_finite":
        return None, "stayed finite"
    if label == HEALTHY:
        return _healthy(trap, m, twin)
    if twin is None:
        return None, "no healthy twin to compare with"
    if twin.get("final") != HEALTHY:
        return None, "its twin did not verify healthy"
    tq = twin["quality"]
    gap = GAP.get(m["task"], DEFAULT_GAP)
    below = q is not None and not math.isnan(q) and q <= tq - gap
    gap_text = f"quality {q:.3f} vs twin {tq:.3f}"
    if label == "exploding_gradients":
        ok = m["loss_last"] >= HUGE_LOSS
        return (label if ok else None), f"final loss {m['loss_last']:.3g} (huge >= {HUGE_LOSS:g})"
    if label == "prediction_collapse":
        share, truth = m.get("pred_top_share", 0), m.get("label_top_share", 1)
        ok = share >= ONE_CLASS and truth <= 0.6
        return (label if ok else None), f"one class predicted on {share:.0%} of the batch"
    if label == "dead_relu":
        dead = m.get("dead_max") or 0
        ok = dead >= DEAD and q <= tq - MECHANISM_GAP
        return (label if ok else None), f"dead share {dead:.0%}, {gap_text}"
    if label == "saturated_activation":
        sat = m.get("sat_max") or 0
        ok = sat >= SATURATED and q <= tq - MECHANISM_GAP
        return (label if ok else None), f"saturated share {sat:.0%}, {gap_text}"
    # lr too high / too low, unnormalized input, vanishing gradients, loss mismatch
    return (label if below else None), gap_text + f" (needs {gap} below)"


def _healthy(trap: str, m: dict[str, Any], twin: dict[str, Any] | None) -> tuple[str | None, str]:
    q, task = m["quality"], m["task"]
    if trap == "early":
        falling = m["loss_last"] < m["loss_first"]
        behind = twin is not None and twin.get("final") == HEALTHY and q < twin["quality"] - 0.1
        ok = falling and behind
        return (HEALTHY if ok else None), f"early: loss falling {falling}, behind twin {behind}"
    if trap == "converged":
        ok = m["loss_last"] < 0.01 and q >= 0.99
        return (HEALTHY if ok else None), f"converged: loss {m['loss_last']:.3g}, quality {q:.3f}"
    if (m.get("dead_max") or 0) >= 0.9 or (m.get("sat_max") or 0) >= SATURATED:
        return None, "a healthy run with a mostly dead or saturated layer"
    ok = q >= LEARNS[task]
    return (HEALTHY if ok else None), f"quality {q:.3f} (learns >= {LEARNS[task]})"
