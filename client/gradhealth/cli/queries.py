"""The query commands: `runs` (and `runs close`), `verdicts RUN`, `watch [RUN]`.
They talk to a server and need no TensorFlow."""

from __future__ import annotations

import argparse
import json

from gradhealth.cli.options import fail, make_client, server_arguments


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
    server_arguments(watch)
    watch.set_defaults(handler=_watch)


def query(args: argparse.Namespace, work) -> int:
    """Run a query against the server; errors print one line and exit 2."""
    import grpc

    try:
        with make_client(args, timeout=60.0) as client:
            work(client)
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
    import itertools

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
        for verdict in itertools.islice(found, args.limit or None):
            if args.json:
                print(json.dumps(verdict.to_dict()))
            else:
                render_verdict_line(verdict.to_dict())

    return query(args, work)


def _watch(args: argparse.Namespace) -> int:
    from gradhealth.render import render_verdict_line

    def work(client) -> None:
        for verdict in client.watch_verdicts(args.run, unhealthy_only=args.unhealthy):
            if args.json:
                print(json.dumps(verdict.to_dict()), flush=True)
            else:
                render_verdict_line(verdict.to_dict())

    return query(args, work)
