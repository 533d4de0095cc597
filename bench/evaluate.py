"""Diagnose labelled runs and score the verdicts, dev and test apart.

`--suite scenarios`: the 52 hand-written scenarios of tests/scenarios.py (trained in
process). `--suite corpus` (the default): the generated corpus of bench/corpus (trained
once, cached under .cache/corpus), split into dev and test by a seeded hash of each run's
name; `--suite all`: both. For each split it prints the confusion matrix (expected cause x
primary cause), per-cause precision and recall, top-1 cause accuracy on the faulty runs,
the false-alarm rate on the healthy runs (any warning or critical finding), the errors
(refused or failed diagnoses, counted as misses), the confidence calibration and the
figures per model family.

    python -m bench.evaluate [--suite corpus|scenarios|all] [--split dev|test|both]
                             [--sample N --seed S] [--jobs J] [--no-xla] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.score import ERROR, HEALTHY, Outcome, score

__all__ = ["HEALTHY", "Outcome", "diagnose_all", "main", "score"]


def diagnose_all(names: list[str] | None = None, workdir: Path | None = None) -> list[Outcome]:
    """The scenario suite: train each scenario in process and diagnose it."""
    from bench.corpus.evaluate import _diagnoser
    from tests.scenarios import SCENARIOS, save_run, train_cached

    workdir = workdir or Path(tempfile.mkdtemp(prefix="gradhealth-eval-"))
    diagnoser = _diagnoser(xla=True)
    outcomes = []
    for sc in SCENARIOS:
        if names and sc.name not in names:
            continue
        start = time.perf_counter()
        common = dict(scenario=sc.name, expected=sc.cause or HEALTHY, family=sc.dataset)
        try:
            checkpoint, batch = save_run(train_cached(sc.name), workdir, sc.name)
            v = diagnoser.diagnose(checkpoint, batch).verdict
        except Exception as exc:  # one broken scenario must not hide the rest
            message = " ".join(str(exc).split())[:200]
            outcomes.append(
                Outcome(
                    predicted=ERROR,
                    status=ERROR,
                    causes=[],
                    error=message,
                    seconds=time.perf_counter() - start,
                    **common,
                )
            )
            continue
        findings = [
            {
                "cause": str(f.cause),
                "severity": str(f.severity),
                "confidence": round(float(f.confidence), 4),
            }
            for f in v.findings
        ]
        outcomes.append(
            Outcome(
                predicted=str(v.primary_cause) if v.primary_cause else HEALTHY,
                status=v.status,
                causes=[f"{f['cause']}:{f['severity']}:{f['confidence']:.2f}" for f in findings],
                findings=findings,
                seconds=time.perf_counter() - start,
                **common,
            )
        )
    return outcomes


def composition(everything) -> dict[str, Any]:
    """What the corpus holds after verification, and what verification dropped."""
    kept = [e for e in everything if e.label is not None]
    dropped = [e for e in everything if e.label is None]
    relabelled = [e for e in kept if e.label != e.intended]
    count = lambda key, items: dict(sorted(Counter(key(e) for e in items).items()))  # noqa: E731
    return {
        "candidates": len(everything),
        "kept": len(kept),
        "healthy_share": sum(e.label == HEALTHY for e in kept) / max(len(kept), 1),
        "by_cause": count(lambda e: e.label, kept),
        "by_family": count(lambda e: e.family, kept),
        "by_optimizer": count(lambda e: e.optimizer, kept),
        "by_split": count(lambda e: e.split, kept),
        "by_split_and_cause": count(lambda e: f"{e.split}:{e.label}", kept),
        "healthy_traps": count(
            lambda e: e.trap or "plain", [e for e in kept if e.label == HEALTHY]
        ),
        "dropped": len(dropped),
        "dropped_by_intended": count(lambda e: e.intended, dropped),
        "dropped_runs": {e.name: e.reason for e in dropped},
        "relabelled": {e.name: f"{e.intended} -> {e.label}: {e.reason}" for e in relabelled},
    }


def _short(label: str) -> str:
    return (
        label.replace("learning_rate_too_", "lr_")
        .replace("_gradients", "")
        .replace("_activation", "")
        .replace("unnormalized_input", "input")
        .replace("prediction_collapse", "collapse")
        .replace("loss_mismatch", "mismatch")
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def print_report(title: str, report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=220)
    console.rule(title)
    labels = report["labels"]
    matrix = Table(title=f"{title}: confusion (rows: expected, columns: primary cause)")
    matrix.add_column("")
    for label in labels:
        matrix.add_column(_short(label), justify="right")
    for e in labels:
        if any(report["confusion"].get(f"{e}->{p}") for p in labels):
            row = [str(report["confusion"].get(f"{e}->{p}", "")) for p in labels]
            matrix.add_row(_short(e), *row)
    console.print(matrix)
    causes = Table(title=f"{title}: per cause")
    for col in ("cause", "precision", "recall", "support", "predicted"):
        causes.add_column(col)
    for cause, v in report["per_cause"].items():
        causes.add_row(
            cause, _pct(v["precision"]), _pct(v["recall"]), str(v["support"]), str(v["predicted"])
        )
    console.print(causes)
    for kind, rows in report["calibration"].items():
        cal = Table(title=f"{title}: calibration of the {kind} findings")
        for col in ("confidence", "findings", "mean confidence", "right"):
            cal.add_column(col)
        for r in rows:
            cal.add_row(
                r["bucket"], str(r["findings"]), _pct(r["mean_confidence"]), _pct(r["right"])
            )
        console.print(cal)
    fam = Table(title=f"{title}: per family")
    for col in ("family", "faulty", "top-1", "healthy", "false alarms", "errors"):
        fam.add_column(col)
    for family, v in report["by_family"].items():
        fam.add_row(
            family,
            str(v["faulty"]),
            _pct(v["top1"]),
            str(v["healthy"]),
            _pct(v["false_alarm_rate"]),
            str(v["errors"]),
        )
    console.print(fam)
    console.print(
        f"[bold]{title}[/bold]: top-1 {_pct(report['top1_accuracy'])} on "
        f"{report['faulty_runs']} faulty runs; false-alarm rate "
        f"{_pct(report['false_alarm_rate'])} on {report['healthy_runs']} healthy runs; "
        f"{report['errors']} errors {report['errors_by_expected']}; alarms on healthy runs: "
        f"{report['alarms_on_healthy']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.evaluate")
    parser.add_argument("--suite", choices=("corpus", "scenarios", "all"), default="corpus")
    parser.add_argument("--split", choices=("dev", "test", "both"), default="both")
    parser.add_argument("--sample", type=int, default=0, help="a seeded sample of N runs")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed")
    parser.add_argument("--only", default="", help="corpus: only runs whose name has this")
    parser.add_argument(
        "--no-train", action="store_true", help="corpus: only the runs already in the cache"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="corpus: diagnose again, ignore cached verdicts"
    )
    parser.add_argument("--jobs", type=int, default=1, help="diagnosing processes")
    parser.add_argument("--no-xla", action="store_true", help="probe without XLA (faster)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a run errors or no run was evaluated (CI: the figures cannot rot)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("scenarios", nargs="*", help="scenario suite: only these names")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out: dict[str, Any] = {"suite": args.suite, "xla": not args.no_xla}
    if args.suite in ("scenarios", "all"):
        outcomes = diagnose_all(args.scenarios or None)
        out["scenarios"] = {"report": score(outcomes), "outcomes": [o.__dict__ for o in outcomes]}
        print_report("scenarios", out["scenarios"]["report"])
    if args.suite in ("corpus", "all"):
        from bench.corpus.cache import VERSION, cache_dir, limit_threads
        from bench.corpus.evaluate import diagnose, select
        from bench.corpus.split import SPLIT_SEED

        limit_threads()
        kept, everything = select(
            args.split, args.sample, args.seed, train_missing=not args.no_train, only=args.only
        )
        outcomes = diagnose(kept, jobs=args.jobs, xla=not args.no_xla, reuse=not args.fresh)
        corpus: dict[str, Any] = {
            "generator_version": VERSION,
            "cache": str(cache_dir()),
            "split_seed": SPLIT_SEED,
            "split": args.split,
            "sample": args.sample,
            "seed": args.seed,
            "composition": composition(everything),
        }
        comp = corpus["composition"]
        print(
            f"corpus v{VERSION}: {comp['kept']} runs kept of {comp['candidates']} candidates "
            f"({comp['dropped']} dropped, {len(comp['relabelled'])} relabelled); healthy share "
            f"{comp['healthy_share']:.0%}; by split {comp['by_split']}; by cause {comp['by_cause']}"
        )
        for split in ("dev", "test"):
            part = [o for o in outcomes if o.split == split]
            if part:
                corpus[split] = score(part)
                print_report(f"corpus {split}", corpus[split])
        corpus["outcomes"] = [o.__dict__ for o in sorted(outcomes, key=lambda o: o.scenario)]
        out["corpus"] = corpus
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(f"evaluated in {out['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
    if args.strict and (problem := _rot(out)):
        print(f"bench.evaluate --strict: {problem}")
        return 1
    return 0


def _rot(out: dict[str, Any]) -> str:
    """What makes a strict evaluation fail: errors, or nothing evaluated."""
    reports = [out[s]["report"] for s in ("scenarios",) if s in out]
    corpus = out.get("corpus", {})
    reports += [corpus[s] for s in ("dev", "test") if s in corpus]
    if not reports:
        return "no run was evaluated"
    errors = sum(r["errors"] for r in reports)
    return f"{errors} run(s) ended in an error" if errors else ""


if __name__ == "__main__":
    raise SystemExit(main())
