"""The bounded job queue between the API and the worker processes.

A call takes a slot when its upload is complete: a slow uploader holds a place
in the upload stage (upload.UploadStage), never the queue's. A full queue is
also reported at the header (check_room), before the client sends 2 GB.
One dispatcher task per worker takes jobs in order; a job whose call was
cancelled or whose deadline passed while it waited is dropped unrun, and a job
already running is told to stop at its next phase boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from gradhealth_server.metrics.service import ServiceMetrics
from gradhealth_server.service.worker import (
    Job,
    JobError,
    JobResult,
    JobTimedOut,
    Worker,
    WorkerDied,
)

log = logging.getLogger(__name__)


class QueueFull(Exception):
    pass


class JobExpired(Exception):
    """The call's deadline passed before a worker could take its job."""


class Slot:
    """A call's place in the queue, from its header until a worker takes its job."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue: JobQueue | None = queue

    def release(self) -> None:
        if self._queue is not None:
            self._queue._release()
            self._queue = None


@dataclass
class _Pending:
    job: Job
    deadline: float | None  # loop time
    result: asyncio.Future[JobResult]
    slot: Slot
    worker: Worker | None = None
    queued_at: float = 0.0
    started_at: float = field(default=0.0)


class JobQueue:
    def __init__(
        self,
        workers: list[Worker],
        capacity: int,
        metrics: ServiceMetrics,
        job_time_limit: float = 900.0,
    ) -> None:
        if not workers or capacity < 1:
            raise ValueError("a job queue needs at least one worker and one slot")
        self.workers = workers
        self.capacity = capacity
        self.metrics = metrics
        metrics.queue_capacity.set(capacity)
        metrics.workers.set(len(workers))
        self.job_time_limit = job_time_limit
        self.stopping = False
        self._slots = 0  # calls admitted and not yet handed to a worker
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._dispatchers: list[asyncio.Task[None]] = []
        self.ready = False

    def next_job_id(self) -> int:
        return next(self._ids)

    async def start(self) -> None:
        """Start every worker (TensorFlow loads in each), then dispatch."""
        starting = [asyncio.create_task(w.start()) for w in self.workers]
        try:
            await asyncio.gather(*starting)
        except BaseException:
            for task in starting:  # one failed: stop the others' children too
                task.cancel()
            await asyncio.gather(*starting, return_exceptions=True)
            raise
        self._dispatchers = [asyncio.create_task(self._dispatch(w)) for w in self.workers]
        self.ready = True

    async def stop(self) -> None:
        self.stopping = True
        self.ready = False
        for task in self._dispatchers:
            task.cancel()
        await asyncio.gather(*self._dispatchers, return_exceptions=True)
        await asyncio.gather(*(w.stop() for w in self.workers))

    def check_room(self) -> None:
        """QueueFull if a call arriving now could not be queued."""
        if self._slots >= self.capacity:
            raise QueueFull(
                f"the diagnosis queue is full ({self.capacity} calls waiting); retry later"
            )

    @contextlib.contextmanager
    def slot(self) -> Iterator[Slot]:
        """Take a place in the queue (QueueFull when there is none); it is given
        back when a worker takes the job or the call ends, whichever is first."""
        self.check_room()
        self._slots += 1
        self.metrics.queue_depth.set(self._slots)
        slot = Slot(self)
        try:
            yield slot
        finally:
            slot.release()

    def _release(self) -> None:
        self._slots -= 1
        self.metrics.queue_depth.set(self._slots)

    async def run(self, job: Job, slot: Slot, timeout: float | None) -> tuple[JobResult, float]:
        """Queue the job, wait for it; returns its result and the seconds it queued.

        If the caller is cancelled (the client went away, or its deadline passed)
        the job is dropped, or stopped if it already runs.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = _Pending(
            job,
            None if timeout is None else now + timeout,
            loop.create_future(),
            slot,
            queued_at=now,
        )
        self._queue.put_nowait(pending)
        try:
            result = await asyncio.shield(pending.result)
        except asyncio.CancelledError:
            if pending.worker is not None and not pending.result.done():
                pending.worker.cancel(job.job_id)
            pending.result.cancel()
            raise
        return result, pending.started_at - pending.queued_at

    async def _dispatch(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = await self._queue.get()
            pending.slot.release()
            if pending.result.done():  # cancelled while it waited
                self.metrics.dropped.labels("cancelled").inc()
                continue
            if pending.deadline is not None and loop.time() >= pending.deadline:
                self.metrics.dropped.labels("deadline").inc()
                pending.result.set_exception(
                    JobExpired("the call's deadline passed while it waited in the queue")
                )
                continue
            if not worker.alive:  # it died while idle: this job has not run yet
                await self._restart(worker)
            pending.worker = worker
            pending.started_at = loop.time()
            self.metrics.worker_busy.inc()
            try:
                result = await worker.run(pending.job, self.job_time_limit)
            except Exception as exc:  # a dispatcher must outlive any job
                if isinstance(exc, WorkerDied | JobTimedOut):
                    job = pending.job
                    log.error("%s: %s (run %s, step %d)", worker.name, exc, job.run_id, job.step)
                else:
                    log.exception("%s: job %s failed", worker.name, pending.job.job_id)
                if not pending.result.done():
                    pending.result.set_exception(exc)
                if not worker.alive:
                    await self._restart(worker)
                continue
            finally:
                self.metrics.worker_busy.dec()
            if result.error is JobError.CANCELLED:
                self.metrics.dropped.labels("cancelled").inc()
            if not pending.result.done():
                pending.result.set_result(result)

    async def _restart(self, worker: Worker) -> None:
        delay = 1.0
        while not self.stopping:
            self.metrics.worker_restarts.inc()
            try:
                await worker.restart()
                return
            except WorkerDied as exc:
                log.error("%s: %s; retrying in %.0f s", worker.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
