"""The diagnosis worker: a child process that owns TensorFlow, the device and the
model cache.

A hostile or simply huge checkpoint can crash the process that loads it, or run
it out of memory. That process is never the server: the server holds a `Worker`
handle per child, sends it one job at a time over a pipe, and starts a fresh
child when one dies. The server process itself never imports TensorFlow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import faulthandler
import logging
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing.connection import Connection
from typing import Any

from gradhealth_server.intake.limits import DEFAULT_LIMITS, Limits
from gradhealth_server.rules.history import NO_HISTORY, CheckpointColumns, RunHistory
from gradhealth_server.service.worker_memory import JobMemory

log = logging.getLogger(__name__)

NO_JOB = -1
STARTUP_TIMEOUT_S = 300.0
# A cancelled job stops at its next phase boundary; one that has not after this
# long (stuck loading a huge checkpoint, say) has its worker killed.
CANCEL_GRACE_S = 10.0
POLL_S = 0.01


@dataclass(frozen=True)
class WorkerConfig:
    limits: Limits = DEFAULT_LIMITS
    rules_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache_capacity: int = 8
    disable_xla: bool = False
    # Where XLA's compiled executables are kept across workers, replicas and
    # restarts (engine/device.use_compile_cache), or None.
    compile_cache: str | None = None
    # Address-space cap of a CPU worker (RLIMIT_AS), or None. A model too big
    # for it fails its call with an out-of-memory error instead of taking the
    # machine's memory. `gradhealth serve` derives a default from the machine
    # (memory_budget). CUDA maps far more address space than it uses, so a GPU
    # worker is not given this cap but a share of its GPU's memory instead.
    memory_limit_bytes: int | None = None
    # Workers sharing GPU 0: each may use its share of the GPU's memory.
    workers_per_gpu: int = 1
    gpu_memory_mb: int | None = None  # None: derived from the GPU (memory_budget)
    # How long a cancelled job may take to reach its next phase boundary before
    # its worker is killed and replaced.
    cancel_grace_seconds: float = CANCEL_GRACE_S


@dataclass(frozen=True)
class Job:
    """One diagnosis, as the worker needs it: spooled files, not bytes."""

    job_id: int
    checkpoint: str
    batch: str
    checkpoint_sha256: str
    mode: str  # "full" | "norms"
    disable_xla: bool
    verdict_id: str
    run_id: str
    step: int
    created: dt.datetime
    training_metrics: bytes  # a serialized gradhealth.v1.TrainingMetrics
    history: RunHistory = NO_HISTORY  # the run's earlier checkpoints, from the store


class JobError(StrEnum):
    """Why a job produced no verdict (service/status.py maps each to a gRPC status)."""

    INVALID_CHECKPOINT = "invalid_checkpoint"
    INVALID_BATCH = "invalid_batch"
    TOO_LARGE = "too_large"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


@dataclass(frozen=True)
class JobResult:
    job_id: int
    verdict: bytes = b""  # a serialized gradhealth.v1.Verdict when error is None
    error: JobError | None = None
    message: str = ""
    # What the store keeps for the run's history, typed (with the verdict).
    columns: CheckpointColumns | None = None


class WorkerDied(Exception):
    """The child process ended while it held a job."""


class WorkerOutOfMemory(WorkerDied):
    """The child was killed by its memory cap (worker_memory.py tells)."""


class JobTimedOut(Exception):
    """The job ran past the server's time limit; its worker was replaced."""


class Worker:
    """The server's handle on one worker process.

    The pipe is polled from the event loop rather than read in a thread, so a
    busy worker holds no thread and a job can be timed and its worker killed.
    """

    def __init__(self, config: WorkerConfig, name: str = "worker-0") -> None:
        self.config = config
        self.name = name
        self._context = mp.get_context("spawn")  # never fork a process running gRPC
        self._cancel = self._context.Value("q", NO_JOB, lock=False)
        self._process: Any = None
        self._conn: Connection | None = None
        self._cancelled_at: float | None = None  # of the job running now, if any
        self._running: int = NO_JOB
        self._memory_cap: int | None = None  # the address-space cap the child applied
        self._memory: JobMemory | None = None  # the running job's, watched from here

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    async def start(self) -> None:
        """Start the child and wait until TensorFlow is loaded and it is ready."""
        parent, child = self._context.Pipe()
        # A fresh child owes nothing to the job its predecessor was killed for:
        # a cancellation left over from it must not time out this start.
        self._cancel.value = NO_JOB
        self._cancelled_at = None
        self._running = NO_JOB
        self._process = self._context.Process(
            target=_worker_main, args=(child, self._cancel, self.config), name=self.name
        )
        self._process.start()
        child.close()  # so that the child's death reads as EOF here
        self._conn = parent
        try:
            ready = await self._receive(
                deadline=time.monotonic() + STARTUP_TIMEOUT_S, cancellable=False
            )
        except (EOFError, OSError, TimeoutError) as exc:
            code = await self._reap()
            raise WorkerDied(f"{self.name} did not start (exit code {code})") from exc
        except asyncio.CancelledError:
            await self._reap()
            raise
        self._memory_cap = ready.get("memory_cap")
        log.info("%s ready, pid %s, device %s", self.name, self.pid, ready["device"])

    async def restart(self) -> None:
        await self._reap()
        await self.start()

    async def run(self, job: Job, time_limit: float) -> JobResult:
        """Run a job. WorkerDied: the child died before answering; JobTimedOut: it
        ran past `time_limit` seconds, or did not stop soon after a cancel, and
        was killed. Either way the caller restarts the worker."""
        assert self._conn is not None, "start() the worker first"
        self._cancelled_at = None
        self._running = job.job_id
        memory = self._memory = JobMemory.start(self.pid or 0, self._memory_cap)
        try:
            self._conn.send(job)
            result: JobResult = await self._receive(
                deadline=time.monotonic() + time_limit, cancellable=True
            )
        except TimeoutError as exc:  # (an OSError: caught first)
            await self._reap()
            if self._cancelled_at is not None:
                raise JobTimedOut("the cancelled job did not stop; its worker was killed") from exc
            raise JobTimedOut(
                f"the diagnosis ran past the server's limit of {time_limit:.0f} s; "
                "its worker was replaced"
            ) from exc
        except (EOFError, OSError) as exc:
            code = await self._reap(wait=2.0)  # EOF comes as it exits: let it finish
            if why := memory.verdict(code):
                raise WorkerOutOfMemory(
                    f"the diagnosis worker died on this checkpoint and batch: {why}; send "
                    "fewer rows or a smaller model, or raise --worker-memory-mb. A fresh "
                    "worker was started"
                ) from exc
            raise WorkerDied(_death(code)) from exc
        finally:
            self._cancel.value = NO_JOB
            self._cancelled_at = None
            self._running = NO_JOB
            self._memory = None
        return result

    def cancel(self, job_id: int) -> None:
        """Ask the child to drop this job at its next phase boundary; a child that
        has not stopped `cancel_grace_seconds` later is killed. A job that is not
        (or no longer) running here is ignored: its cancellation must not outlive it."""
        if job_id != self._running:
            return
        self._cancel.value = job_id
        self._cancelled_at = time.monotonic()

    async def _receive(self, deadline: float, cancellable: bool) -> Any:
        """The child's next message; TimeoutError past `deadline` or, for a job
        (`cancellable`), once a cancellation's grace has run out."""
        assert self._conn is not None
        grace = self.config.cancel_grace_seconds
        while not self._conn.poll():
            if cancellable and self._memory is not None:
                self._memory.sample()
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError
            cancelled_at = self._cancelled_at
            if cancellable and cancelled_at is not None and now - cancelled_at > grace:
                raise TimeoutError
            await asyncio.sleep(POLL_S)
        return self._conn.recv()  # EOFError when the child died

    async def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        if self._conn is not None and self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)
        await asyncio.to_thread(self._process.join, timeout)
        await self._reap()

    async def _reap(self, wait: float = 0.0) -> int | None:
        """Make sure the child is gone (killed if it has not ended `wait` seconds
        from now); its exit code (negative: the signal)."""
        process, self._process = self._process, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if process is None:
            return None
        if wait:
            await asyncio.to_thread(process.join, wait)
        if process.is_alive():
            process.kill()
        await asyncio.to_thread(process.join, 10.0)
        return process.exitcode


def _death(code: int | None) -> str:
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited ({code})"
    hint = " (out of memory?)" if code == -9 else ""
    return f"the diagnosis worker {how}{hint} while diagnosing this checkpoint; it was restarted"


# --- the child process -------------------------------------------------------------


def _worker_main(conn: Connection, cancel: Any, config: WorkerConfig) -> None:
    """Load TensorFlow once, then diagnose jobs until told to stop."""
    # The server handles Ctrl-C and SIGTERM (to the whole process group in a
    # terminal) by draining; it stops its workers itself when the drain is over.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    faulthandler.enable()  # a crash in TensorFlow's C++ leaves the Python stack in the log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from gradhealth_server.engine.device import native_stderr_silenced, quiet_tensorflow

    with native_stderr_silenced():
        quiet_tensorflow()
        if config.compile_cache:  # before TensorFlow reads its XLA flags
            from gradhealth_server.engine.device import use_compile_cache

            use_compile_cache(config.compile_cache)
        import tensorflow as tf

        from gradhealth_server.diagnosis import Diagnoser
        from gradhealth_server.engine.probe import ProbeOptions

        on_gpu = bool(tf.config.list_physical_devices("GPU"))  # does not initialise CUDA
        if config.memory_limit_bytes and not on_gpu:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (config.memory_limit_bytes,) * 2)
        gpu_mb = None
        if on_gpu:
            from gradhealth_server.service.memory_budget import gpu_share_mb

            gpu_mb = config.gpu_memory_mb or gpu_share_mb(config.workers_per_gpu)
        diagnoser = Diagnoser(
            limits=config.limits,
            options=ProbeOptions(jit_compile=False if config.disable_xla else None),
            cache_capacity=config.cache_capacity,
            rules_config=config.rules_config,
            gpu_memory_mb=gpu_mb,
        )
    capped = bool(config.memory_limit_bytes) and not on_gpu
    conn.send(
        {
            "pid": os.getpid(),
            "device": diagnoser.device,
            "memory_cap": config.memory_limit_bytes if capped else None,
        }
    )
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the server is gone
            return
        if job is None:
            return
        conn.send(_run(diagnoser, job, cancel))


def _run(diagnoser: Any, job: Job, cancel: Any) -> JobResult:
    from gradhealth.v1 import verdict_pb2
    from gradhealth_server.errors import (
        Cancelled,
        InvalidBatch,
        InvalidCheckpoint,
        LimitExceeded,
    )
    from gradhealth_server.verdict.wire import to_verdict

    options = dataclasses.replace(
        diagnoser.options,
        mode=job.mode,
        jit_compile=False if job.disable_xla else diagnoser.options.jit_compile,
    )
    try:
        diagnosis = diagnoser.diagnose(
            job.checkpoint,
            job.batch,
            options,
            checkpoint_sha256=job.checkpoint_sha256,
            should_stop=lambda: cancel.value == job.job_id,
            history=job.history,
        )
        verdict = to_verdict(
            diagnosis,
            verdict_id=job.verdict_id,
            run_id=job.run_id,
            step=job.step,
            created=job.created,
            training_metrics=verdict_pb2.TrainingMetrics.FromString(job.training_metrics),
        )
        return JobResult(
            job.job_id,
            verdict=verdict.SerializeToString(),
            columns=CheckpointColumns.of(diagnosis.measurements),
        )
    except InvalidCheckpoint as exc:
        return JobResult(job.job_id, error=JobError.INVALID_CHECKPOINT, message=str(exc))
    except InvalidBatch as exc:
        return JobResult(job.job_id, error=JobError.INVALID_BATCH, message=str(exc))
    except LimitExceeded as exc:
        return JobResult(job.job_id, error=JobError.TOO_LARGE, message=str(exc))
    except Cancelled as exc:
        return JobResult(job.job_id, error=JobError.CANCELLED, message=str(exc))
    except MemoryError:  # an allocation past RLIMIT_AS that Python saw
        return JobResult(
            job.job_id,
            error=JobError.TOO_LARGE,
            message="the diagnosis ran out of memory in this worker (--worker-memory-mb): "
            "send fewer rows or a smaller model, or raise --worker-memory-mb",
        )
    except Exception as exc:  # a bug of ours, or TensorFlow failing: the call says so
        log.exception("job %s failed", job.job_id)
        text = " ".join(str(exc).split())[:300]
        return JobResult(
            job.job_id, error=JobError.INTERNAL, message=f"{type(exc).__name__}: {text}"
        )
