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

    from bench import probe_overhead

    results = probe_overhead.run(quick=args.quick)
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
    Console(width=140).print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
