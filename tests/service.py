"""The real gradhealth server as a subprocess on loopback, for integration tests.

Tests talk to it only as users do: gRPC (the real client or raw stubs), the
Prometheus /metrics endpoint, signals. Worker pids are read from /proc.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from gradhealth.v1 import service_pb2, service_pb2_grpc
from tests import processes

TOKEN = "test-token-3f9a"
START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`gradhealth serve` in a child process, with its own spool dir and log."""

    def __init__(
        self, workdir: Path, *args: str, port: int | None = None, db: str | None = None
    ) -> None:
        self.workdir = workdir
        self.db = db or f"sqlite:///{workdir / 'verdicts.db'}"
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.spool = workdir / "spool"
        self.spool.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> ServerProcess:
        command = [
            sys.executable,
            "-m",
            "gradhealth.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            "--spool-dir",
            str(self.spool),
            "--db",
            self.db,
            *self.args,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        processes.started(self)
        if wait:
            try:
                self.wait_serving()
            except BaseException:
                self.stop(signal.SIGKILL, timeout=10)
                raise
        return self

    def wait_serving(self, timeout: float = START_TIMEOUT_S, credentials=None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{self.log()}")
            if self.health(credentials) == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.2)
        raise TimeoutError(f"server not SERVING after {timeout} s:\n{self.log()}")

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        if credentials is not None:
            return grpc.secure_channel(self.target, credentials)
        return grpc.insecure_channel(self.target)

    def health(self, credentials=None, service: str = "") -> int | None:
        """The health status, or None while the port does not answer."""
        with self.channel(credentials) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
            except grpc.RpcError:
                return None

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_metric(
        self, name: str, value: float, timeout: float = 60.0, at_least: bool = False, **labels: str
    ) -> None:
        """Until the metric equals `value` (or, with at_least, reaches it: a counter
        that several workers bump at once can step over it between two polls)."""
        deadline = time.monotonic() + timeout

        def reached(current: float) -> bool:
            return current >= value if at_least else current == value

        while not reached(self.metric(name, **labels)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}{labels} never became {value}")
            time.sleep(0.02)

    def worker_pids(self) -> list[int]:
        """Children started by multiprocessing's spawn (not its resource tracker)."""
        assert self.process is not None
        pids = []
        # Threads and processes come and go while we look (asyncio.to_thread,
        # restarts): one that ended meanwhile is simply not counted.
        try:
            tasks = list(Path(f"/proc/{self.process.pid}/task").iterdir())
        except (FileNotFoundError, ProcessLookupError):  # the server is gone
            return []
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            for pid in children:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except (FileNotFoundError, ProcessLookupError):
                    continue
                if b"spawn_main" in cmdline:
                    pids.append(int(pid))
        return pids

    def spooled(self) -> list[Path]:
        return list(self.spool.iterdir())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def token_metadata(token: str = TOKEN) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def raw_diagnose(
    server: ServerProcess,
    messages: Iterable[service_pb2.DiagnoseRequest],
    token: str = TOKEN,
    timeout: float = 120.0,
) -> service_pb2.DiagnoseResponse:
    """Send a hand-made Diagnose stream (the client library only makes good ones)."""
    with server.channel() as channel:
        stub = service_pb2_grpc.GradientHealthServiceStub(channel)
        return stub.Diagnose(iter(list(messages)), timeout=timeout, metadata=token_metadata(token))


def mlp_checkpoint(path: Path, width: int, depth: int = 2, optimizer: str = "adam") -> Path:
    """A small digits MLP, trained one epoch; its width makes it a new architecture."""
    import keras

    from tests.models import digits

    x, y = digits()
    x = x.reshape(len(x), -1)
    model = keras.Sequential(
        [keras.Input((64,))]
        + [keras.layers.Dense(width, activation="relu") for _ in range(depth)]
        + [keras.layers.Dense(10, activation="softmax")],
        name=f"mlp_{width}x{depth}",
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:512], y[:512], epochs=1, batch_size=64, verbose=0)
    model.save(path)
    return path


def digits_batch(path: Path, rows: int = 128, flat: bool = False) -> Path:
    """Digits images (n, 8, 8, 1) for the CNNs, or flat (n, 64) for the MLPs."""
    from tests.models import digits

    x, y = digits()
    x = x[:rows].reshape(rows, 64) if flat else x[:rows]
    np.savez(path, x=x, y=y[:rows])
    return path


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def cli(
    *args: str, token: str | None = TOKEN, timeout: float = 300.0
) -> subprocess.CompletedProcess:
    """`gradhealth ARGS` in a subprocess, as a user runs it (token from the environment)."""
    env = {"PATH": "/usr/bin:/bin", **({"GRADHEALTH_TOKEN": token} if token else {})}
    return subprocess.run(
        [sys.executable, "-m", "gradhealth.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=timeout,
    )


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MiB. Not `ru_maxrss`: Linux
    carries that over `exec` from the parent, so a bench's child reported the peak of
    the parent that had just trained a model."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class MemoryWatch:
    """Peak RSS of the server process and of its workers, sampled every 50 ms."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.peak_server = self.peak_workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        assert self.server.process is not None
        while not self._stop.wait(0.05):
            self.peak_server = max(self.peak_server, rss_bytes(self.server.process.pid))
            workers = sum(rss_bytes(pid) for pid in self.server.worker_pids())
            self.peak_workers = max(self.peak_workers, workers)
