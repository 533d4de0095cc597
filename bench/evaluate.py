"""Diagnose every labelled scenario and score the verdicts.

Prints the confusion matrix (expected cause x primary cause), per-cause
precision and recall, top-1 cause accuracy on faulty runs and the false-alarm
rate on healthy runs (any warning or critical finding counts as an alarm).
`python -m bench.evaluate [--json PATH]`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HEALTHY = "healthy"


@dataclass
class Outcome:
    scenario: str
    expected: str  # a cause, or "healthy"
    predicted: str  # the primary cause, or "healthy"
    status: str
    causes: list[str]
    seconds: float


def diagnose_all(names: list[str] | None = None, workdir: Path | None = None) -> list[Outcome]:
    from gradhealth_server.diagnosis import Diagnoser
    from tests.scenarios import SCENARIOS, save_run, train_cached

    workdir = workdir or Path(tempfile.mkdtemp(prefix="gradhealth-eval-"))
    diagnoser = Diagnoser()
    outcomes = []
    for sc in SCENARIOS:
        if names and sc.name not in names:
            continue
        start = time.perf_counter()
        try:
            checkpoint, batch = save_run(train_cached(sc.name), workdir, sc.name)
            d = diagnoser.diagnose(checkpoint, batch)
        except Exception as exc:  # one broken scenario must not hide the rest
            message = " ".join(str(exc).split())[:120]
            outcomes.append(
                Outcome(
                    sc.name,
                    sc.cause or HEALTHY,
                    f"error: {message}",
                    "error",
                    [],
                    time.perf_counter() - start,
                )
            )
            continue
        outcomes.append(
            Outcome(
                scenario=sc.name,
                expected=sc.cause or HEALTHY,
                predicted=str(d.verdict.primary_cause) if d.verdict.primary_cause else HEALTHY,
                status=d.verdict.status,
                causes=[f"{f.cause}:{f.severity}" for f in d.verdict.findings],
                seconds=time.perf_counter() - start,
            )
        )
    return outcomes


def score(outcomes: list[Outcome]) -> dict[str, Any]:
    labels = sorted({o.expected for o in outcomes} | {o.predicted for o in outcomes})
    confusion = Counter((o.expected, o.predicted) for o in outcomes)
    per_cause = {}
    for label in labels:
        if label == HEALTHY:
            continue
        tp = confusion[(label, label)]
        predicted = sum(confusion[(e, label)] for e in labels)
        actual = sum(confusion[(label, p)] for p in labels)
        per_cause[label] = {
            "precision": tp / predicted if predicted else None,
            "recall": tp / actual if actual else None,
            "support": actual,
        }
    faulty = [o for o in outcomes if o.expected != HEALTHY]
    healthy = [o for o in outcomes if o.expected == HEALTHY]
    return {
        "labels": labels,
        "confusion": {f"{e}->{p}": n for (e, p), n in sorted(confusion.items())},
        "per_cause": per_cause,
        "top1_accuracy": sum(o.predicted == o.expected for o in faulty) / max(len(faulty), 1),
        "false_alarm_rate": sum(o.status != HEALTHY for o in healthy) / max(len(healthy), 1),
        "faulty_runs": len(faulty),
        "healthy_runs": len(healthy),
    }


def print_report(outcomes: list[Outcome], report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    runs = Table(title="Scenarios")
    for col in ("scenario", "expected", "primary cause", "status", "findings", "s"):
        runs.add_column(col)
    for o in outcomes:
        mark = (
            ""
            if o.predicted == o.expected or (o.expected == HEALTHY and o.status == HEALTHY)
            else " ✗"
        )
        runs.add_row(
            o.scenario,
            o.expected,
            o.predicted + mark,
            o.status,
            " ".join(o.causes),
            f"{o.seconds:.1f}",
        )
    console.print(runs)
    labels = report["labels"]
    matrix = Table(title="Confusion matrix (rows: expected, columns: primary cause)")
    matrix.add_column("")
    short = {
        label: label.replace("learning_rate_too_", "lr_")
        .replace("_gradients", "")
        .replace("_activation", "")
        .replace("unnormalized_input", "input")
        .replace("prediction_collapse", "collapse")
        for label in labels
    }
    for label in labels:
        matrix.add_column(short[label], justify="right")
    for e in labels:
        matrix.add_row(short[e], *[str(report["confusion"].get(f"{e}->{p}", "")) for p in labels])
    console.print(matrix)
    causes = Table(title="Per cause")
    for col in ("cause", "precision", "recall", "support"):
        causes.add_column(col)
    for cause, v in report["per_cause"].items():
        causes.add_row(cause, _pct(v["precision"]), _pct(v["recall"]), str(v["support"]))
    console.print(causes)
    console.print(
        f"top-1 cause accuracy {_pct(report['top1_accuracy'])} on {report['faulty_runs']} faulty "
        f"runs; false-alarm rate {_pct(report['false_alarm_rate'])} on "
        f"{report['healthy_runs']} healthy runs"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.evaluate")
    parser.add_argument("--json", type=Path)
    parser.add_argument("scenarios", nargs="*", help="only these scenario names")
    args = parser.parse_args()
    outcomes = diagnose_all(args.scenarios or None)
    report = score(outcomes)
    print_report(outcomes, report)
    if args.json:
        args.json.write_text(
            json.dumps({"report": report, "outcomes": [o.__dict__ for o in outcomes]}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
