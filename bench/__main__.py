"""`python -m bench [--quick] [--json PATH]`: run every benchmark, print one table."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="few repetitions (CI)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from bench import callback_overhead, probe_overhead, service

    results = probe_overhead.run(quick=args.quick)
    served = service.run(quick=args.quick)
    callback = callback_overhead.run(quick=args.quick)
    table = Table(
        title=f"gradhealth bench ({'quick' if args.quick else 'full'}) on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    for col in ("bench", "model", "params", "rows", "mode", "ratio", "range", "target", "ok"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r["bench"],
            r["model"],
            f"{r['parameters']:,}",
            str(r["rows"]),
            r["mode"],
            f"{r['ratio']:.2f}x",
            f"{r['low']:.2f}-{r['high']:.2f}",
            f"<= {r['target']}x",
            "yes" if r["meets_target"] else "NO",
        )
    console = Console(width=140)
    console.print(table)
    _print_service(console, served)
    console.print(
        f"callback on model.fit ({callback['model']}, {callback['epochs']} epochs, "
        f"{callback['fit_seconds']} s, default cadence): {callback['ratio']:.3f}x "
        f"({callback['low']:.3f}-{callback['high']:.3f}), target <= {callback['target']}x: "
        + ("yes" if callback["meets_target"] else "NO")
        + f"; training thread held {callback['training_thread_ms_per_fit']} ms per fit "
        f"({callback['training_thread_ratio']:.4f}x)"
    )
    if args.json:
        everything = {"probe": results, "service": served, "callback": callback}
        args.json.write_text(json.dumps(everything, indent=2))
    return 0


def _print_service(console, served: dict) -> None:
    from rich.table import Table

    up = served["upload"]
    upload = Table(title=f"upload of a {up['checkpoint_mb']} MB checkpoint, loopback")
    columns = ("raw gRPC", "raw + sha256", "gradhealth", "vs raw", "range", "+ client sha256",
               "vs raw + sha256", "target", "ok")  # fmt: skip
    for col in columns:
        upload.add_column(col)
    upload.add_row(
        f"{up['raw_mb_per_s']} MB/s",
        f"{up['raw_sha256_mb_per_s']} MB/s",
        f"{up['gradhealth_mb_per_s']} MB/s",
        f"{up['ratio']:.2f}x",
        f"{up['low']:.2f}-{up['high']:.2f}",
        f"{up['ratio_with_client_sha256']:.2f}x",
        f"{up['ratio_to_raw_sha256']:.2f}x",
        f"<= {up['target']}x",
        "yes" if up["meets_target"] else "NO",
    )
    console.print(upload)
    lat = served["latency"]
    latency = Table(title=f"end-to-end latency by phase (s): {lat['model']}")
    latency.add_column("phase")
    latency.add_column("cold")
    latency.add_column("warm")
    phases = list(lat["cold"]) + [p for p in lat["warm"] if p not in lat["cold"]]
    for phase in sorted(phases, key=lambda p: p == "total"):
        cold, warm = lat["cold"].get(phase), lat["warm"].get(phase)
        latency.add_row(
            phase, "-" if cold is None else f"{cold:.4f}", "-" if warm is None else f"{warm:.4f}"
        )
    console.print(latency)
    console.print(f"cold / warm total: {lat['cold_over_warm']}x")


if __name__ == "__main__":
    raise SystemExit(main())
