"""`gradhealth` command line.

`gradhealth diagnose CHECKPOINT.keras --batch BATCH.npz [--json]` runs the
engine in-process (embedded mode, needs the `server` extra); with
`--server HOST:PORT [--run RUN --step N]` it asks a gradhealth service instead
and prints the same JSON. `runs`, `verdicts` and `watch` query a service.
`serve`, `demo` and `example` come from the server package through the
`gradhealth.commands` entry point. Bad input prints one line and exits 2; it
never shows a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

from gradhealth.cli.options import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    BadEnvironmentValue,
    allow_class_argument,
    connection_arguments,
    fail,
    make_client,
    print_result,
    show_defaults,
    version,
)
from gradhealth.cli.queries import add_query_commands

PLUGINS = "gradhealth.commands"
NEEDS_SERVER = (
    "needs the server extra: install gradhealth[server] (pip install '.[server]' from a clone)"
)
# Commands the server package provides; a client without it still names them.
SERVER_COMMANDS = {
    "serve": "run the gradhealth gRPC service",
    "demo": "start the service, train a digits CNN with a classic bug, apply the fix",
    "example": "write a small faulty digits checkpoint and batch to try diagnose on",
}
Hook = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    # A terminal user needs no TensorFlow start-up messages (set before TF loads).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        parser, hooks = _parser()
        try:
            args = parser.parse_args(argv)
        except BadEnvironmentValue as exc:
            return fail(str(exc))
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_BAD_INPUT
        if args.command == "diagnose":
            return _diagnose(args, hooks)
        return args.handler(args)
    except KeyboardInterrupt:  # Ctrl-C anywhere, even while TensorFlow imports
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def _parser() -> tuple[argparse.ArgumentParser, dict[str, Hook]]:
    parser = argparse.ArgumentParser(
        prog="gradhealth", description="Why is my Keras run not learning? Gradient-health verdicts."
    )
    parser.add_argument("--version", action="version", version=f"gradhealth {version()}")
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
    allow_class_argument(
        diag, "embedded mode: ", ". A server has its own (gradhealth serve --allow-class)"
    )
    remote = diag.add_argument_group("server mode")
    remote.add_argument("--server", metavar="HOST:PORT", help="diagnose on a gradhealth service")
    remote.add_argument(
        "--run",
        default="",
        help="run id the verdict is stored under (default: an ad-hoc run of its own, "
        "named in the output, that never alerts)",
    )
    remote.add_argument("--step", type=int, default=0, help="training step of the checkpoint")
    connection_arguments(remote)
    add_query_commands(sub)
    hooks = _plugins(sub)
    show_defaults(parser)
    return parser, hooks


def _plugins(sub: argparse._SubParsersAction) -> dict[str, Hook]:
    """Commands and hooks of installed plugins (the server package); the server
    commands a plugin did not provide say what to install."""
    hooks: dict[str, Hook] = {}
    for entry in entry_points(group=PLUGINS):
        try:
            hooks.update(entry.load()(sub) or {})
        except ImportError:  # a plugin whose own package is broken: its commands are absent
            continue
    for name, help_text in SERVER_COMMANDS.items():
        if name not in sub.choices:
            # Takes any arguments (no option is known to it): the answer is the same.
            stub = sub.add_parser(
                name, help=f"{help_text} ({NEEDS_SERVER})", add_help=False, prefix_chars="\0"
            )
            stub.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
            message = f"`gradhealth {name}` {NEEDS_SERVER}"
            stub.set_defaults(handler=lambda args, message=message: fail(message))
    return hooks


def _diagnose(args: argparse.Namespace, hooks: dict[str, Hook]) -> int:
    for path, what in ((args.checkpoint, "checkpoint"), (args.batch, "batch")):
        if not path.is_file():
            return fail(f"{what} file {str(path)!r} does not exist")
    if args.server:
        if args.allow_class:
            return fail(
                "--allow-class applies to embedded diagnose; a server trusts what its operator "
                "allowed (gradhealth serve --allow-class)"
            )
        return _diagnose_on_server(args)
    if "diagnose" not in hooks:
        return fail(f"embedded `gradhealth diagnose` {NEEDS_SERVER}; or pass --server HOST:PORT")
    return hooks["diagnose"](args)


def _diagnose_on_server(args: argparse.Namespace) -> int:
    import grpc

    from gradhealth.connect import ServerUnreachable

    try:
        client = make_client(args)
    except ValueError as exc:
        return fail(str(exc))
    try:
        with client:
            verdict = client.diagnose(
                args.checkpoint,
                batch=args.batch,
                run_id=args.run,
                step=args.step,
                mode=args.mode,
                disable_xla=args.no_xla,
            )
    except ServerUnreachable as exc:
        return fail(str(exc))
    except grpc.RpcError as error:
        return fail(f"{error.code().name}: {error.details()}")
    except OSError as exc:
        return fail(str(exc))
    if not args.run and not args.json:
        print(f"stored under the ad-hoc run {verdict.run_id} (ad-hoc runs never alert)")
    return print_result(verdict.to_dict(), args.json)
