"""What every `gradhealth` command shares: flags from the environment, the
connection flags, one-line errors, the token, the client. Server-side commands
(the `gradhealth.commands` plugin of the server package) use these too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 1  # the server answered: no such run
EXIT_INTERRUPTED = 130  # Ctrl-C: quiet, like any shell command


class RunNotFound(Exception):
    """The server answered and knows no such run."""


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("gradhealth")
    except PackageNotFoundError:  # run from a source tree
        from gradhealth import __version__

        return __version__


class DefaultsFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless it says it already or
    has none (a switch, an optional file)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or not action.option_strings
            or default in (None, False, argparse.SUPPRESS)
            or action.nargs == 0
        ):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def show_defaults(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = DefaultsFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                show_defaults(child)


class BadEnvironmentValue(Exception):
    """A GRADHEALTH_* variable argparse cannot convert. Not a ValueError, which
    argparse would report as the flag's own error, with the usage."""


def environment_defaults(parser: argparse.ArgumentParser) -> None:
    """Every --flag of `parser` defaults to $GRADHEALTH_<FLAG> when that is set and
    not empty (--metrics-port: GRADHEALTH_METRICS_PORT; --no-xla: GRADHEALTH_NO_XLA=1).
    A flag on the command line wins: argparse converts the variable's text with the
    flag's own type only when the flag is absent."""
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        name = f"GRADHEALTH_{action.dest.upper()}"
        action.help = f"{action.help or ''} [${name}]".lstrip()
        if raw := os.environ.get(name):
            if action.nargs == 0:  # a store_true switch: the variable is a boolean
                convert, kind = _boolean, "boolean"
            else:
                convert = action.type or str
                kind = getattr(convert, "__name__", "value")
            action.default = raw
            action.type = _from_environment(name, raw, convert, kind)


def _from_environment(
    name: str, raw: str, convert: Callable[[str], object], kind: str
) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            return convert(text)
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            if text is not raw:  # a bad value on the command line: argparse's own error
                raise
            raise BadEnvironmentValue(f"{name}: invalid {kind} value: {raw!r}") from None

    parse.__name__ = kind  # argparse names it in its own errors
    return parse


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=os.environ.get("GRADHEALTH_SERVER", "localhost:50051"),
        help="the gradhealth service (default: $GRADHEALTH_SERVER or localhost:50051)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (one object per line)")
    connection_arguments(parser.add_argument_group("connection"))


def connection_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--token-file", type=Path, help="bearer token file (default: $GRADHEALTH_TOKEN)"
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS")
    group.add_argument("--tls-ca", type=Path, help="CA bundle of the server's certificate")
    group.add_argument("--tls-cert", type=Path, help="client certificate for mutual TLS")
    group.add_argument("--tls-key", type=Path, help="client key for mutual TLS")


ALLOW_CLASS_HELP = (
    "classes and functions outside Keras to trust (custom layers, losses, metrics "
    "registered with keras.saving.register_keras_serializable); each MODULE is imported"
)


def allow_class_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, before: str, after: str
) -> None:
    """--allow-class of embedded `diagnose` and of `serve`: one flag, one account of
    what it trusts, each command saying where the classes must be installed."""
    parser.add_argument(
        "--allow-class", metavar="MODULE.CLASS[,...]", help=f"{before}{ALLOW_CLASS_HELP}{after}"
    )


def fail(message: str) -> int:
    print(f"gradhealth: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def read_token(path: Path | None) -> str | None:
    if path is None:
        return os.environ.get("GRADHEALTH_TOKEN") or None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read token file {str(path)!r}: {exc}") from exc
    if not token:
        raise ValueError(f"token file {str(path)!r} is empty")
    return token


def read_rules_config(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read rules config {str(path)!r}: {exc}") from exc


def print_result(result: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result))
    else:
        from gradhealth.render import render_verdict

        render_verdict(result)
    return 0


def make_client(args: argparse.Namespace, timeout: float = 600.0):
    from gradhealth.client import GradientHealthClient, Tls

    use_tls = args.tls or args.tls_ca or args.tls_cert or args.tls_key
    tls = Tls(args.tls_ca, args.tls_cert, args.tls_key) if use_tls else None
    return GradientHealthClient(
        args.server, token=read_token(args.token_file), tls=tls, timeout=timeout
    )
