"""`gradhealth` command line.

`gradhealth diagnose CHECKPOINT.keras --batch BATCH.npz [--json]` runs the
engine in-process (embedded mode, needs the `server` extra). Bad input prints
one line and exits 2; it never shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    # A terminal user needs no TensorFlow start-up messages (set before TF loads).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradhealth", description="Why is my Keras run not learning? Gradient-health verdicts."
    )
    sub = parser.add_subparsers(dest="command")

    diag = sub.add_parser("diagnose", help="diagnose one checkpoint on a sample batch")
    diag.add_argument("checkpoint", type=Path, help="a .keras file saved by model.save()")
    diag.add_argument(
        "--batch",
        type=Path,
        required=True,
        help=".npz with x and y (multi-input: x_<input name> per input)",
    )
    diag.add_argument("--json", action="store_true", help="print one JSON object")
    diag.add_argument(
        "--mode",
        choices=("full", "norms"),
        default="full",
        help="norms: gradient norms only, the cheapest probe",
    )
    diag.add_argument("--no-xla", action="store_true", help="do not try XLA compilation")
    diag.add_argument(
        "--rules-config",
        type=Path,
        help='JSON of threshold overrides, e.g. {"dead_relu": {"dead_fraction": 0.7}}',
    )
    diag.set_defaults(run=_diagnose)

    example = sub.add_parser(
        "example", help="write a small faulty digits checkpoint and batch to try diagnose on"
    )
    example.add_argument("directory", type=Path)
    example.set_defaults(run=_example)
    return parser


def _fail(message: str) -> int:
    print(f"gradhealth: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _diagnose(args: argparse.Namespace) -> int:
    for path, what in ((args.checkpoint, "checkpoint"), (args.batch, "batch")):
        if not path.is_file():
            return _fail(f"{what} file {str(path)!r} does not exist")
    rules_config = None
    if args.rules_config:
        try:
            rules_config = json.loads(args.rules_config.read_text())
        except (OSError, ValueError) as exc:
            return _fail(f"cannot read rules config {str(args.rules_config)!r}: {exc}")
    try:
        from gradhealth_server.device import native_stderr_silenced
    except ImportError as exc:
        return _fail(
            f"embedded mode needs the server extra: pip install 'gradhealth[server]' ({exc})"
        )
    with native_stderr_silenced():
        from gradhealth_server.diagnosis import Diagnoser
        from gradhealth_server.engine.probe import ProbeOptions
        from gradhealth_server.errors import GradhealthError

        options = ProbeOptions(mode=args.mode, jit_compile=False if args.no_xla else None)
    try:
        with native_stderr_silenced():
            diagnoser = Diagnoser(options=options, rules_config=rules_config)
        diagnosis = diagnoser.diagnose(args.checkpoint, args.batch)
    except GradhealthError as exc:
        return _fail(str(exc))
    except Exception as exc:  # a bug of ours: still one line, never a traceback
        return _fail(f"internal error ({type(exc).__name__}): {' '.join(str(exc).split())[:300]}")
    result = diagnosis.to_dict()
    if args.json:
        print(json.dumps(result))
    else:
        from gradhealth.render import render_verdict

        render_verdict(result)
    return 0


def _example(args: argparse.Namespace) -> int:
    try:
        from gradhealth_server.device import native_stderr_silenced
        from gradhealth_server.examples import write_example
    except ImportError as exc:
        return _fail(f"examples need the server extra: pip install 'gradhealth[server]' ({exc})")
    with native_stderr_silenced():
        checkpoint, batch = write_example(args.directory)
    print(f"wrote {checkpoint} and {batch}\nnext: gradhealth diagnose {checkpoint} --batch {batch}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
