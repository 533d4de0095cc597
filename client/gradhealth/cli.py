"""`gradhealth` command line.

`gradhealth diagnose CHECKPOINT.keras --batch BATCH.npz [--json]` runs the
engine in-process (embedded mode, needs the `server` extra); with
`--server HOST:PORT --run RUN --step N` it asks a gradhealth service instead and
prints the same JSON. `gradhealth serve` runs that service. Bad input prints one
line and exits 2; it never shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    # A terminal user needs no TensorFlow start-up messages (set before TF loads).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except BadEnvironmentValue as exc:
        return _fail(str(exc))
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    return args.handler(args)


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
    remote = diag.add_argument_group("server mode")
    remote.add_argument("--server", metavar="HOST:PORT", help="diagnose on a gradhealth service")
    remote.add_argument("--run", default="cli", help="run id the verdict is stored under")
    remote.add_argument("--step", type=int, default=0, help="training step of the checkpoint")
    _connection_arguments(remote)
    diag.set_defaults(handler=_diagnose)

    serve = sub.add_parser("serve", help="run the gradhealth gRPC service")
    serve.add_argument("--host", default="[::]", help="address to bind (default: all)")
    serve.add_argument("--port", type=int, default=50051)
    serve.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics here")
    serve.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address /metrics binds (default: loopback; it lists every run id)",
    )
    serve.add_argument("--metrics-tls-cert", type=Path, help="PEM certificate: /metrics over TLS")
    serve.add_argument("--metrics-tls-key", type=Path, help="PEM private key for /metrics")
    serve.add_argument(
        "--metrics-tls-client-ca", type=Path, help="scrapers of /metrics need a cert from this CA"
    )
    serve.add_argument(
        "--db",
        default="sqlite:///gradhealth.db",
        help="verdict store: a SQLAlchemy URL, sqlite:///FILE or "
        "postgresql+psycopg://USER:PASSWORD@HOST/DB",
    )
    serve.add_argument("--workers", type=int, default=1, help="worker processes (one per GPU)")
    serve.add_argument(
        "--queue-size", type=int, default=8, help="calls that may wait; more get RESOURCE_EXHAUSTED"
    )
    serve.add_argument("--token-file", type=Path, help="require this bearer token (file)")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain of the server")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of the server")
    serve.add_argument("--tls-client-ca", type=Path, help="require client certs from this CA")
    serve.add_argument("--max-checkpoint-mb", type=float, default=2048)
    serve.add_argument("--max-batch-mb", type=float, default=256)
    serve.add_argument(
        "--max-batch-rows", type=int, default=4096, help="most rows a sample batch may have"
    )
    serve.add_argument(
        "--max-parameters",
        type=int,
        default=500_000_000,
        help="largest model accepted, in parameters (refused before it is built)",
    )
    serve.add_argument(
        "--allow-class",
        metavar="MODULE.CLASS[,...]",
        help="layer classes outside Keras to trust (they must be importable by the server)",
    )
    serve.add_argument("--spool-dir", type=Path, help="where uploads are written (default: TMPDIR)")
    serve.add_argument("--grace", type=float, default=60.0, help="seconds to drain on SIGTERM")
    serve.add_argument(
        "--job-timeout",
        type=float,
        default=900.0,
        help="longest diagnosis (s); its worker is killed",
    )
    serve.add_argument(
        "--cancel-grace",
        type=float,
        default=10.0,
        help="seconds a cancelled job has to stop before its worker is killed and replaced",
    )
    serve.add_argument(
        "--upload-timeout", type=float, default=900.0, help="longest upload (s) of one call"
    )
    serve.add_argument(
        "--upload-idle-timeout", type=float, default=30.0, help="longest wait (s) for a chunk"
    )
    serve.add_argument(
        "--min-upload-kib-per-s",
        type=float,
        default=64.0,
        help="an upload slower than this on average (after 10 s) is cut off",
    )
    serve.add_argument(
        "--max-uploads",
        type=int,
        default=16,
        help="calls uploading at once; a call joins the queue when its upload is complete",
    )
    serve.add_argument("--cache-size", type=int, default=8, help="architectures kept loaded")
    serve.add_argument(
        "--worker-memory-mb",
        type=int,
        help="address-space cap of each CPU worker (default: the machine's or container's "
        "memory less 10%% (at least 1 GiB), shared among the workers; 0: no cap)",
    )
    serve.add_argument(
        "--worker-gpu-memory-mb",
        type=int,
        help="GPU memory each GPU worker may use (default: 90%% of GPU 0, shared among "
        "the workers)",
    )
    serve.add_argument("--no-xla", action="store_true", help="never try XLA compilation")
    serve.add_argument("--rules-config", type=Path, help="JSON of threshold overrides")
    serve.add_argument(
        "--run-metrics-window",
        type=float,
        default=24 * 3600.0,
        help="seconds a run stays in the per-run gauges after its last checkpoint",
    )
    serve.add_argument(
        "--run-metrics-max", type=int, default=500, help="most runs in the per-run gauges"
    )
    _environment_defaults(serve)
    serve.set_defaults(handler=_serve)

    runs = sub.add_parser("runs", help="list the runs a server knows, with their latest status")
    _server_arguments(runs)
    runs.set_defaults(handler=_runs)

    verdicts = sub.add_parser("verdicts", help="list a run's verdicts, newest first")
    verdicts.add_argument("run", help="run id")
    verdicts.add_argument("--limit", type=int, default=20, help="at most this many (0: all)")
    verdicts.add_argument(
        "--status", choices=("healthy", "warning", "critical"), help="only these verdicts"
    )
    verdicts.add_argument("--cause", help="only verdicts with a finding of this cause")
    _server_arguments(verdicts)
    verdicts.set_defaults(handler=_verdicts)

    watch = sub.add_parser("watch", help="print new verdicts as they are stored (Ctrl-C ends)")
    watch.add_argument("run", nargs="?", default="", help="only this run")
    watch.add_argument("--unhealthy", action="store_true", help="only warning and critical")
    _server_arguments(watch)
    watch.set_defaults(handler=_watch)

    demo = sub.add_parser(
        "demo",
        help="start the service, train a digits CNN with a classic bug, watch the verdicts, "
        "apply the fix",
    )
    demo.add_argument(
        "--bug",
        choices=("pixels", "learning-rate"),
        default="pixels",
        help="pixels: 0-255 input never divided by 255; learning-rate: Adam at 1.0",
    )
    demo.add_argument("--epochs", type=int, default=12, help="epochs of each training run")
    demo.add_argument(
        "--server", metavar="HOST:PORT", help="use this service instead of starting one"
    )
    demo.set_defaults(handler=_demo)

    example = sub.add_parser(
        "example", help="write a small faulty digits checkpoint and batch to try diagnose on"
    )
    example.add_argument("directory", type=Path)
    example.set_defaults(handler=_example)
    return parser


class BadEnvironmentValue(Exception):
    """A GRADHEALTH_* variable argparse cannot convert. Not a ValueError, which
    argparse would report as the flag's own error, with the usage."""


def _environment_defaults(parser: argparse.ArgumentParser) -> None:
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


def _server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=os.environ.get("GRADHEALTH_SERVER", "localhost:50051"),
        help="the gradhealth service (default: $GRADHEALTH_SERVER or localhost:50051)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (one object per line)")
    _connection_arguments(parser.add_argument_group("connection"))


def _connection_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--token-file", type=Path, help="bearer token file (default: $GRADHEALTH_TOKEN)"
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS")
    group.add_argument("--tls-ca", type=Path, help="CA bundle of the server's certificate")
    group.add_argument("--tls-cert", type=Path, help="client certificate for mutual TLS")
    group.add_argument("--tls-key", type=Path, help="client key for mutual TLS")


def _fail(message: str) -> int:
    print(f"gradhealth: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _diagnose(args: argparse.Namespace) -> int:
    for path, what in ((args.checkpoint, "checkpoint"), (args.batch, "batch")):
        if not path.is_file():
            return _fail(f"{what} file {str(path)!r} does not exist")
    if args.server:
        return _diagnose_on_server(args)
    try:
        rules_config = _rules_config(args.rules_config)
    except ValueError as exc:
        return _fail(str(exc))
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
    return _print(diagnosis.to_dict(), args.json)


def _print(result: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result))
    else:
        from gradhealth.render import render_verdict

        render_verdict(result)
    return 0


def _rules_config(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read rules config {str(path)!r}: {exc}") from exc


def _diagnose_on_server(args: argparse.Namespace) -> int:
    import grpc

    try:
        client = _client(args)
    except ValueError as exc:
        return _fail(str(exc))
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
    except grpc.RpcError as error:
        return _fail(f"{error.code().name}: {error.details()}")
    except OSError as exc:
        return _fail(str(exc))
    return _print(verdict.to_dict(), args.json)


def _client(args: argparse.Namespace, timeout: float = 600.0):
    from gradhealth.client import GradientHealthClient, Tls

    use_tls = args.tls or args.tls_ca or args.tls_cert or args.tls_key
    tls = Tls(args.tls_ca, args.tls_cert, args.tls_key) if use_tls else None
    return GradientHealthClient(
        args.server, token=_token(args.token_file), tls=tls, timeout=timeout
    )


def _query(args: argparse.Namespace, work) -> int:
    """Run a query against the server; errors print one line and exit 2."""
    import grpc

    try:
        with _client(args, timeout=60.0) as client:
            work(client)
    except grpc.RpcError as error:
        return _fail(f"{error.code().name}: {error.details()}")
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
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

    return _query(args, work)


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
            return _fail(f"no cause named {args.cause!r}")

    def work(client) -> None:
        found = client.list_verdicts(args.run, page_size=min(args.limit or 100, 100), **filters)
        for verdict in itertools.islice(found, args.limit or None):
            if args.json:
                print(json.dumps(verdict.to_dict()))
            else:
                render_verdict_line(verdict.to_dict())

    return _query(args, work)


def _watch(args: argparse.Namespace) -> int:
    from gradhealth.render import render_verdict_line

    def work(client) -> None:
        for verdict in client.watch_verdicts(args.run, unhealthy_only=args.unhealthy):
            if args.json:
                print(json.dumps(verdict.to_dict()), flush=True)
            else:
                render_verdict_line(verdict.to_dict())

    return _query(args, work)


def _token(path: Path | None) -> str | None:
    if path is None:
        return os.environ.get("GRADHEALTH_TOKEN") or None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read token file {str(path)!r}: {exc}") from exc
    if not token:
        raise ValueError(f"token file {str(path)!r} is empty")
    return token


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    try:
        from gradhealth_server.limits import Limits, MiB
        from gradhealth_server.rules import build_rules
        from gradhealth_server.run_metrics import RunMetricsConfig
        from gradhealth_server.serve import ServeConfig, TlsFiles, serve
        from gradhealth_server.upload import UploadLimits
        from gradhealth_server.worker import WorkerConfig, WorkerDied
    except ImportError as exc:
        return _fail(f"serve needs the server extra: pip install 'gradhealth[server]' ({exc})")
    try:
        token = _token(args.token_file)
        rules_config = _rules_config(args.rules_config) or {}
        build_rules(rules_config)  # a bad config fails here, not in every worker
    except Exception as exc:
        return _fail(str(exc))
    if args.workers < 1 or args.queue_size < 1:
        return _fail("--workers and --queue-size must be at least 1")
    if bool(args.tls_cert) != bool(args.tls_key):
        return _fail("TLS needs both --tls-cert and --tls-key")
    if args.tls_client_ca and not args.tls_cert:
        return _fail("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    if bool(args.metrics_tls_cert) != bool(args.metrics_tls_key):
        return _fail("TLS for /metrics needs both --metrics-tls-cert and --metrics-tls-key")
    if args.metrics_tls_client_ca and not args.metrics_tls_cert:
        return _fail("--metrics-tls-client-ca needs --metrics-tls-cert and --metrics-tls-key")
    for path in (
        args.tls_cert,
        args.tls_key,
        args.tls_client_ca,
        args.metrics_tls_cert,
        args.metrics_tls_key,
        args.metrics_tls_client_ca,
    ):
        if path and not path.is_file():
            return _fail(f"TLS file {str(path)!r} does not exist")
    positive = {
        "--max-batch-rows": args.max_batch_rows,
        "--max-parameters": args.max_parameters,
        "--run-metrics-max": args.run_metrics_max,
        "--run-metrics-window": args.run_metrics_window,
        "--cancel-grace": args.cancel_grace,
        "--min-upload-kib-per-s": args.min_upload_kib_per_s,
        "--max-uploads": args.max_uploads,
        "--worker-gpu-memory-mb": args.worker_gpu_memory_mb or 1,
    }
    if bad := [flag for flag, value in positive.items() if value <= 0]:
        return _fail(f"{', '.join(bad)} must be positive")
    if args.worker_memory_mb is not None and args.worker_memory_mb < 0:
        return _fail("--worker-memory-mb must be positive, or 0 for no cap")
    from gradhealth_server.memory_budget import default_worker_memory_bytes

    if args.worker_memory_mb is None:
        memory_cap: int | None = default_worker_memory_bytes(args.workers)
    else:
        memory_cap = args.worker_memory_mb * MiB or None
    limits = Limits(
        # The other half: TensorFlow itself, the model, its optimizer state.
        max_probe_activation_bytes=min(
            Limits.max_probe_activation_bytes, (memory_cap or 1 << 62) // 2
        ),
        max_checkpoint_bytes=int(args.max_checkpoint_mb * MiB),
        max_batch_bytes=int(args.max_batch_mb * MiB),
        max_batch_rows=args.max_batch_rows,
        max_parameters=args.max_parameters,
        allowed_classes=frozenset(
            name.strip() for name in (args.allow_class or "").split(",") if name.strip()
        ),
    )
    config = ServeConfig(
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        metrics_tls=TlsFiles(
            args.metrics_tls_cert, args.metrics_tls_key, args.metrics_tls_client_ca
        )
        if args.metrics_tls_cert
        else None,
        workers=args.workers,
        queue_size=args.queue_size,
        token=token,
        tls=TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None,
        spool_dir=args.spool_dir,
        grace_seconds=args.grace,
        db_url=args.db,
        job_time_limit=args.job_timeout,
        run_metrics=RunMetricsConfig(args.run_metrics_window, args.run_metrics_max),
        upload=UploadLimits(
            args.upload_idle_timeout,
            args.upload_timeout,
            min_bytes_per_second=args.min_upload_kib_per_s * 1024,
            max_uploads=args.max_uploads,
        ),
        worker=WorkerConfig(
            limits=limits,
            rules_config=rules_config,
            cache_capacity=args.cache_size,
            disable_xla=args.no_xla,
            cancel_grace_seconds=args.cancel_grace,
            memory_limit_bytes=memory_cap,
            workers_per_gpu=args.workers,
            gpu_memory_mb=args.worker_gpu_memory_mb,
        ),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        asyncio.run(serve(config))
    except CommandError as exc:  # a database migrated by a newer gradhealth
        return _fail(
            f"the verdict store's schema is not one this version knows ({exc}); "
            "run the newer gradhealth, or restore a backup"
        )
    except (WorkerDied, OSError, SQLAlchemyError) as exc:
        return _fail(f"the server could not start: {' '.join(str(exc).split())[:300]}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.epochs < 5:
        return _fail("--epochs must be at least 5 (a stall needs five checkpoints)")
    try:
        from gradhealth_server.device import native_stderr_silenced

        with native_stderr_silenced():
            import keras  # noqa: F401  (TensorFlow's start-up lines go nowhere)
        from gradhealth_server.demo import run_demo
    except ImportError as exc:
        return _fail(f"the demo needs the server extra: pip install 'gradhealth[server]' ({exc})")
    try:
        return run_demo(args.bug, args.epochs, args.server)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _fail(f"the demo failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


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
