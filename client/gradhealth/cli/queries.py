"""The query commands: `runs` (and `runs close`), `verdicts RUN`, `watch [RUN]`,
`report RUN`. They talk to a server and need no TensorFlow."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path

from gradhealth.cli.options import (
    EXIT_NOT_FOUND,
    RunNotFound,
    fail,
    make_client,
    server_arguments,
)


def add_query_commands(sub: argparse._SubParsersAction) -> None:
    runs = sub.add_parser(
        "runs",
        help="list the runs a server knows, with their latest status; "
        "`runs close RUN` marks one over",
    )
    server_arguments(runs)
    runs.set_defaults(handler=_runs)
    close = runs.add_subparsers(dest="runs_command").add_parser(
        "close", help="mark a run finished (or --stopped): its alerts resolve"
    )
    close.add_argument("run", help="run id")
    close.add_argument(
        "--stopped", action="store_true", help="stopped early (by a verdict or by hand)"
    )
    close.add_argument("--cause", help="with --stopped: the cause that stopped it")
    close.add_argument("--reason", default="", help="why, in a few words (kept with the run)")
    server_arguments(close)
    close.set_defaults(handler=_close_run)

    verdicts = sub.add_parser("verdicts", help="list a run's verdicts, newest first")
    verdicts.add_argument("run", help="run id")
    verdicts.add_argument("--limit", type=int, default=20, help="at most this many (0: all)")
    verdicts.add_argument(
        "--status", choices=("healthy", "warning", "critical"), help="only these verdicts"
    )
    verdicts.add_argument("--cause", help="only verdicts with a finding of this cause")
    server_arguments(verdicts)
    verdicts.set_defaults(handler=_verdicts)

    watch = sub.add_parser("watch", help="print new verdicts as they are stored (Ctrl-C ends)")
    watch.add_argument("run", nargs="?", default="", help="only this run")
    watch.add_argument("--unhealthy", action="store_true", help="only warning and critical")
    watch.add_argument(
        "--since",
        metavar="AGO|TIME",
        help="first print the verdicts stored since then (10m, 2h, 1d, or an ISO time); "
        "without it only verdicts stored from now on",
    )
    server_arguments(watch)
    watch.set_defaults(handler=_watch)

    report = sub.add_parser(
        "report",
        help="draw a run's history: loss, accuracy, per-layer gradient norms and update "
        "ratios, findings (needs gradhealth[report])",
    )
    report.add_argument("run", help="run id")
    report.add_argument(
        "-o",
        "--output",
        type=Path,
        help="where to write it: .html (one self-contained page) or .png; default RUN.html",
    )
    report.add_argument(
        "--limit", type=int, default=500, help="the newest this many verdicts (0: all)"
    )
    server_arguments(report)
    report.set_defaults(handler=_report)


def query(args: argparse.Namespace, work) -> int:
    """Run a query against the server; errors print one line and exit 2 (no
    server, refused) or 1 (no such run)."""
    import grpc

    from gradhealth.connect import ServerUnreachable

    try:
        with make_client(args, timeout=60.0) as client:
            work(client)
    except RunNotFound as exc:
        print(f"gradhealth: error: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except ServerUnreachable as exc:
        return fail(str(exc))
    except grpc.RpcError as error:
        return fail(f"{error.code().name}: {error.details()}")
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        pass
    return 0


def _runs(args: argparse.Namespace) -> int:
    from gradhealth.render import render_runs
    from gradhealth.verdicts import run_to_dict

    def work(client) -> None:
        runs = [run_to_dict(r) for r in client.list_runs()]
        if args.json:
            for run in runs:
                print(json.dumps(run))
        else:
            render_runs(runs)

    return query(args, work)


def _close_run(args: argparse.Namespace) -> int:
    from gradhealth.render import render_runs
    from gradhealth.v1 import verdict_pb2
    from gradhealth.verdicts import run_to_dict

    if args.cause and not args.stopped:
        return fail("--cause goes with --stopped")
    causes = verdict_pb2.Cause.DESCRIPTOR.values_by_name
    if args.cause and f"CAUSE_{args.cause.upper()}" not in causes:
        return fail(f"no cause named {args.cause!r}")

    def work(client) -> None:
        run = client.close_run(
            args.run,
            "stopped" if args.stopped else "finished",
            stop_cause=args.cause,
            reason=args.reason,
        )
        if args.json:
            print(json.dumps(run_to_dict(run)))
        else:
            render_runs([run_to_dict(run)])

    return query(args, work)


def _verdicts(args: argparse.Namespace) -> int:
    from gradhealth.render import render_verdict_line
    from gradhealth.v1 import verdict_pb2

    filters = {}
    if args.status:
        filters["status"] = verdict_pb2.Status.Value(f"STATUS_{args.status.upper()}")
    if args.cause:
        try:
            filters["cause"] = verdict_pb2.Cause.Value(f"CAUSE_{args.cause.upper()}")
        except ValueError:
            return fail(f"no cause named {args.cause!r}")

    def work(client) -> None:
        found = client.list_verdicts(args.run, page_size=min(args.limit or 100, 100), **filters)
        printed = 0
        for verdict in itertools.islice(found, args.limit or None):
            printed += 1
            if args.json:
                print(json.dumps(verdict.to_dict()))
            else:
                render_verdict_line(verdict.to_dict())
        if not printed:
            _require_run(client, args.run)
            print(f"run {args.run!r} has no verdicts that match", file=sys.stderr)

    return query(args, work)


def _watch(args: argparse.Namespace) -> int:
    from gradhealth.render import render_verdict_line

    try:
        since = _since(args.since) if args.since else None
    except ValueError as exc:
        return fail(str(exc))

    def show(verdict) -> None:
        if args.json:
            print(json.dumps(verdict.to_dict()), flush=True)
        else:
            render_verdict_line(verdict.to_dict())

    def work(client) -> None:
        stream = client.watch_verdicts(args.run, unhealthy_only=args.unhealthy)
        shown: set[str] = set()
        if since is not None:
            from google.protobuf.timestamp_pb2 import Timestamp

            start = Timestamp()
            start.FromDatetime(since)
            past = list(client.list_verdicts(args.run, page_size=100, start_time=start))
            for verdict in reversed(past):  # oldest first, as the watch goes on
                if args.unhealthy and verdict.status == "healthy":
                    continue
                shown.add(verdict.verdict_id)
                show(verdict)
        for verdict in stream:
            if verdict.verdict_id not in shown:
                show(verdict)

    return query(args, work)


def _report(args: argparse.Namespace) -> int:
    try:
        from gradhealth.report import ReportError, write_report
    except ImportError as exc:
        return fail(f"report needs matplotlib: pip install 'gradhealth[report]' ({exc})")
    output = args.output or Path(f"{_safe_name(args.run)}.html")
    if output.suffix.lower() not in (".html", ".png"):
        return fail(f"--output {str(output)!r}: write .html or .png")

    def work(client) -> None:
        _require_run(client, args.run)
        runs = {run.run_id: run for run in client.list_runs()}
        newest = client.list_verdicts(args.run, page_size=100)
        verdicts = list(itertools.islice(newest, args.limit or None))
        try:
            write_report(args.run, verdicts, runs.get(args.run), output)
        except ReportError as exc:
            raise ValueError(str(exc)) from exc
        noun = "verdict" if len(verdicts) == 1 else "verdicts"
        print(f"wrote {output} ({len(verdicts)} {noun} of run {args.run})")

    return query(args, work)


def _require_run(client, run: str) -> None:
    """RunNotFound unless the server has at least one verdict of `run`."""
    if next(iter(client.list_verdicts(run, page_size=1)), None) is None:
        raise RunNotFound(f"no run {run!r} on {client.target} (`gradhealth runs` lists them)")


def _since(text: str):
    """10m, 2h, 1d, 30s, or an ISO 8601 time (UTC unless it says): a datetime."""
    import datetime as dt

    if match := re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip()):
        seconds = float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (30s, 10m, 2h, 1d) or an ISO time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _safe_name(run: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run)[:100] or "run"
