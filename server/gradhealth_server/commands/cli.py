"""The server-side commands of the `gradhealth` CLI: `serve`, `demo`, `example`
and embedded `diagnose` (the engine in this process).

The client package registers them through the `gradhealth.commands` entry point
(pyproject.toml), so it never imports this package. Each handler imports what it
needs when it runs: a client-only install (no TensorFlow) gets one line naming
the extra to install instead of a traceback.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
from collections.abc import Callable
from pathlib import Path

from gradhealth.cli.options import (
    environment_defaults,
    fail,
    print_result,
    read_rules_config,
    read_token,
)
from gradhealth_server.commands import serve_options

# Top-level modules of the server extra; missing, they mean "install it".
SERVER_EXTRA = {
    "tensorflow", "keras", "h5py", "grpc_health", "grpc_reflection", "prometheus_client",
    "sqlalchemy", "alembic", "psycopg", "sklearn",
}  # fmt: skip


def needs_server_extra(command: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    def wrap(handler: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            try:
                return handler(args)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] not in SERVER_EXTRA:
                    raise
                return fail(
                    f"`gradhealth {command}` needs the server extra: install gradhealth[server] "
                    f"(pip install '.[server]' from a clone; {exc.name} is missing)"
                )

        return run

    return wrap


def register(sub: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add the server-side commands; return the hooks of the client's own commands
    (embedded `diagnose`)."""
    serve = sub.add_parser("serve", help="run the gradhealth gRPC service")
    serve_options.add_arguments(serve)
    environment_defaults(serve)
    serve.set_defaults(handler=_serve)

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
    return {"diagnose": _diagnose_embedded}


@needs_server_extra("diagnose")
def _diagnose_embedded(args: argparse.Namespace) -> int:
    """The engine in this process: no server, no database."""
    try:
        rules_config = read_rules_config(args.rules_config)
    except ValueError as exc:
        return fail(str(exc))
    from gradhealth_server.engine.device import native_stderr_silenced

    with native_stderr_silenced():
        from gradhealth_server.diagnosis import Diagnoser
        from gradhealth_server.engine.probe import ProbeOptions
        from gradhealth_server.errors import GradhealthError
        from gradhealth_server.intake.allow_list import parse_allow_list
        from gradhealth_server.intake.limits import Limits

        options = ProbeOptions(mode=args.mode, jit_compile=False if args.no_xla else None)
    limits = Limits(allowed_classes=parse_allow_list(args.allow_class))
    try:
        with native_stderr_silenced():
            diagnoser = Diagnoser(limits=limits, options=options, rules_config=rules_config)
    except (GradhealthError, ValueError) as exc:  # a bad rules config, an --allow-class module
        return fail(str(exc))
    try:
        diagnosis = diagnoser.diagnose(args.checkpoint, args.batch)
    except GradhealthError as exc:
        return fail(str(exc))
    except ModuleNotFoundError:
        raise  # a missing server extra: needs_server_extra names it
    except Exception as exc:  # a bug of ours: still one line, never a traceback
        return fail(f"internal error ({type(exc).__name__}): {' '.join(str(exc).split())[:300]}")
    return print_result(diagnosis.to_dict(), args.json)


@needs_server_extra("serve")
def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from gradhealth_server.intake.allow_list import missing_allowed_module, parse_allow_list
    from gradhealth_server.intake.limits import Limits, MiB
    from gradhealth_server.metrics.runs import RunMetricsConfig
    from gradhealth_server.rules import build_rules
    from gradhealth_server.service.serve import ServeConfig, TlsFiles, serve
    from gradhealth_server.service.upload import UploadLimits
    from gradhealth_server.service.worker import WorkerConfig, WorkerDied
    from gradhealth_server.store.db_url import normalize

    try:
        db_url = normalize(args.db)
        token = read_token(args.token_file)
        rules_config = read_rules_config(args.rules_config) or {}
        build_rules(rules_config)  # a bad config fails here, not in every worker
    except Exception as exc:
        return fail(str(exc))
    if args.log_format not in ("text", "json"):  # $GRADHEALTH_LOG_FORMAT skips argparse's check
        return fail(f"--log-format {args.log_format!r}: text or json")
    if args.workers < 1 or args.queue_size < 1:
        return fail("--workers and --queue-size must be at least 1")
    compile_cache = None
    if args.compile_cache:
        from gradhealth_server.engine.device import CompileCacheError, use_compile_cache

        try:  # checked here, once, so a bad directory stops the server, not each worker
            compile_cache = use_compile_cache(args.compile_cache)
        except (CompileCacheError, OSError) as exc:
            return fail(f"--compile-cache: {exc}")
    if bool(args.tls_cert) != bool(args.tls_key):
        return fail("TLS needs both --tls-cert and --tls-key")
    if args.tls_client_ca and not args.tls_cert:
        return fail("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    if bool(args.metrics_tls_cert) != bool(args.metrics_tls_key):
        return fail("TLS for /metrics needs both --metrics-tls-cert and --metrics-tls-key")
    if args.metrics_tls_client_ca and not args.metrics_tls_cert:
        return fail("--metrics-tls-client-ca needs --metrics-tls-cert and --metrics-tls-key")
    for path in (
        args.tls_cert,
        args.tls_key,
        args.tls_client_ca,
        args.metrics_tls_cert,
        args.metrics_tls_key,
        args.metrics_tls_client_ca,
    ):
        if path and not path.is_file():
            return fail(f"TLS file {str(path)!r} does not exist")
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
        return fail(f"{', '.join(bad)} must be positive")
    if args.worker_memory_mb is not None and args.worker_memory_mb < 0:
        return fail("--worker-memory-mb must be positive, or 0 for no cap")
    from gradhealth_server.service.memory_budget import (
        MIN_WORKER_BYTES,
        default_worker_memory_bytes,
    )

    if args.worker_memory_mb is None:
        memory_cap: int | None = default_worker_memory_bytes(args.workers)
    else:
        memory_cap = args.worker_memory_mb * MiB or None
    limits = Limits(
        # The other half: TensorFlow itself, the model, its optimizer state.
        max_probe_activation_bytes=min(
            Limits.max_probe_activation_bytes, (memory_cap or 1 << 62) // 2
        ),
        # The weights and optimizer state, beside TensorFlow's own address space.
        max_probe_state_bytes=min(
            Limits.max_probe_state_bytes,
            max((memory_cap or 1 << 62) - MIN_WORKER_BYTES, MIN_WORKER_BYTES // 4),
        ),
        max_checkpoint_bytes=int(args.max_checkpoint_mb * MiB),
        max_batch_bytes=int(args.max_batch_mb * MiB),
        max_batch_rows=args.max_batch_rows,
        max_parameters=args.max_parameters,
        allowed_classes=parse_allow_list(args.allow_class),
    )
    if problem := missing_allowed_module(limits.allowed_classes):
        return fail(problem)
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
        db_url=db_url,
        job_time_limit=args.job_timeout,
        run_metrics=RunMetricsConfig(args.run_metrics_window, args.run_metrics_max),
        upload=UploadLimits(
            args.upload_idle_timeout,
            args.upload_timeout,
            min_bytes_per_second=args.min_upload_kib_per_s * 1024,
            max_uploads=args.max_uploads,
        ),
        reuse_port=args.reuse_port,
        worker=WorkerConfig(
            limits=limits,
            rules_config=rules_config,
            cache_capacity=args.cache_size,
            disable_xla=args.no_xla,
            compile_cache=compile_cache,
            cancel_grace_seconds=args.cancel_grace,
            memory_limit_bytes=memory_cap,
            workers_per_gpu=args.workers,
            gpu_memory_mb=args.worker_gpu_memory_mb,
        ),
    )
    from gradhealth_server.service.call_log import configure_logging

    configure_logging(args.log_format)
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    # A native crash (gRPC, SQLite, a driver) leaves the Python stacks of every
    # thread in the log instead of a bare "exit -11".
    faulthandler.enable()
    try:
        asyncio.run(serve(config))
    except CommandError as exc:  # a database migrated by a newer gradhealth
        return fail(
            f"the verdict store's schema is not one this version knows ({exc}); "
            "run the newer gradhealth, or restore a backup"
        )
    except (WorkerDied, OSError, SQLAlchemyError) as exc:
        return fail(f"the server could not start: {' '.join(str(exc).split())[:300]}")
    return 0


@needs_server_extra("demo")
def _demo(args: argparse.Namespace) -> int:
    if args.epochs < 5:
        return fail("--epochs must be at least 5 (a stall needs five checkpoints)")
    from gradhealth_server.engine.device import native_stderr_silenced

    with native_stderr_silenced():
        import keras  # noqa: F401  (TensorFlow's start-up lines go nowhere)
    from gradhealth_server.commands.demo import run_demo

    try:
        return run_demo(args.bug, args.epochs, args.server)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError:
        raise
    except Exception as exc:
        return fail(f"the demo failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


@needs_server_extra("example")
def _example(args: argparse.Namespace) -> int:
    from gradhealth_server.commands.examples import write_example
    from gradhealth_server.engine.device import native_stderr_silenced

    with native_stderr_silenced():
        checkpoint, batch = write_example(args.directory)
    print(f"wrote {checkpoint} and {batch}\nnext: gradhealth diagnose {checkpoint} --batch {batch}")
    return 0
