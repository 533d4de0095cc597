"""Overload, cancellation, deadlines, a dying worker, SIGTERM and a late server:
the real server process, driven by the real client from threads."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from gradhealth import payload
from gradhealth.client import GradientHealthClient, Retry
from gradhealth.v1 import service_pb2, service_pb2_grpc
from tests.service import ServerProcess, free_port, kill, mlp_checkpoint

ONE_TRY = Retry(attempts=1)


class Call:
    """A client call running in a thread; result() re-raises its error."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn, args, kwargs) -> None:
        try:
            self._value = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the test thread
            self._error = exc

    def result(self, timeout: float = 300.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the call did not finish"
        if self._error is not None:
            raise self._error
        return self._value


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One worker, room for one waiting call. A cancelled job has all the time it
    needs to reach its next phase boundary (a loaded machine compiles slowly): the
    tests here check that the worker drops it and stays, not the grace's kill."""
    workdir = Path(tmp_path_factory.mktemp("tight"))
    process = ServerProcess(
        workdir, "--queue-size", "1", "--upload-idle-timeout", "2", "--cancel-grace", "300"
    ).start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def client(server):
    with GradientHealthClient(server.target, retry=ONE_TRY) as c:
        yield c


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory) -> Callable[[], Path]:
    """A new architecture each time: the worker must load and compile it (seconds)."""
    directory = Path(tmp_path_factory.mktemp("slow"))
    widths = itertools.count(100)

    def make() -> Path:
        width = next(widths)
        return mlp_checkpoint(directory / f"slow_{width}.keras", width=width, depth=8)

    return make


def _busy(server: ServerProcess, client, checkpoint: Path, batch: Path, run_id: str) -> Call:
    """Start a slow call and return once the worker is running it."""
    call = Call(client.diagnose, checkpoint, batch=batch, run_id=run_id)
    server.wait_metric("gradhealth_workers_busy", 1)
    return call


def _stored_runs(client) -> set[str]:
    return {run.run_id for run in client.list_runs()}


def test_a_full_queue_answers_resource_exhausted_at_once(
    server, client, slow_checkpoint, flat_batch, checkpoints, batch
):
    running = _busy(server, client, slow_checkpoint(), flat_batch, "full-a")
    waiting = Call(client.diagnose, checkpoints.path("cnn"), batch=batch, run_id="full-b")
    server.wait_metric("gradhealth_queue_depth", 1)
    with pytest.raises(grpc.RpcError) as caught:
        client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="full-c")
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in caught.value.details()
    assert running.result().run_id == "full-a"
    assert waiting.result().run_id == "full-b"
    assert server.metric("gradhealth_rejected_total", reason="queue_full") == 1
    assert "full-c" not in _stored_runs(client)


def test_a_cancelled_call_leaves_no_work_behind(
    server, client, slow_checkpoint, flat_batch, checkpoints, batch
):
    diagnosed = server.metric("gradhealth_diagnoses_total", status="healthy") + server.metric(
        "gradhealth_diagnoses_total", status="warning"
    )
    running = _busy(server, client, slow_checkpoint(), flat_batch, "cancel-a")
    part = payload.Part.of_file(checkpoints.path("cnn"))
    batch_part = payload.Part.of_file(batch)
    header = service_pb2.DiagnoseHeader(
        run_id="cancel-b", checkpoint=part.info(), batch=batch_part.info()
    )
    with server.channel() as channel:
        stub = service_pb2_grpc.GradientHealthServiceStub(channel)
        uploaded = server.metric("gradhealth_uploaded_bytes_total")
        future = stub.Diagnose.future(payload.requests(header, part, batch_part), timeout=300)
        # Its upload is done: the job waits in the queue.
        server.wait_metric(
            "gradhealth_uploaded_bytes_total", uploaded + part.size + batch_part.size
        )
        assert future.cancel()
        running.result()
        server.wait_metric("gradhealth_jobs_dropped_total", 1, reason="cancelled")
    assert server.metric("gradhealth_rejected_total", reason="cancelled") == 1
    after = server.metric("gradhealth_diagnoses_total", status="healthy") + server.metric(
        "gradhealth_diagnoses_total", status="warning"
    )
    assert after - diagnosed <= 1  # the running call only (it may also be critical)
    assert "cancel-b" not in _stored_runs(client)
    assert server.spooled() == []


def test_a_call_whose_deadline_passes_in_the_queue_is_dropped(
    server, client, slow_checkpoint, flat_batch, checkpoints, batch
):
    dropped = server.metric("gradhealth_jobs_dropped_total", reason="cancelled") + server.metric(
        "gradhealth_jobs_dropped_total", reason="deadline"
    )
    running = _busy(server, client, slow_checkpoint(), flat_batch, "deadline-a")
    with pytest.raises(grpc.RpcError) as caught:
        client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="deadline-b", timeout=1.0)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    running.result()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = server.metric("gradhealth_jobs_dropped_total", reason="cancelled") + server.metric(
            "gradhealth_jobs_dropped_total", reason="deadline"
        )
        if now == dropped + 1:
            break
        time.sleep(0.05)
    assert now == dropped + 1
    assert "deadline-b" not in _stored_runs(client)


def test_killing_the_worker_mid_call_gives_internal_and_the_next_call_works(
    server, client, slow_checkpoint, flat_batch, checkpoints, batch
):
    (worker,) = server.worker_pids()
    running = _busy(server, client, slow_checkpoint(), flat_batch, "killed")
    kill(worker)
    with pytest.raises(grpc.RpcError) as caught:
        running.result()
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "worker was killed by signal 9" in caught.value.details()
    assert server.health() == health_pb2.HealthCheckResponse.SERVING
    verdict = client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="after-kill")
    assert verdict.run_id == "after-kill"
    assert server.worker_pids() != [worker]
    assert server.metric("gradhealth_worker_restarts_total") == 1
    assert "killed" not in _stored_runs(client)


def test_sigterm_finishes_the_calls_in_flight(tmp_path, slow_checkpoint, flat_batch, checkpoints):
    server = ServerProcess(tmp_path, "--grace", "120").start()
    try:
        with GradientHealthClient(server.target, retry=ONE_TRY) as client:
            running = _busy(server, client, slow_checkpoint(), flat_batch, "in-flight")
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while server.health() == health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, "health still SERVING after SIGTERM"
                time.sleep(0.02)
            with pytest.raises(grpc.RpcError) as caught:
                client.diagnose(checkpoints.path("cnn"), batch=flat_batch, run_id="too-late")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            verdict = running.result()
        assert verdict.run_id == "in-flight" and verdict.findings is not None
        assert server.process.wait(60) == 0
        assert "draining" in server.log()
        assert server.spooled() == []
    finally:
        server.stop(signal.SIGKILL)


def test_a_native_crash_leaves_every_threads_stack_in_the_log(tmp_path):
    """A server that dies in native code (gRPC, a database driver) says where:
    faulthandler writes the Python stacks, and its idle workers leave with it."""
    server = ServerProcess(tmp_path).start()
    try:
        workers = server.worker_pids()
        assert workers
        server.process.send_signal(signal.SIGSEGV)
        assert server.process.wait(30) == -signal.SIGSEGV
        log = server.log()
        assert "Fatal Python error: Segmentation fault" in log, log
        assert "most recent call first" in log and "asyncio" in log, log
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its crashed server"
            time.sleep(0.1)
    finally:
        server.stop(signal.SIGKILL)


def test_the_client_retries_until_a_late_server_is_up(tmp_path, checkpoints, batch):
    port = free_port()
    retry = Retry(first_backoff_s=0.5, max_backoff_s=2.0)  # until the deadline
    # Asked to wait (without it a client fails fast when no server answers).
    with GradientHealthClient(
        f"127.0.0.1:{port}", retry=retry, timeout=120, wait_for_ready=True
    ) as client:
        call = Call(client.diagnose, checkpoints.path("cnn"), batch=batch, run_id="late")
        time.sleep(1.0)  # the client has met UNAVAILABLE by now
        server = ServerProcess(tmp_path, port=port).start(wait=False)
        try:
            assert call.result().run_id == "late"
        finally:
            assert server.stop() == 0, server.log()


def test_a_running_job_whose_deadline_passes_is_stopped_not_stored(
    server, client, slow_checkpoint, flat_batch
):
    (worker,) = server.worker_pids()
    # The deadline must pass while the worker runs the job, not while the checkpoint
    # uploads or waits (a loaded machine uploads slowly): a short deadline first, then
    # longer ones, until an attempt's job was dropped by the worker itself.
    for attempt, timeout in enumerate((0.8, 2.0, 4.0, 8.0)):
        cancelled = server.metric("gradhealth_jobs_dropped_total", reason="cancelled")
        run_id = f"too-slow-{attempt}"
        with pytest.raises(grpc.RpcError) as caught:
            client.diagnose(slow_checkpoint(), batch=flat_batch, run_id=run_id, timeout=timeout)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The worker drops a running job at its next phase boundary and stays up.
        server.wait_metric("gradhealth_workers_busy", 0)
        assert server.worker_pids() == [worker]
        assert run_id not in _stored_runs(client)
        try:
            server.wait_metric(
                "gradhealth_jobs_dropped_total", cancelled + 1, timeout=5, reason="cancelled"
            )
            return
        except TimeoutError:  # the deadline passed before the job reached the queue
            continue
    pytest.fail("no attempt's deadline passed while the worker ran its job")


def test_a_stalled_upload_is_cut_off_and_frees_its_slot(server, checkpoints):
    part = payload.Part.of_file(checkpoints.path("cnn"))
    header = service_pb2.DiagnoseHeader(
        run_id="stalled",
        checkpoint=part.info(),
        batch=service_pb2.UploadInfo(size_bytes=10, sha256="0" * 64),
    )

    def stalling():
        yield service_pb2.DiagnoseRequest(header=header)
        yield service_pb2.DiagnoseRequest(checkpoint_chunk=next(part.chunks(64 * 1024)))
        time.sleep(6)  # the server allows 2 s between chunks

    with server.channel() as channel:
        stub = service_pb2_grpc.GradientHealthServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Diagnose(stalling(), timeout=60)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "stalled" in caught.value.details()
    assert server.metric("gradhealth_queue_depth") == 0
    assert server.spooled() == []


def test_a_worker_that_died_idle_is_replaced_before_the_next_call(
    server, client, checkpoints, batch
):
    (worker,) = server.worker_pids()
    kill(worker)
    time.sleep(0.5)
    verdict = client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="after-idle-death")
    assert verdict.run_id == "after-idle-death"
    assert server.worker_pids() != [worker]


def test_a_retried_call_gets_the_stored_verdict_not_a_second_one(server, checkpoints, batch):
    part = payload.Part.of_file(checkpoints.path("cnn"))
    batch_part = payload.Part.of_file(batch)
    header = service_pb2.DiagnoseHeader(
        run_id="retried",
        checkpoint=part.info(),
        batch=batch_part.info(),
        request_id="0b7a4c1e-retry",
    )
    with server.channel() as channel:
        stub = service_pb2_grpc.GradientHealthServiceStub(channel)
        first = stub.Diagnose(payload.requests(header, part, batch_part), timeout=120)
        again = stub.Diagnose(payload.requests(header, part, batch_part), timeout=120)
    assert again.verdict == first.verdict
    assert server.metric("gradhealth_duplicate_requests_total") == 1
    with GradientHealthClient(server.target) as client:
        assert len(list(client.list_verdicts("retried"))) == 1


def test_a_job_over_the_time_limit_has_its_worker_replaced(
    tmp_path, slow_checkpoint, flat_batch, checkpoints, batch
):
    server = ServerProcess(tmp_path, "--job-timeout", "1").start()
    try:
        (worker,) = server.worker_pids()
        with GradientHealthClient(server.target, retry=ONE_TRY) as client:
            with pytest.raises(grpc.RpcError) as caught:
                client.diagnose(slow_checkpoint(), batch=flat_batch, run_id="too-long")
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "server's limit of 1 s" in caught.value.details()
            assert server.metric("gradhealth_worker_restarts_total") == 1
            server.wait_serving()
            assert server.worker_pids() != [worker]
    finally:
        assert server.stop() == 0, server.log()


def test_a_job_killed_after_its_deadline_is_followed_by_a_fresh_worker(
    tmp_path, flat_batch, checkpoints, batch
):
    """A client deadline passes mid-compile; the job does not reach a phase
    boundary within --cancel-grace, so its worker is killed. The cancellation
    of that job must not time out the replacement's start (it did: "did not
    start (exit code -9)" forever), and the next call is answered."""
    slow = mlp_checkpoint(tmp_path / "deep.keras", width=48, depth=40)
    server = ServerProcess(tmp_path / "server", "--cancel-grace", "0.01").start()
    try:
        (worker,) = server.worker_pids()
        with GradientHealthClient(server.target, retry=ONE_TRY) as client:
            with pytest.raises(grpc.RpcError) as caught:
                client.diagnose(slow, batch=flat_batch, run_id="expired", timeout=2.0)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            server.wait_metric("gradhealth_worker_restarts_total", 1)  # killed mid-compile
            # Before the fix this call hung whatever its deadline; the replacement
            # loads TensorFlow and compiles the CNN, minutes on a loaded 2-core box.
            verdict = client.diagnose(
                checkpoints.path("cnn"), batch=batch, run_id="after-kill", timeout=300
            )
            assert verdict.run_id == "after-kill"
            assert server.metric("gradhealth_worker_restarts_total") == 1
        assert server.worker_pids() not in ([], [worker])
        assert "did not start" not in server.log()
    finally:
        assert server.stop() == 0, server.log()


def test_slow_uploads_hold_upload_places_not_the_queue(tmp_path, checkpoints, batch):
    """Three clients trickling 64 KiB every 2 s: before, each held a queue slot
    from its header, and with --queue-size 1 every other call got
    RESOURCE_EXHAUSTED. A call now joins the queue when its upload is complete;
    the trickles are cut off for being under the minimum rate."""
    server = ServerProcess(tmp_path, "--queue-size", "1", "--max-uploads", "4").start()
    header = service_pb2.DiagnoseHeader(
        run_id="trickle",
        checkpoint=service_pb2.UploadInfo(size_bytes=10 * 2**20, sha256="0" * 64),
        batch=service_pb2.UploadInfo(size_bytes=10, sha256="0" * 64),
    )

    def trickle():
        yield service_pb2.DiagnoseRequest(header=header)
        for _ in range(20):
            yield service_pb2.DiagnoseRequest(checkpoint_chunk=b"\0" * 64 * 1024)
            time.sleep(2)

    def trickler() -> grpc.RpcError:
        with server.channel() as channel:
            stub = service_pb2_grpc.GradientHealthServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Diagnose(trickle(), timeout=60)
            return caught.value

    try:
        trickles = [Call(trickler) for _ in range(3)]
        server.wait_metric("gradhealth_uploads_in_progress", 3)
        with GradientHealthClient(server.target, retry=ONE_TRY) as client:
            verdict = client.diagnose(checkpoints.path("cnn"), batch=batch, run_id="beside")
        assert verdict.run_id == "beside"
        for call in trickles:
            error = call.result(60)
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
            assert "the upload is too slow" in error.details()
        assert server.metric("gradhealth_rejected_total", reason="upload_too_slow") == 3
        assert server.metric("gradhealth_uploads_in_progress") == 0
        assert server.spooled() == []
    finally:
        assert server.stop() == 0, server.log()
