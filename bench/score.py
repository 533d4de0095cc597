"""Scoring verdicts against labels: shared by the scenario suite and the corpus.

An `Outcome` is one diagnosed run. `score` gives the confusion matrix (expected cause x
primary cause; "error" when the service refused or failed), per-cause precision and
recall, top-1 on the faulty runs (an error is a miss), the false-alarm rate on the
healthy runs (any warning or critical finding; an error is counted apart, not as an
alarm), the errors, the confidence calibration and the figures per family.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

HEALTHY = "healthy"
ERROR = "error"
# Calibration buckets: [lo, hi) on the finding's confidence; the last includes 1.0.
BUCKETS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001)


@dataclass
class Outcome:
    scenario: str
    expected: str  # a cause, or "healthy"
    predicted: str  # the primary cause, "healthy", or "error"
    status: str  # healthy | warning | critical | error
    causes: list[str]  # "cause:severity:confidence" per finding, as ordered by the verdict
    seconds: float
    split: str = ""
    family: str = ""
    optimizer: str = ""
    trap: str = ""
    error: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)  # cause, severity, confidence


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def score(outcomes: list[Outcome]) -> dict[str, Any]:
    labels = sorted({o.expected for o in outcomes} | {o.predicted for o in outcomes})
    confusion = Counter((o.expected, o.predicted) for o in outcomes)
    per_cause = {}
    for label in labels:
        if label in (HEALTHY, ERROR):
            continue
        tp = confusion[(label, label)]
        predicted = sum(confusion[(e, label)] for e in labels)
        actual = sum(confusion[(label, p)] for p in labels)
        per_cause[label] = {
            "precision": _rate(tp, predicted),
            "recall": _rate(tp, actual),
            "support": actual,
            "predicted": predicted,
        }
    faulty = [o for o in outcomes if o.expected != HEALTHY]
    healthy = [o for o in outcomes if o.expected == HEALTHY]
    errors = [o for o in outcomes if o.status == ERROR]
    alarms = [o for o in healthy if o.status not in (HEALTHY, ERROR)]
    return {
        "runs": len(outcomes),
        "labels": labels,
        "confusion": {f"{e}->{p}": n for (e, p), n in sorted(confusion.items())},
        "per_cause": per_cause,
        "top1_accuracy": _rate(sum(o.predicted == o.expected for o in faulty), len(faulty)),
        "false_alarm_rate": _rate(len(alarms), len(healthy)),
        "faulty_runs": len(faulty),
        "healthy_runs": len(healthy),
        "errors": len(errors),
        "errors_by_expected": dict(Counter(o.expected for o in errors)),
        "calibration": calibration(outcomes),
        "by_family": by_family(outcomes),
        "alarms_on_healthy": dict(Counter(o.predicted for o in alarms).most_common()),
    }


def calibration(outcomes: list[Outcome]) -> dict[str, list[dict[str, Any]]]:
    """Per confidence bucket, the share of findings that are right.

    primary: the verdict's primary finding is right when its cause is the expected one.
    alarming: every warning/critical finding is right when its cause is the expected one
    (on a healthy run none is).
    """
    out = {}
    for kind in ("primary", "alarming"):
        buckets: dict[int, list[tuple[float, bool]]] = defaultdict(list)
        for o in outcomes:
            findings = [f for f in o.findings if f["severity"] != "info"]
            if kind == "primary":
                findings = [f for f in findings if f["cause"] == o.predicted][:1]
            for f in findings:
                c = float(f["confidence"])
                i = next(i for i in range(len(BUCKETS) - 1) if c < BUCKETS[i + 1])
                buckets[i].append((c, f["cause"] == o.expected))
        rows = []
        for i in range(len(BUCKETS) - 1):
            items = buckets.get(i, [])
            rows.append(
                {
                    "bucket": f"[{BUCKETS[i]:.1f}, {min(BUCKETS[i + 1], 1.0):.1f}"
                    + ("]" if i == len(BUCKETS) - 2 else ")"),
                    "findings": len(items),
                    "mean_confidence": _rate(sum(c for c, _ in items), len(items)),
                    "right": _rate(sum(r for _, r in items), len(items)),
                }
            )
        out[kind] = rows
    return out


def by_family(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[o.family or "-"].append(o)
    out = {}
    for family, items in sorted(groups.items()):
        faulty = [o for o in items if o.expected != HEALTHY]
        healthy = [o for o in items if o.expected == HEALTHY]
        out[family] = {
            "faulty": len(faulty),
            "top1": _rate(sum(o.predicted == o.expected for o in faulty), len(faulty)),
            "healthy": len(healthy),
            "false_alarm_rate": _rate(
                sum(o.status not in (HEALTHY, ERROR) for o in healthy), len(healthy)
            ),
            "errors": sum(o.status == ERROR for o in items),
        }
    return out
