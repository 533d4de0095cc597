"""The flags of `gradhealth serve`, each with its default and what it bounds
(README, "Configuration"; every flag also reads $GRADHEALTH_<FLAG>)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradhealth.cli.options import allow_class_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="[::]", help="address to bind (default: all)")
    parser.add_argument("--port", type=int, default=50051, help="gRPC port")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other processes (SO_REUSEPORT); without it a second "
        "server on a bound port is refused",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="server log lines: text, or JSON lines (one object per line)",
    )
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics here")
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address /metrics binds (default: loopback; it lists every run id)",
    )
    parser.add_argument("--metrics-tls-cert", type=Path, help="PEM certificate: /metrics over TLS")
    parser.add_argument("--metrics-tls-key", type=Path, help="PEM private key for /metrics")
    parser.add_argument(
        "--metrics-tls-client-ca", type=Path, help="scrapers of /metrics need a cert from this CA"
    )
    parser.add_argument(
        "--db",
        default="sqlite:///gradhealth.db",
        help="verdict store: a SQLAlchemy URL, sqlite:///FILE or "
        "postgresql+psycopg://USER:PASSWORD@HOST/DB",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one per GPU)")
    parser.add_argument(
        "--queue-size", type=int, default=8, help="calls that may wait; more get RESOURCE_EXHAUSTED"
    )
    parser.add_argument("--token-file", type=Path, help="require this bearer token (file)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain of the server")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of the server")
    parser.add_argument("--tls-client-ca", type=Path, help="require client certs from this CA")
    parser.add_argument(
        "--max-checkpoint-mb", type=float, default=2048, help="largest checkpoint upload"
    )
    parser.add_argument("--max-batch-mb", type=float, default=256, help="largest batch upload")
    parser.add_argument(
        "--max-batch-rows", type=int, default=4096, help="most rows a sample batch may have"
    )
    parser.add_argument(
        "--max-parameters",
        type=int,
        default=500_000_000,
        help="largest model accepted, in parameters (refused before it is built)",
    )
    allow_class_argument(parser, "", " (installed in the server image)")
    parser.add_argument(
        "--spool-dir", type=Path, help="where uploads are written (default: TMPDIR)"
    )
    parser.add_argument("--grace", type=float, default=60.0, help="seconds to drain on SIGTERM")
    parser.add_argument(
        "--job-timeout",
        type=float,
        default=900.0,
        help="longest diagnosis (s); its worker is killed",
    )
    parser.add_argument(
        "--cancel-grace",
        type=float,
        default=10.0,
        help="seconds a cancelled job has to stop before its worker is killed and replaced",
    )
    parser.add_argument(
        "--upload-timeout", type=float, default=900.0, help="longest upload (s) of one call"
    )
    parser.add_argument(
        "--upload-idle-timeout", type=float, default=30.0, help="longest wait (s) for a chunk"
    )
    parser.add_argument(
        "--min-upload-kib-per-s",
        type=float,
        default=64.0,
        help="an upload slower than this on average (after 10 s) is cut off",
    )
    parser.add_argument(
        "--max-uploads",
        type=int,
        default=16,
        help="calls uploading at once; a call joins the queue when its upload is complete",
    )
    parser.add_argument("--cache-size", type=int, default=8, help="architectures kept loaded")
    parser.add_argument(
        "--worker-memory-mb",
        type=int,
        help="address-space cap of each CPU worker (default: the machine's or container's "
        "memory less 10%% (at least 1 GiB), shared among the workers; 0: no cap)",
    )
    parser.add_argument(
        "--worker-gpu-memory-mb",
        type=int,
        help="GPU memory each GPU worker may use (default: 90%% of GPU 0, shared among "
        "the workers)",
    )
    parser.add_argument("--no-xla", action="store_true", help="never try XLA compilation")
    parser.add_argument(
        "--compile-cache",
        type=Path,
        help="keep XLA's compiled executables here (this user's alone, 0700), shared by "
        "workers, replicas and restarts: used where XLA is (a GPU, or GRADHEALTH_XLA=on)",
    )
    parser.add_argument("--rules-config", type=Path, help="JSON of threshold overrides")
    parser.add_argument(
        "--run-metrics-window",
        type=float,
        default=24 * 3600.0,
        help="seconds a run stays in the per-run gauges after its last checkpoint",
    )
    parser.add_argument(
        "--run-metrics-max", type=int, default=500, help="most runs in the per-run gauges"
    )
