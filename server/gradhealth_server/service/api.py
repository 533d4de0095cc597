"""GradientHealthService: the RPCs of gradhealth.v1, over grpc.aio.

Diagnose is the data path: check the header, spool the upload (in a bounded
upload stage), take a queue slot, hand the job to a worker, store the verdict,
reply. Every failure ends
the call with a status and a message for the sender; none ends the server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy.exc import SQLAlchemyError

from gradhealth.contract import PROBE_MODE_NAMES, enum_name
from gradhealth.v1 import service_pb2, service_pb2_grpc, verdict_pb2
from gradhealth_server.intake.limits import Limits
from gradhealth_server.metrics.service import ServiceMetrics
from gradhealth_server.rules.history import CheckpointSummary, RunHistory
from gradhealth_server.service.feed import CLOSED, FELL_BEHIND, VerdictFeed
from gradhealth_server.service.jobs import JobExpired, JobQueue, QueueFull
from gradhealth_server.service.status import (
    RpcFailure,
    bad_query,
    failure_of,
    fell_behind,
    invalid,
    job_failed,
    not_found,
    shutting_down,
    store_unavailable,
    unavailable,
)
from gradhealth_server.service.upload import (
    Spool,
    UploadLimits,
    UploadStage,
    check_close,
    check_header,
    receive_parts,
)
from gradhealth_server.service.worker import Job, JobTimedOut, WorkerDied
from gradhealth_server.store.rows import BadPageToken, store_error
from gradhealth_server.store.verdict_store import VerdictQuery, VerdictStore

log = logging.getLogger(__name__)

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["GradientHealthService"].full_name

# Earlier checkpoints handed to the history rules (stalled reads a window of them).
HISTORY_DEPTH = 20


def _settle_run_id(header: service_pb2.DiagnoseHeader) -> bool:
    """Give an ad-hoc diagnosis (no run id) a run of its own; True when ad hoc.
    Its id comes from the request id, so every retry of one call lands in one run."""
    if not header.run_id:
        header.run_id = f"adhoc-{header.request_id or uuid.uuid4()}"
        return True
    return header.ad_hoc


def _store_unavailable(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Queries answer UNAVAILABLE, not UNKNOWN with a driver's message, when the
    store is down."""

    @functools.wraps(handler)
    async def answer(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except SQLAlchemyError as exc:
            log.error("the verdict store failed: %s", store_error(exc))
            failure = store_unavailable()
            await context.abort(failure.code, failure.message)

    return answer


class GradientHealthServicer(service_pb2_grpc.GradientHealthServiceServicer):
    def __init__(
        self,
        jobs: JobQueue,
        store: VerdictStore,
        feed: VerdictFeed,
        limits: Limits,
        metrics: ServiceMetrics,
        spool_root: Path | None = None,
        upload_limits: UploadLimits | None = None,
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.feed = feed
        self.limits = limits
        self.metrics = metrics
        self.spool_root = spool_root
        self.upload_limits = upload_limits or UploadLimits()
        self.uploads = UploadStage(self.upload_limits.max_uploads, metrics.uploads)
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def drained(self) -> None:
        """Wait until no Diagnose call is in flight."""
        await self._idle.wait()

    # --- Diagnose -----------------------------------------------------------------

    async def Diagnose(
        self,
        request_iterator: AsyncIterator[service_pb2.DiagnoseRequest],
        context: grpc.aio.ServicerContext,
    ) -> service_pb2.DiagnoseResponse:
        self._in_flight += 1
        self._idle.clear()
        try:
            try:
                verdict = await self._diagnose(request_iterator, context)
            except SQLAlchemyError as exc:  # any of its reads or its write
                log.error("the verdict store failed: %s", store_error(exc))
                raise store_unavailable() from exc
        except RpcFailure as failure:
            self.metrics.rejected.labels(failure.reason).inc()
            self.metrics.diagnoses.labels("error").inc()
            await context.abort(failure.code, failure.message)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        return service_pb2.DiagnoseResponse(verdict=verdict)

    async def _diagnose(
        self,
        request_iterator: AsyncIterator[service_pb2.DiagnoseRequest],
        context: grpc.aio.ServicerContext,
    ) -> verdict_pb2.Verdict:
        started = time.perf_counter()
        if self.draining or not self.jobs.ready:
            raise unavailable("draining" if self.draining else "warming up")
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("part") != "header":
            raise invalid("the first message of a Diagnose stream must be its header")
        header = first.header
        check_header(header, self.limits)
        ad_hoc = _settle_run_id(header)
        if header.request_id:
            stored = await asyncio.to_thread(
                self.store.find_request, header.run_id, header.request_id
            )
            if stored is not None:  # a retry of a call that was answered: same verdict
                self.metrics.duplicates.inc()
                return stored
        try:
            self.jobs.check_room()  # a full queue says so before the client sends 2 GB
            with Spool(self.spool_root) as spool:
                with self.uploads.place():  # the upload stage, bounded on its own
                    await receive_parts(requests, header, spool, self.upload_limits)
                uploaded = time.perf_counter()
                sent = header.checkpoint.size_bytes + header.batch.size_bytes
                self.metrics.uploaded_bytes.inc(sent)
                with self.jobs.slot() as slot:  # admitted once its upload is complete
                    past = await asyncio.to_thread(self.store.history, header.run_id, HISTORY_DEPTH)
                    job = self._job(header, spool, past)
                    result, queued = await self.jobs.run(job, slot, context.time_remaining())
        except (QueueFull, WorkerDied, JobExpired, JobTimedOut, OSError) as exc:
            failure = failure_of(exc)
            if failure.reason == "spool":
                log.error("spooling failed: %s", exc)
            raise failure from exc
        except asyncio.CancelledError:
            self.metrics.rejected.labels("cancelled").inc()
            raise
        if result.error is not None:
            raise job_failed(result.error, result.message)
        verdict = verdict_pb2.Verdict.FromString(result.verdict)
        verdict.phase_seconds["upload"] = uploaded - started
        verdict.phase_seconds["queue"] = queued
        stored = time.perf_counter()
        # Committed before the reply: an answered verdict is never lost. The feed
        # learns of it from the store, as it learns of other replicas' verdicts.
        verdict = await asyncio.to_thread(
            self.store.add, verdict, header.request_id, ad_hoc, result.columns
        )
        self.metrics.duration.labels("store").observe(time.perf_counter() - stored)
        self._count(verdict, time.perf_counter() - started)
        return verdict

    def _job(
        self,
        header: service_pb2.DiagnoseHeader,
        spool: Spool,
        past: tuple[CheckpointSummary, ...],
    ) -> Job:
        metrics = header.training_metrics
        history = RunHistory(
            run_id=header.run_id,
            past=past,
            current_step=header.step,
            reported_accuracy=metrics.accuracy if metrics.HasField("accuracy") else None,
            reported_loss=metrics.loss if metrics.HasField("loss") else None,
        )
        return Job(
            job_id=self.jobs.next_job_id(),
            checkpoint=str(spool.checkpoint),
            batch=str(spool.batch),
            checkpoint_sha256=header.checkpoint.sha256,
            mode=PROBE_MODE_NAMES.get(header.options.mode, "full"),
            disable_xla=header.options.disable_xla,
            verdict_id=str(uuid.uuid4()),
            run_id=header.run_id,
            step=header.step,
            created=dt.datetime.now(dt.UTC),
            training_metrics=header.training_metrics.SerializeToString(),
            history=history,
        )

    def _count(self, verdict: verdict_pb2.Verdict, total: float) -> None:
        m = self.metrics
        m.diagnoses.labels(enum_name(verdict_pb2.Status, verdict.status, "STATUS_")).inc()
        for finding in verdict.findings:
            m.findings.labels(enum_name(verdict_pb2.Cause, finding.cause, "CAUSE_")).inc()
        for phase, seconds in verdict.phase_seconds.items():
            m.duration.labels(phase).observe(seconds)
        m.duration.labels("total").observe(total)
        (m.cache_hits if verdict.model_cache_hit else m.cache_misses).inc()

    # --- queries --------------------------------------------------------------------

    @_store_unavailable
    async def GetVerdict(
        self, request: service_pb2.GetVerdictRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.GetVerdictResponse:
        verdict = await asyncio.to_thread(self.store.get, request.verdict_id)
        if verdict is None:
            failure = not_found("verdict", request.verdict_id)
            await context.abort(failure.code, failure.message)
        return service_pb2.GetVerdictResponse(verdict=verdict)

    @_store_unavailable
    async def ListVerdicts(
        self, request: service_pb2.ListVerdictsRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ListVerdictsResponse:
        query = VerdictQuery(
            run_id=request.run_id,
            status=request.status,
            cause=request.cause,
            start_time=request.start_time if request.HasField("start_time") else None,
            end_time=request.end_time if request.HasField("end_time") else None,
        )
        verdicts, token = await _page(
            context, self.store.list_verdicts, query, request.page_size, request.page_token
        )
        return service_pb2.ListVerdictsResponse(verdicts=verdicts, next_page_token=token)

    @_store_unavailable
    async def ListRuns(
        self, request: service_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ListRunsResponse:
        runs, token = await _page(
            context, self.store.list_runs, request.page_size, request.page_token
        )
        return service_pb2.ListRunsResponse(runs=runs, next_page_token=token)

    @_store_unavailable
    async def CloseRun(
        self, request: service_pb2.CloseRunRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.CloseRunResponse:
        try:
            check_close(request)
        except RpcFailure as failure:
            await context.abort(failure.code, failure.message)
        run = await asyncio.to_thread(
            self.store.close_run,
            request.run_id,
            request.state,
            request.stop_cause,
            request.reason,
        )
        if run is None:
            failure = not_found("run", request.run_id)
            await context.abort(failure.code, failure.message)
        log.info(
            "run %s closed: %s%s",
            run.run_id,
            enum_name(service_pb2.RunState, run.state, "RUN_STATE_"),
            f" ({run.end_reason})" if run.end_reason else "",
        )
        return service_pb2.CloseRunResponse(run=run)

    async def WatchVerdicts(
        self, request: service_pb2.WatchVerdictsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[service_pb2.WatchVerdictsResponse]:
        if self.feed.closed:
            failure = shutting_down()
            await context.abort(failure.code, failure.message)
        try:
            with self.feed.watch() as queue:
                self.metrics.watchers.set(self.feed.watchers)
                while (item := await queue.get()) not in (FELL_BEHIND, CLOSED):
                    if request.run_id and item.run_id != request.run_id:
                        continue
                    if request.unhealthy_only and item.status == verdict_pb2.STATUS_HEALTHY:
                        continue
                    yield service_pb2.WatchVerdictsResponse(verdict=item)
        finally:
            self.metrics.watchers.set(self.feed.watchers)
        failure = fell_behind() if item == FELL_BEHIND else shutting_down("; watch again")
        await context.abort(failure.code, failure.message)


async def _page(
    context: grpc.aio.ServicerContext, query: Callable[..., tuple[list, str]], *args: Any
) -> tuple[list, str]:
    """One page of a store listing, off the event loop; a bad page token is the
    caller's INVALID_ARGUMENT."""
    try:
        return await asyncio.to_thread(query, *args)
    except BadPageToken as exc:
        failure = bad_query(str(exc))
        await context.abort(failure.code, failure.message)
        raise  # abort raises; this line only tells the type checker so
