"""`python -m bench.outside.runs train|diagnose|table [NAME ...]`: the outside runs.

    train [NAME ...]      train and save each run (checkpoint, batch, meta); a run already
                          saved is kept unless --force (every run: ~40 min on 2 cores)
    diagnose [NAME ...]   `gradhealth diagnose --json --no-xla` on each saved run, the
                          verdict saved as verdict.json (a run with one is skipped)
    table                 results.json + results.md from the saved metas and verdicts

Every run is ordinary Keras code on scikit-learn or synthetic data. Faulty runs name a
healthy twin that differs only in the one thing changed; both holdout metrics are
recorded so the fault's harm is verified, not assumed. Always run under `nice -n 10`.
`python -m bench.outside` evaluates the saved runs in-process with the current code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np

from bench.outside.cache import ENV, gradhealth_command, run_dir, runs_dir
from bench.outside.data import load_keras
from bench.outside.registry import all_runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def save_run(name: str, r: dict[str, Any]) -> None:
    d = run_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    r["model"].save(d / "model.keras")
    xb, yb = r["xb"], r["yb"]
    if isinstance(xb, dict):
        xs = {f"x_{k}": np.asarray(v) for k, v in xb.items()}
        np.savez(d / "batch.npz", y=np.asarray(yb), **xs)
    else:
        np.savez(d / "batch.npz", x=np.asarray(xb), y=np.asarray(yb))
    meta = {k: v for k, v in r.items() if k not in ("model", "xb", "yb")}
    spec = all_runs()[name]
    meta.update(label=spec["label"], twin=spec["twin"], accept=spec["accept"], note=spec["note"])
    (d / "meta.json").write_text(json.dumps(meta, indent=1))


def train(names: list[str], force: bool = False) -> None:
    keras = load_keras()
    runs = all_runs()
    for i, name in enumerate(names):
        head = f"[{i + 1}/{len(names)}] {name}:"
        if not force and (run_dir(name) / "meta.json").exists():
            print(f"{head} saved already", flush=True)
            continue
        keras.utils.set_random_seed(1000 + sorted(runs).index(name))
        t = time.time()
        try:
            r = runs[name]["fn"]()
            save_run(name, r)
            print(
                f"{head} {r['metric']}={r['value']:.3f} loss={r['train_loss']:.4g} "
                f"({time.time() - t:.1f}s)",
                flush=True,
            )
        except Exception as e:  # record, keep going
            print(f"{head} TRAIN FAILED {type(e).__name__}: {e}", flush=True)
        keras.backend.clear_session()


def diagnose(names: list[str], server: str | None = None) -> None:
    """Each run through the gradhealth CLI, as a user would (`--server ADDR`: the same
    diagnosis on a running `gradhealth serve --no-xla`, TensorFlow loaded once)."""
    for i, name in enumerate(names):
        d = run_dir(name)
        if not (d / "model.keras").exists() or (d / "verdict.json").exists():
            continue
        lock = d / "diagnosing.lock"
        try:
            lock.mkdir()  # two loops may share the list
        except FileExistsError:
            print(f"{name}: skipped, {lock} exists (another loop, or a stale lock)", flush=True)
            continue
        try:
            rec = _diagnose_one(d, server)
        finally:
            shutil.rmtree(lock, ignore_errors=True)
        (d / "verdict.json").write_text(json.dumps(rec, indent=1))
        v = rec.get("verdict")
        outcome = f"{v['status']} {v['primary_cause']}" if v else f"ERROR {rec['error']}"
        print(f"[{i + 1}/{len(names)}] {name}: {outcome} ({rec['seconds']}s)", flush=True)


def _diagnose_one(d, server: str | None) -> dict[str, Any]:
    cmd = [*gradhealth_command(), "diagnose", str(d / "model.keras")]
    cmd += ["--batch", str(d / "batch.npz"), "--json"]
    cmd += ["--server", server] if server else ["--no-xla"]
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return dict(returncode=None, seconds=round(time.time() - t, 1), error="timed out")
    rec: dict[str, Any] = dict(returncode=p.returncode, seconds=round(time.time() - t, 1))
    try:
        rec["verdict"] = json.loads(p.stdout)
    except ValueError:
        rec["error"] = (p.stderr.strip().splitlines() or ["(no stderr)"])[-1][:500]
        rec["stdout_tail"] = p.stdout[-500:]
    return rec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outside.runs")
    parser.add_argument("command", choices=("train", "diagnose", "table"))
    parser.add_argument("names", nargs="*", help="runs (default: every evaluated run)")
    parser.add_argument("--runs", help=f"the runs directory (default: ${ENV} or {runs_dir()})")
    parser.add_argument("--out", help="table: where results.json/.md go (default: the runs dir)")
    parser.add_argument("--force", action="store_true", help="train: retrain saved runs too")
    parser.add_argument("--server", help="diagnose: on this gradhealth server (host:port)")
    args = parser.parse_args(argv)
    if args.runs:
        os.environ[ENV] = args.runs
    runs = all_runs()
    everything = args.command == "train"  # the runs left out of the evaluation train too
    names = args.names or [n for n in runs if everything or runs[n]["evaluated"]]
    if bad := [n for n in names if n not in runs]:
        print(f"unknown runs: {bad}", file=sys.stderr)
        return 2
    if args.command == "train":
        train(names, force=args.force)
    elif args.command == "diagnose":
        diagnose(names, server=args.server)
    else:
        from bench.outside.table import table

        table(out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
