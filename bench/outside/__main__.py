"""`python -m bench.outside [--split dev|test|both] [--only TEXT ...] [--json PATH]`:
re-diagnose the saved outside runs with the current code and score each split.
Train them first with `python -m bench.outside.runs train` (README.md)."""

from __future__ import annotations

import argparse
import os

from bench.outside.cache import ENV, runs_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outside")
    parser.add_argument("--split", choices=("dev", "test", "both"), default="dev")
    parser.add_argument(
        "--only", action="append", metavar="TEXT", help="only runs whose name contains TEXT"
    )
    parser.add_argument("--json", metavar="PATH", help="write the outcomes and summaries here")
    parser.add_argument("--runs", help=f"the runs directory (default: ${ENV} or {runs_dir()})")
    args = parser.parse_args(argv)
    if args.runs:
        os.environ[ENV] = args.runs
    from bench.outside.evaluate import evaluate, select

    if not select(args.split, args.only):
        parser.error("no run matches")
    evaluate(args.split, args.only, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
