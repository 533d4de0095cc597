"""`gradhealth serve`: put the service together and run it until SIGTERM.

Start-up order matters to the load balancer: the port opens first with health
NOT_SERVING, the workers load TensorFlow, then health turns SERVING. On SIGTERM
health turns NOT_SERVING, new calls get UNAVAILABLE, calls in flight finish
(up to the grace period) while new ones get UNAVAILABLE, then the server and
the workers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from gradhealth.contract import MAX_REPLY_BYTES, MAX_REQUEST_BYTES, MiB
from gradhealth.v1 import service_pb2_grpc
from gradhealth_server.metrics.runs import RunMetrics, RunMetricsConfig
from gradhealth_server.metrics.service import ServiceMetrics
from gradhealth_server.service.api import SERVICE_NAME, GradientHealthServicer
from gradhealth_server.service.auth import BearerTokenAuth
from gradhealth_server.service.call_log import CallLog
from gradhealth_server.service.feed import VerdictFeed
from gradhealth_server.service.jobs import JobQueue
from gradhealth_server.service.upload import UploadLimits
from gradhealth_server.service.worker import Worker, WorkerConfig
from gradhealth_server.store.verdict_store import VerdictStore

log = logging.getLogger(__name__)

# After the Diagnose calls drained: time for replies and queries still on the wire.
FINAL_GRACE_S = 5.0


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: mutual TLS, clients must present a cert from it


@dataclass(frozen=True)
class ServeConfig:
    host: str = "[::]"
    port: int = 50051
    metrics_port: int | None = None
    # /metrics lists every run id: loopback unless the operator says otherwise
    # (the image sets 0.0.0.0 for a Prometheus in another container or pod).
    metrics_host: str = "127.0.0.1"
    metrics_tls: TlsFiles | None = None  # client_ca set: scrapers need a cert from it
    workers: int = 1
    queue_size: int = 8
    token: str | None = None
    tls: TlsFiles | None = None
    spool_dir: Path | None = None
    grace_seconds: float = 60.0
    # SQLAlchemy URL of the verdict store: a SQLite file, or PostgreSQL for replicas.
    db_url: str = "sqlite:///gradhealth.db"
    job_time_limit: float = 900.0
    run_metrics: RunMetricsConfig = field(default_factory=RunMetricsConfig)
    upload: UploadLimits = field(default_factory=UploadLimits)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    # SO_REUSEPORT: several servers share the port (and split its calls). Off, a
    # second server on a bound port fails to start instead.
    reuse_port: bool = False


@contextlib.contextmanager
def _spool_directory(configured: Path | None) -> Iterator[Path]:
    """Where uploads are written: the operator's directory, emptied of what a
    killed server left behind, or a private temporary one removed at exit."""
    if configured is None:
        with tempfile.TemporaryDirectory(prefix="gradhealth-spool-") as directory:
            yield Path(directory)
        return
    configured.mkdir(parents=True, exist_ok=True)
    for stale in configured.glob("gradhealth-*"):
        shutil.rmtree(stale, ignore_errors=True)
    probe = configured / ".gradhealth-write-test"
    probe.write_bytes(b"")  # fail at start-up, not on every call
    probe.unlink()
    yield configured


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    ca = tls.client_ca.read_bytes() if tls.client_ca else None
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


async def serve(config: ServeConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set; without one, until SIGTERM or SIGINT."""
    with _spool_directory(config.spool_dir) as spool:
        await _serve(config, spool, stop)


@contextlib.contextmanager
def serving_in_background(config: ServeConfig) -> Iterator[threading.Thread]:
    """The service on a thread of this process (the demo, notebooks), drained
    and stopped when the block ends. Diagnoses still run in worker processes.
    Yields the serving thread: it ends early when the service cannot start."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(serve(config, stop))
        except BaseException as exc:
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="gradhealth-serve", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stop.set)
        thread.join()
    if failure:
        raise failure[0]


async def _serve(config: ServeConfig, spool: Path, stop: asyncio.Event | None) -> None:
    metrics = ServiceMetrics()
    cap = config.worker.memory_limit_bytes
    log.info(
        "each of %d worker(s): %s",
        config.workers,
        f"address space capped at {cap // MiB} MiB on CPU" if cap else "no memory cap on CPU",
    )
    workers = [Worker(config.worker, f"worker-{i}") for i in range(config.workers)]
    jobs = JobQueue(workers, config.queue_size, metrics, config.job_time_limit)
    store = VerdictStore(config.db_url)  # applies the schema migrations
    metrics.registry.register(RunMetrics(store, config.run_metrics))
    if config.metrics_port is not None:
        try:
            _start_metrics(config, metrics)
        except OSError as exc:
            store.close()
            where = f"{config.metrics_host}:{config.metrics_port}"
            raise OSError(f"cannot serve metrics on {where}: {exc.strerror or exc}") from exc
    feed = VerdictFeed()
    following = asyncio.create_task(feed.follow(store))
    servicer = GradientHealthServicer(
        jobs, store, feed, config.worker.limits, metrics, spool, config.upload
    )
    interceptors: list[grpc.aio.ServerInterceptor] = [CallLog()]  # outermost: logs refusals too
    if config.token:
        interceptors.append(
            BearerTokenAuth(config.token, lambda: metrics.rejected.labels("unauthenticated").inc())
        )
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", MAX_REPLY_BYTES),
            ("grpc.so_reuseport", 1 if config.reuse_port else 0),
        ],
    )
    service_pb2_grpc.add_GradientHealthServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)

    address = f"{config.host}:{config.port}"
    try:
        if config.tls:
            server.add_secure_port(address, server_credentials(config.tls))
        else:
            server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        store.close()
        raise OSError(
            f"cannot listen on {address}: the port is in use (another gradhealth serve?) "
            "or not allowed; --reuse-port shares it on purpose"
        ) from exc
    await server.start()
    log.info(
        "gradhealth listening on %s (%s), verdicts in %s, starting workers",
        address,
        _security(config),
        _redacted(config.db_url),
    )

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    starting = asyncio.create_task(jobs.start())
    await asyncio.wait([starting, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
    if starting.done() and starting.exception() is None:
        await _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
        log.info("gradhealth serving")
        await stop.wait()

    log.info("draining: finishing calls in flight (grace %.0f s)", config.grace_seconds)
    servicer.draining = True  # new Diagnose calls: UNAVAILABLE, so clients retry elsewhere
    await _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        await asyncio.wait_for(servicer.drained(), config.grace_seconds)
    except TimeoutError:
        log.warning("grace period over: cancelling the calls still in flight")
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    await feed.poll(store)  # after the drain: watchers see the verdicts of the last calls
    feed.close()
    await server.stop(FINAL_GRACE_S)
    starting.cancel()
    await jobs.stop()
    store.close()
    if starting.done() and not starting.cancelled() and starting.exception() is not None:
        raise starting.exception()  # the workers could not start
    log.info("gradhealth stopped")


def _start_metrics(config: ServeConfig, metrics: ServiceMetrics) -> None:
    """Prometheus /metrics on its own address, over TLS (and mutual TLS) when
    configured, with what prometheus_client's server offers."""
    tls = config.metrics_tls
    start_http_server(
        config.metrics_port,
        addr=config.metrics_host.strip("[]"),
        registry=metrics.registry,
        certfile=str(tls.cert) if tls else None,
        keyfile=str(tls.key) if tls else None,
        client_cafile=str(tls.client_ca) if tls and tls.client_ca else None,
        client_auth_required=bool(tls and tls.client_ca),
    )
    scheme = "https" if tls else "http"
    log.info(
        "metrics on %s://%s:%d/metrics%s",
        scheme,
        config.metrics_host,
        config.metrics_port,
        " (client certificates required)" if tls and tls.client_ca else "",
    )


async def _set_health(servicer: health.aio.HealthServicer, status: int) -> None:
    for name in ("", SERVICE_NAME):
        await servicer.set(name, status)


def _redacted(url: str) -> str:
    """The database URL without its password, for the log."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _security(config: ServeConfig) -> str:
    tls = "no TLS" if not config.tls else ("mTLS" if config.tls.client_ca else "TLS")
    return f"{tls}, {'token auth' if config.token else 'no auth'}"
