"""The on-disk corpus: one directory per run, keyed by the generator's version and the name.

`.cache/corpus/v<VERSION>/<name>/` holds `model.keras`, `batch.npz` (x or x_<input>, y)
and `meta.json` (the spec, the measures, the training time). A run in the cache is never
retrained; bump VERSION whenever a change to the generator changes what a run is.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus.specs import Spec, all_specs
from bench.corpus.split import split_of
from bench.corpus.verify import decide

VERSION = "1"
ROOT = Path(__file__).resolve().parents[2] / ".cache" / "corpus"


def cache_dir() -> Path:
    root = Path(os.environ.get("GRADHEALTH_CORPUS_CACHE", ROOT))
    return root / f"v{VERSION}"


def run_dir(name: str) -> Path:
    return cache_dir() / re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)


def limit_threads() -> None:
    """One intra-op and one inter-op thread: these machines are shared."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started: keep what it has
        pass


def read_meta(name: str) -> dict[str, Any] | None:
    path = run_dir(name) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else None


def generate(spec: Spec) -> dict[str, Any]:
    """Train the run (unless cached) and return its meta.

    A faulty run whose twin did not verify healthy is not trained: its label could not be
    checked. It is recorded as dropped.
    """
    meta = read_meta(spec.name)
    if meta is not None:
        return meta
    twin = read_meta(spec.twin) if spec.twin else None
    if twin is not None and spec.label != "healthy":
        tspec = next(s for s in all_specs() if s.name == spec.twin)
        healthy = "error" not in twin and decide(tspec.label, tspec.trap, twin["measures"], None)[0]
        if not healthy:
            return _record_error(spec, "not trained: its twin did not verify healthy")
    from bench.corpus.train import train

    start = time.perf_counter()
    out = run_dir(spec.name)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        run = train(spec)
    except Exception as exc:  # a spec that cannot train is recorded as dropped, not retried
        tmp.rmdir()
        return _record_error(spec, f"{type(exc).__name__}: {exc}"[:500])
    seconds = time.perf_counter() - start
    run.model.save(tmp / "model.keras")
    arrays = {f"x_{k}": v for k, v in run.x.items()} if isinstance(run.x, dict) else {"x": run.x}
    np.savez(tmp / "batch.npz", y=run.y, **arrays)
    meta = {
        "spec": _jsonable(asdict(spec)),
        "measures": run.measures,
        "train_seconds": round(seconds, 2),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=float))
    if out.exists():  # another shard finished it first
        return read_meta(spec.name) or meta
    tmp.rename(out)
    return meta


def _record_error(spec: Spec, message: str) -> dict[str, Any]:
    out = run_dir(spec.name)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    meta = {"spec": _jsonable(asdict(spec)), "error": message}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if not out.exists():
        tmp.rename(out)
    return meta


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class Entry:
    name: str
    intended: str  # the label the spec asked for
    label: str | None  # the verified label; None: dropped
    reason: str
    split: str
    family: str
    dataset: str
    optimizer: str
    trap: str
    fault: str
    checkpoint: Path
    batch: Path


def entries(specs: list[Spec] | None = None, train_missing: bool = True) -> list[Entry]:
    """Every run of the corpus with its verified label (training what the cache lacks).

    Twins are trained too when a faulty run is asked for, since its label depends on them.
    """
    everything = {s.name: s for s in all_specs()}
    specs = specs if specs is not None else list(everything.values())
    wanted = {s.name for s in specs} | {s.twin for s in specs if s.twin}
    metas: dict[str, dict[str, Any]] = {}
    for name in sorted(wanted, key=lambda n: everything[n].twin is not None):  # twins first
        meta = generate(everything[name]) if train_missing else read_meta(name)
        if meta is not None:
            metas[name] = meta
    out = []
    for s in specs:
        if s.name not in metas:
            continue
        twin = None
        if "error" in metas[s.name]:
            label, reason = None, "could not train: " + metas[s.name]["error"]
        elif s.twin and s.twin in metas and "error" not in metas[s.twin]:
            tm = metas[s.twin]["measures"]
            tspec = everything[s.twin]
            twin = dict(tm, final=decide(tspec.label, tspec.trap, tm, None)[0])
        if "error" not in metas[s.name]:
            label, reason = decide(s.label, s.trap, metas[s.name]["measures"], twin)
        d = run_dir(s.name)
        out.append(
            Entry(
                s.name,
                s.label,
                label,
                reason,
                split_of(s.name),
                s.family,
                s.dataset,
                s.optimizer,
                s.trap,
                s.fault,
                d / "model.keras",
                d / "batch.npz",
            )
        )
    return out
