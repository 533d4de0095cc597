"""Diagnose the corpus runs from the cache with the embedded Diagnoser.

Runs derived from one healthy base share its architecture, so they are diagnosed in a
row by one process (the model cache and the compiled probe are reused, as the service
does for successive checkpoints). `jobs` > 1 spreads the groups over processes. A verdict
is cached next to its run under a key of the judging code (`engine_key`): a second
evaluation with unchanged server code diagnoses nothing again; any change to
gradhealth_server (a rule, a threshold) invalidates every cached verdict.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from bench.corpus.cache import Entry, entries
from bench.corpus.split import sample as seeded_sample
from bench.score import ERROR, Outcome

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def select(
    split: str = "both",
    sample: int = 0,
    seed: int = 0,
    train_missing: bool = True,
    only: str = "",
) -> tuple[list[Entry], list[Entry]]:
    """(kept runs of the split, or a seeded sample of them; every run incl. the dropped).

    With a sample only the sampled runs (and their twins) are trained when missing.
    """
    from bench.corpus.specs import all_specs
    from bench.corpus.split import split_of

    specs = [s for s in all_specs() if split in ("both", split_of(s.name)) and only in s.name]
    if sample:
        names = set(seeded_sample([s.name for s in specs], sample * 3, seed))
        specs = [s for s in specs if s.name in names]
    everything = entries(specs, train_missing=train_missing)
    kept = [e for e in everything if e.label is not None]
    if sample:
        keep = set(seeded_sample([e.name for e in kept], sample, seed))
        kept = [e for e in kept if e.name in keep]
    return kept, everything


def _group_key(e: Entry) -> str:
    return f"{e.family}-{e.dataset}-{e.optimizer}"


def diagnose(
    runs: list[Entry], jobs: int = 1, xla: bool = True, progress: bool = True, reuse: bool = True
) -> list[Outcome]:
    groups: dict[str, list[Entry]] = defaultdict(list)
    for e in runs:
        groups[_group_key(e)].append(e)
    work = sorted(groups.values(), key=len, reverse=True)
    if jobs <= 1:
        return [o for g in work for o in _diagnose_group(g, xla, progress, reuse)]
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        n = len(work)
        results = pool.map(_diagnose_group, work, [xla] * n, [progress] * n, [reuse] * n)
        return [o for g in results for o in g]


_DIAGNOSER = None


def _diagnoser(xla: bool):
    global _DIAGNOSER
    if _DIAGNOSER is None:
        from bench.corpus.cache import limit_threads

        limit_threads()
        from gradhealth_server.diagnosis import Diagnoser
        from gradhealth_server.engine.probe import ProbeOptions

        _DIAGNOSER = Diagnoser(options=ProbeOptions(jit_compile=None if xla else False))
    return _DIAGNOSER


@functools.cache
def engine_key(xla: bool) -> str:
    """Identifies the code that judges: every source file of gradhealth_server, the TF and
    Keras versions, XLA on or off. A cached verdict is reused only under the same key."""
    import gradhealth_server

    digest = hashlib.sha256(f"xla={xla}".encode())
    root = Path(gradhealth_server.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    import keras
    import tensorflow as tf

    digest.update(f"{tf.__version__} {keras.__version__}".encode())
    return digest.hexdigest()[:16]


def _diagnose_group(
    group: list[Entry], xla: bool, progress: bool, reuse: bool = True
) -> list[Outcome]:
    out = []
    for e in group:
        start = time.perf_counter()
        common = dict(
            scenario=e.name,
            expected=e.label,
            split=e.split,
            family=e.family,
            optimizer=e.optimizer,
            trap=e.trap,
        )
        cached = e.checkpoint.parent / f"verdict-{engine_key(xla)}.json"
        if reuse and cached.exists():
            out.append(Outcome(**common, **json.loads(cached.read_text())))
            continue
        diagnoser = _diagnoser(xla)
        try:
            v = diagnoser.diagnose(e.checkpoint, e.batch).verdict
        except Exception as exc:  # refused (INVALID_ARGUMENT) or failed: an error, a miss
            message = f"{type(exc).__name__}: " + " ".join(str(exc).split())[:200]
            o = Outcome(
                predicted=ERROR,
                status=ERROR,
                causes=[],
                error=message,
                seconds=time.perf_counter() - start,
                **common,
            )
        else:
            findings = [
                {
                    "cause": str(f.cause),
                    "severity": str(f.severity),
                    "confidence": round(float(f.confidence), 4),
                }
                for f in v.findings
            ]
            o = Outcome(
                predicted=str(v.primary_cause) if v.primary_cause else "healthy",
                status=v.status,
                causes=[f"{f['cause']}:{f['severity']}:{f['confidence']:.2f}" for f in findings],
                findings=findings,
                seconds=time.perf_counter() - start,
                **common,
            )
        keep = ("predicted", "status", "causes", "seconds", "error", "findings")
        cached.write_text(json.dumps({k: getattr(o, k) for k in keep}))
        if progress:
            mark = "" if o.predicted == o.expected or o.status == "healthy" == o.expected else " X"
            print(
                f"{o.split:4s} {o.scenario:62s} {o.expected:24s} -> {o.predicted}{mark} "
                f"{o.seconds:5.1f}s",
                flush=True,
            )
        out.append(o)
    return out
