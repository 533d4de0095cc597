"""`python -m bench [--quick] [--json PATH]`: run every benchmark, print one table.

Every timing is a ratio measured side by side in the same run (these machines
are noisy): the median over repetitions, with the range. The whole result is
also written as JSON (default: bench/results.json, or bench/results-quick.json
with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="few repetitions (CI)")
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args()
    json_path = args.json or HERE / ("results-quick.json" if args.quick else "results.json")

    from bench import callback_overhead, cold_path, probe_overhead, service, trial_cost

    started = time.monotonic()
    results: dict[str, Any] = {"machine": _machine(), "mode": "quick" if args.quick else "full"}
    sections = {
        "probe": probe_overhead.run,
        "trials": trial_cost.run,
        "service": service.run,
        "callback": callback_overhead.run,
        "cold_path": cold_path.run,
    }
    results["section_seconds"] = {}
    for name, run in sections.items():
        began = time.monotonic()
        results[name] = run(quick=args.quick)
        results["section_seconds"][name] = round(time.monotonic() - began, 1)
    results["seconds"] = round(time.monotonic() - started, 1)
    _print(results)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    spent = ", ".join(f"{k} {v} s" for k, v in results["section_seconds"].items())
    print(f"written to {json_path} ({results['seconds']} s: {spent})")
    return 0


def _machine() -> dict[str, Any]:
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "device": f"{len(gpus)} GPU" if gpus else "CPU only",
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }


def rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """(bench, case, measured, ratio, range, target, ok) for every result."""
    out = []
    for r in results["probe"]:
        xla = " XLA" if r["xla"] else " no XLA"
        measured = f"{r['probe_ms']} / {r['bare_ms']} ms, {r['traces']} trace"
        out.append(_against_bare_step("probe", r, r["mode"] + xla, measured))
    for r in results.get("trials", []):
        measured = f"{r['trial_ms']} / {r['bare_ms']} ms"
        out.append(_against_bare_step("trial", r, f"{r['trial']} trial", measured))
    for r in results.get("cold_path", []):
        phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items() if v >= 0.05)
        out.append(
            (
                "cold first verdict vs bare first step",
                f"{r['model']} ({r['parameters'] / 1e6:.2g}M, {r['checkpoint_mb']} MB) "
                f"{r['rows']} rows" + (" XLA" if r["xla"] else " no XLA"),
                f"{r['cold_first_verdict_s']} / {r['bare_first_step_s']} s ({phases}); "
                f"peak RSS {r['peak_rss_mb']:.0f} / {r['bare_peak_rss_mb']:.0f} MB",
                f"{r['cold_ratio']:.1f}x",
                f"{r['cold_ratio_without_load']:.1f}x without load",
                f"<= {r['target']}x",
                _ok(r["meets_target"]),
            )
        )
    served = results["service"]
    lat = served["latency"]
    phases = [*lat["cold"], *(p for p in lat["warm"] if p not in lat["cold"])]
    for phase in sorted(phases, key=lambda p: p == "total"):  # stable: total last
        cold, warm = lat["cold"].get(phase), lat["warm"].get(phase)
        out.append(
            (
                "latency by phase",
                f"{lat['model']}: {phase}",
                f"cold {_s(cold)}, warm {_s(warm)}",
                f"{cold / warm:.1f}x" if cold and warm else "-",
                "",
                "warm: no retrace, no rebuild" if phase == "total" else "",
                _ok(lat["warm_reused_everything"]) if phase == "total" else "",
            )
        )
    up = served["upload"]
    out.append(
        (
            "upload vs raw gRPC",
            f"{up['checkpoint_mb']} MB checkpoint, loopback",
            f"{up['gradhealth_mb_per_s']} vs {up['raw_mb_per_s']} MB/s; bare server doing "
            f"the same work (framing, sha256, disk) {up['framed_hashed_written_mb_per_s']} MB/s "
            f"= {up['bound_ratio']:.2f}x",
            f"{up['throughput_ratio']:.2f}x",
            f"{up['throughput_low']:.2f}-{up['throughput_high']:.2f}",
            f">= {up['target']}x",
            _ok(up["meets_target"]),
        )
    )
    for level in served["throughput"]:
        out.append(
            (
                "service throughput",
                f"{level['clients']} concurrent clients, warm digits CNN",
                f"{level['calls_per_s']} calls/s, p50 {level['p50_s']} s, p99 {level['p99_s']} s",
                f"{level['throughput_ratio']:.2f}x",
                "",
                "vs 1 client",
                "",
            )
        )
    cb = results["callback"]
    out.append(
        (
            "callback on model.fit",
            f"digits CNN, {cb['epochs']} epochs ({cb['fit_seconds']} s), default cadence",
            f"training thread held {cb['training_thread_ms_per_fit']} ms "
            f"({cb['training_thread_ratio']:.4f}x)",
            f"{cb['ratio']:.3f}x",
            f"{cb['low']:.2f}-{cb['high']:.2f}",
            f"<= {cb['target']}x",
            _ok(cb["meets_target"]),
        )
    )
    return out


def _against_bare_step(bench: str, r: dict[str, Any], case: str, measured: str) -> tuple[str, ...]:
    """A row of the probe or trial bench: both time a ratio to a bare compiled step on
    the same model and rows, against a ceiling."""
    return (
        f"{bench} vs bare step",
        f"{r['model']} ({r['parameters'] / 1e6:.2g}M) {r['rows']} rows {case}",
        measured,
        f"{r['ratio']:.2f}x",
        f"{r['low']:.2f}-{r['high']:.2f}",
        f"<= {r['target']}x",
        _ok(r["meets_target"]),
    )


def _print(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    m = results["machine"]
    table = Table(
        title=f"gradhealth bench ({results['mode']}): {m['cpu']}, {m['cores']} cores, "
        f"{m['device']}, TensorFlow {m['tensorflow']}"
    )
    for column in ("bench", "case", "measured", "ratio", "range", "target", "ok"):
        table.add_column(column)
    for row in rows(results):
        table.add_row(*row)
    Console(width=200).print(table)


def _ok(value: bool) -> str:
    return "yes" if value else "NO"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.4f} s"


if __name__ == "__main__":
    raise SystemExit(main())
