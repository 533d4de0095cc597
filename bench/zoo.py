"""A model zoo (issue 18): real architectures and optimizers, trained briefly on
learnable data, then diagnosed.

Every healthy model must come back `healthy` (no warning or critical finding);
every faulty variant must be named right. Each model is built (keras.applications
with weights=None on small inputs, or stock Keras layers), trained until it clearly
learns, and saved with a sample batch into a cache directory (reused when present).
Each is then diagnosed in a fresh Python process, twice: cold (the first call:
load, trace, probe, trials, rules) and warm (the same checkpoint again in the same
process: the cached model and compiled probe). Peak RSS is that child's own
(VmHWM, tests/service.peak_rss_mb; `bench/zoo_results.json` was measured with `ru_maxrss`,
which also counts the parent's peak). Training also runs in a child, so one model's graphs and dtype
policy never reach the next.

    python -m bench.zoo [--models lstm,gru] [--json PATH] [--cache DIR] [--retrain]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = ROOT / ".cache" / "zoo"
from bench.zoo_models import Spec, builders  # noqa: E402  (the models, apart)
from tests.service import peak_rss_mb  # noqa: E402


def _rows(data: Any, rows: int) -> Any:
    if isinstance(data, dict):
        return {k: v[:rows] for k, v in data.items()}
    return data[:rows]


def _scores(model: Any, x: Any, y: Any) -> dict[str, float]:
    """Accuracy (classification) or R² (regression) per output, in inference mode on
    the training data."""
    pred = model.predict(x, batch_size=64, verbose=0)
    names = list(model.output_names) if isinstance(y, dict) else [None]
    preds = pred if isinstance(pred, (list, tuple)) else [pred]
    out = {}
    for name, p in zip(names, preds, strict=True):
        target = y[name] if name else y
        p = np.asarray(p, dtype="float64")
        key = name or "output"
        if p.shape[-1] == 1 and target.dtype.kind == "f":
            t = target.reshape(p.shape).astype("float64")
            out[f"{key}_r2"] = float(1 - ((t - p) ** 2).sum() / ((t - t.mean()) ** 2).sum())
        else:
            out[f"{key}_accuracy"] = float((p.argmax(-1) == target.reshape(-1)).mean())
    return out


def _strategy_scope(strategy: str | None) -> contextlib.AbstractContextManager:
    """The distribution strategy a model is built and compiled under. "mirrored": two
    logical CPU devices (only before TensorFlow's runtime starts: a fresh process)."""
    if strategy is None:
        return contextlib.nullcontext()
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope()


def prepare(name: str, directory: Path, spec: Spec | None = None) -> dict[str, Any]:
    """Train one zoo model and save model.keras, batch.npz and meta.json."""
    from gradhealth_server.engine.device import quiet_tensorflow

    quiet_tensorflow()
    import keras

    spec = spec or builders()[name]
    directory.mkdir(parents=True, exist_ok=True)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(spec.dtype_policy)
    try:
        keras.utils.set_random_seed(0)
        x, y = spec.data()
        with _strategy_scope(spec.strategy):
            model = spec.build()
        start = time.perf_counter()
        history = model.fit(x, y, epochs=spec.epochs, batch_size=spec.batch_size, verbose=0)
        train_s = time.perf_counter() - start
        checkpoint, batch = directory / "model.keras", directory / "batch.npz"
        model.save(checkpoint)
        scores = _scores(model, x, y)
    finally:
        keras.config.set_dtype_policy(previous)
    bx, by = _rows(x, spec.rows), _rows(y, spec.rows)
    arrays = {"x": bx}
    if isinstance(by, dict):
        arrays.update({f"y_{k}": v for k, v in by.items()})
    else:
        arrays["y"] = by
    np.savez(batch, **arrays)
    fit_acc = {
        k: round(float(v[-1]), 4) for k, v in history.history.items() if k.endswith("accuracy")
    }
    meta = {
        "model": name,
        "optimizer": spec.optimizer,
        "dtype_policy": spec.dtype_policy,
        "strategy": spec.strategy,
        "replicas": int(model.distribute_strategy.num_replicas_in_sync),
        "parameters": int(model.count_params()),
        "checkpoint_mb": round(checkpoint.stat().st_size / 1e6, 2),
        "rows": spec.rows,
        "train_rows": len(next(iter(y.values())) if isinstance(y, dict) else y),
        "epochs": spec.epochs,
        "train_s": round(train_s, 1),
        "final_loss": round(float(history.history["loss"][-1]), 4),
        "fit_accuracy": fit_acc,  # last epoch, training mode (dropout on, batch stats)
        "scores": {k: round(v, 4) for k, v in scores.items()},  # inference mode
        "expect": sorted(spec.expect),
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# -- the diagnosis, in its own process ----------------------------------------------


def _finding(f: Any) -> dict[str, Any]:
    return {
        "cause": str(f.cause),
        "severity": str(f.severity),
        "summary": " ".join(f.summary.split()),
        "explained_by": list(f.explained_by),
    }


def diagnose_twice(checkpoint: str | Path, batch: str | Path) -> dict[str, Any]:
    """Cold (first call) and warm (the same checkpoint again, same Diagnoser)."""
    from gradhealth_server.diagnosis import Diagnoser

    diagnoser = Diagnoser()
    start = time.perf_counter()
    cold = diagnoser.diagnose(checkpoint, batch)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    warm = diagnoser.diagnose(checkpoint, batch)
    warm_s = time.perf_counter() - start
    v = cold.verdict
    return {
        "status": str(v.status),
        "primary": str(v.primary_cause) if v.primary_cause else None,
        "findings": [_finding(f) for f in v.findings],
        "warm_status": str(warm.verdict.status),
        "warm_primary": str(warm.verdict.primary_cause) if warm.verdict.primary_cause else None,
        "probe_loss": cold.measurements.loss,
        "probe_accuracy": cold.measurements.accuracy,
        "xla": cold.measurements.xla,
        "cold_s": round(cold_s, 2),
        "warm_s": round(warm_s, 3),
        "warm_cache_hit": warm.cache_hit and warm.probe_cached,
        "cold_phases": {k: round(s, 2) for k, s in cold.phases.items()},
        "warm_phases": {k: round(s, 3) for k, s in warm.phases.items()},
        "trials_run": _trials_run(cold.measurements),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def _trials_run(m: Any) -> list[str]:
    """Which remedy trials a rule proposed (a healthy run should pay for none)."""
    ran = [*m.trials, *getattr(m, "scratch_trials", {})]
    ran += ["learning_rate"] if m.lr_trial is not None else []
    return ran + (["clipnorm"] if m.clip_trial is not None else [])


def _child(*args: str) -> dict[str, Any]:
    """A fresh interpreter: nothing compiled, cached or set (dtype policy) before it."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.zoo", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {out.stderr.strip()[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(
    models: tuple[str, ...] | None = None,
    cache: Path = CACHE,
    retrain: bool = False,
    partial: Path | None = None,
) -> list[dict[str, Any]]:
    """Train (or reuse) and diagnose each zoo model; one result per model, also
    written to `partial` as each one ends (a long run stopped midway keeps them)."""
    zoo = builders()
    results = []
    for name in models or tuple(zoo):
        if name not in zoo:
            raise SystemExit(f"unknown model {name!r}; the zoo: {', '.join(zoo)}")
        directory = cache / name
        meta_path = directory / "meta.json"
        reused = meta_path.exists() and not retrain
        print(f"[zoo] {name}: {'cached' if reused else 'training'} ...", file=sys.stderr)
        try:
            if reused:
                meta = json.loads(meta_path.read_text())
            else:
                meta = _child("--prepare", name, str(directory))
            print(f"[zoo] {name}: diagnosing ...", file=sys.stderr)
            d = _child("--diagnose", str(directory / "model.keras"), str(directory / "batch.npz"))
        except RuntimeError as e:
            results.append({"model": name, "error": str(e)})
            print(f"[zoo] {name}: ERROR {e}", file=sys.stderr)
            continue
        expect = set(meta["expect"])
        if expect == {"healthy"}:
            ok = d["status"] == "healthy"
        else:
            ok = d["status"] != "healthy" and d["primary"] in expect
        results.append({**meta, "reused_checkpoint": reused, **d, "ok": ok})
        if partial:
            partial.write_text(json.dumps({"partial": True, "models": results}, indent=2) + "\n")
        print(f"[zoo] {name}: {d['status']} {d['primary']} ok={ok}", file=sys.stderr)
    return results


def _learned(r: dict[str, Any]) -> str:
    """Last epoch's accuracy as fit reported it (training mode), then the inference-mode
    score on the training data (accuracy, or R² for a regression output)."""
    fit = "/".join(f"{v:.2f}" for v in r.get("fit_accuracy", {}).values()) or "-"
    scores = ", ".join(
        f"{'R² ' if k.endswith('_r2') else ''}{v:.2f}" for k, v in r.get("scores", {}).items()
    )
    return f"{fit} ({scores})"


def _print(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="gradhealth model zoo (times are upper bounds: a loaded 2-core CPU)")
    columns = (
        *("model", "optimizer", "params", "ckpt MB", "train acc fit (inference)", "probe acc"),
        *("expect", "status", "primary cause", "cold s", "warm s", "peak RSS MB", "ok"),
    )
    for column in columns:
        table.add_column(column)
    for r in results:
        if "error" in r:
            row = [r["model"], *[""] * (len(columns) - 1)]
            row[7:9] = ["ERROR", r["error"][-80:]]
            table.add_row(*row)
            continue
        table.add_row(
            r["model"],
            r["optimizer"],
            f"{r['parameters']:,}",
            f"{r['checkpoint_mb']:.1f}",
            _learned(r),
            "-" if r["probe_accuracy"] is None else f"{r['probe_accuracy']:.2f}",
            "/".join(r["expect"]),
            r["status"],
            r["primary"] or "-",
            f"{r['cold_s']:.1f}",
            f"{r['warm_s']:.2f}",
            f"{r['peak_rss_mb']:.0f}",
            "yes" if r["ok"] else "NO",
        )
    console = Console(width=200)
    console.print(table)
    for r in results:
        alarming = [f for f in r.get("findings", []) if f["severity"] != "info"]
        if alarming or not r.get("ok", False):
            console.print(f"[bold]{r['model']}[/bold] ({r.get('optimizer', '')}):")
            for f in r.get("findings", []):
                console.print(f"  {f['cause']} {f['severity']}: {f['summary']}", markup=False)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.zoo")
    parser.add_argument("--models", help="comma-separated: " + ", ".join(builders()))
    parser.add_argument("--json", type=Path, default=HERE / "zoo_results.json")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--retrain", action="store_true", help="ignore cached checkpoints")
    parser.add_argument("--prepare", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--diagnose", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        print(json.dumps(prepare(args.prepare[0], Path(args.prepare[1]))))
        return 0
    if args.diagnose:
        print(json.dumps(diagnose_twice(*args.diagnose)))
        return 0
    started = time.monotonic()
    models = tuple(args.models.split(",")) if args.models else None
    results = run(models, args.cache, args.retrain, partial=args.json)
    _print(results)
    out = {"seconds": round(time.monotonic() - started, 1), "models": results}
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.json} ({out['seconds']} s)")
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
