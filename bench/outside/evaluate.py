"""Diagnose the saved outside runs in-process with the current code and score them per split.

Each run goes through the embedded `Diagnoser` (as `gradhealth diagnose` without a server
does), so a change to a rule shows at once; the CLI verdicts that `runs diagnose` saves
are not read. A faulty run is a hit when its primary cause is its label or one of the
causes its author accepted (`accept`); a healthy run is a false alarm when any finding is
a warning or critical. As in bench/score.py, an error is a miss on a faulty run and is
counted apart (not as an alarm) on a healthy one. A run not trained is an error.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.corpus.split import split_of
from bench.outside.cache import run_dir
from bench.outside.registry import all_runs
from bench.outside.table import read_json, verified

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Fixed after the first measurement of the set (the red-teamer's results.md, diagnosed with
# the code of that day) and before any rule was tuned on it; never change it: it would
# reshuffle dev and test. Tune on dev only; test is for the record.
SPLIT_SEED = "redteam-v1"
HEALTHY = "healthy"
ERROR = "error"


@dataclass
class Outcome:
    name: str
    split: str
    label: str
    accept: list[str]
    primary: str  # the primary cause, "healthy" or "error"
    status: str  # healthy | warning | critical | error
    ok: bool  # faulty: primary is the label or accepted; healthy: no warning or critical
    verified: bool | None = None  # faulty: its holdout metric >= 0.02 below its twin's
    seconds: float = 0.0
    error: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)


def select(split: str = "dev", only: list[str] | None = None) -> list[str]:
    """The evaluated runs of the split ('dev', 'test' or 'both') whose name contains any
    of `only` (all when empty), in the order they were written."""
    runs = all_runs()
    return [
        name
        for name, spec in runs.items()
        if spec["evaluated"]
        and split in ("both", split_of(name, SPLIT_SEED))
        and (not only or any(text in name for text in only))
    ]


def _labels(name: str) -> tuple[str, list[str], bool | None]:
    """(label, accepted causes, verified) from the saved meta, else from the run's code."""
    spec = all_runs()[name]
    meta = read_json(run_dir(name) / "meta.json")
    if meta is None:
        return spec["label"], list(spec["accept"]), None
    twin = read_json(run_dir(meta["twin"]) / "meta.json") if meta["twin"] else None
    harm = verified(dict(value=meta["value"], twin_value=twin and twin["value"]))
    return meta["label"], list(meta["accept"] or []), harm if meta["twin"] else None


_DIAGNOSER = None


def _diagnoser():
    global _DIAGNOSER
    if _DIAGNOSER is None:
        from bench.corpus.cache import limit_threads

        limit_threads()
        from gradhealth_server.diagnosis import Diagnoser
        from gradhealth_server.engine.probe import ProbeOptions

        _DIAGNOSER = Diagnoser(options=ProbeOptions())
    return _DIAGNOSER


def diagnose_one(name: str) -> Outcome:
    label, accept, harm = _labels(name)
    common = dict(name=name, split=split_of(name, SPLIT_SEED), label=label, accept=accept)
    d = run_dir(name)
    start = time.perf_counter()
    if not (d / "model.keras").exists():
        return Outcome(**common, primary=ERROR, status=ERROR, ok=False, error="not trained")
    try:
        v = _diagnoser().diagnose(d / "model.keras", d / "batch.npz").verdict
    except Exception as exc:  # refused (INVALID_ARGUMENT) or failed: an error, a miss
        message = f"{type(exc).__name__}: " + " ".join(str(exc).split())[:200]
        seconds = time.perf_counter() - start
        return Outcome(
            **common, primary=ERROR, status=ERROR, ok=False, seconds=seconds, error=message
        )
    primary = str(v.primary_cause) if v.primary_cause else HEALTHY
    ok = primary in (label, *accept)
    findings = [
        dict(
            cause=str(f.cause),
            severity=str(f.severity),
            confidence=round(float(f.confidence), 4),
            summary=f.summary,
        )
        for f in v.findings
    ]
    return Outcome(
        **common,
        primary=primary,
        status=v.status,
        ok=ok,
        verified=harm,
        seconds=time.perf_counter() - start,
        findings=findings,
    )


def diagnose(names: list[str], progress: bool = True) -> list[Outcome]:
    out = []
    for name in names:
        o = diagnose_one(name)
        if progress:
            mark = "" if o.ok else " X"
            print(
                f"{o.split:4s} {o.name:42s} {o.label:24s} -> {o.primary}{mark} {o.seconds:5.1f}s",
                flush=True,
            )
        out.append(o)
    return out


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    faulty = [o for o in outcomes if o.label != HEALTHY]
    healthy = [o for o in outcomes if o.label == HEALTHY]
    judged = [o for o in healthy if o.status != ERROR]
    return dict(
        runs=len(outcomes),
        faulty=len(faulty),
        top1=sum(o.ok for o in faulty),
        faulty_verified=sum(1 for o in faulty if o.verified),
        top1_verified=sum(1 for o in faulty if o.verified and o.ok),
        healthy=len(judged),
        false_alarms=sum(not o.ok for o in judged),
        false_alarm_names=[o.name for o in judged if not o.ok],
        errors=[dict(name=o.name, error=o.error) for o in outcomes if o.status == ERROR],
        misses=[
            dict(name=o.name, label=o.label, primary=o.primary, verified=o.verified)
            for o in faulty
            if not o.ok
        ],
    )


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100.0 * a / b:.0f}%)" if b else f"{a}/0"


def report(split: str, s: dict[str, Any]) -> str:
    lines = [
        f"{split}: {s['runs']} runs",
        f"  faulty top-1 (label or accepted; an error is a miss): {_pct(s['top1'], s['faulty'])}"
        f"; on the {s['faulty_verified']} verified as harmful: "
        f"{_pct(s['top1_verified'], s['faulty_verified'])}",
        f"  false alarms on healthy runs (any warning/critical): "
        f"{_pct(s['false_alarms'], s['healthy'])} {', '.join(s['false_alarm_names'])}",
        f"  errors: {len(s['errors'])}",
    ]
    lines += [f"    {e['name']}: {e['error']}" for e in s["errors"]]
    lines += [
        f"  miss {m['name']}: {m['label']} -> {m['primary']}"
        + ("" if m["verified"] else " (harm not verified)")
        for m in s["misses"]
    ]
    return "\n".join(lines)


def evaluate(
    split: str = "dev", only: list[str] | None = None, json_path: str | None = None
) -> dict[str, Any]:
    outcomes = diagnose(select(split, only))
    splits = ("dev", "test") if split == "both" else (split,)
    summaries = {sp: summarize([o for o in outcomes if o.split == sp]) for sp in splits}
    for sp, s in summaries.items():
        print(report(sp, s))
    result = dict(split_seed=SPLIT_SEED, summary=summaries, runs=[asdict(o) for o in outcomes])
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    return result
