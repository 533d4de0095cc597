"""Every failure of a call, as the gRPC status and one-line message its caller
gets: the one place the service maps errors to statuses. `reason` labels the
rejected-calls metric."""

from __future__ import annotations

import errno

import grpc

from gradhealth_server.service.jobs import JobExpired, QueueFull
from gradhealth_server.service.worker import JobError, JobTimedOut, WorkerDied, WorkerOutOfMemory


class RpcFailure(Exception):
    """Ends a call with this status."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def invalid(message: str, reason: str = "invalid_upload") -> RpcFailure:
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, reason, message)


def too_large(message: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, "too_large", message)


def upload_late(reason: str, message: str) -> RpcFailure:
    """An upload that stalled, crawled or ran past its time (upload_timeout, upload_too_slow)."""
    return RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, reason, message)


def uploads_full(message: str) -> RpcFailure:
    """Every upload place is taken: the client retries later."""
    return RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, "uploads_full", message)


def unauthenticated(message: str) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", message)


def unavailable(state: str) -> RpcFailure:
    """Draining or warming up: the client retries, here or on another replica."""
    return RpcFailure(grpc.StatusCode.UNAVAILABLE, state, f"the server is {state}; retry")


def store_unavailable() -> RpcFailure:
    """A store that does not answer: clients retry, on another replica or later."""
    return RpcFailure(
        grpc.StatusCode.UNAVAILABLE, "store", "the verdict store is unavailable; retry"
    )


def not_found(what: str, name: str) -> RpcFailure:
    """A query for a verdict or a run the store does not hold."""
    return RpcFailure(grpc.StatusCode.NOT_FOUND, "not_found", f"no {what} {name[:80]!r}")


def bad_query(message: str) -> RpcFailure:
    """A query the store cannot run as asked (e.g. a page token it did not issue)."""
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "bad_query", message)


def shutting_down(again: str = "") -> RpcFailure:
    """A watch the server ends or refuses because it is stopping."""
    return RpcFailure(
        grpc.StatusCode.UNAVAILABLE, "shutting_down", f"the server is shutting down{again}"
    )


def fell_behind() -> RpcFailure:
    """A watcher too slow for the verdicts it asked for."""
    return RpcFailure(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "fell_behind",
        "this watcher fell too far behind the new verdicts; watch again",
    )


# What a worker's error means for the caller.
JOB_ERROR_STATUS = {
    JobError.INVALID_CHECKPOINT: grpc.StatusCode.INVALID_ARGUMENT,
    JobError.INVALID_BATCH: grpc.StatusCode.INVALID_ARGUMENT,
    JobError.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    JobError.CANCELLED: grpc.StatusCode.CANCELLED,
    JobError.INTERNAL: grpc.StatusCode.INTERNAL,
}


def job_failed(error: JobError, message: str) -> RpcFailure:
    return RpcFailure(JOB_ERROR_STATUS[error], error.value, message)


def failure_of(exc: Exception) -> RpcFailure | None:
    """The status of an exception from queueing, spooling or running a job; None
    for one that is not the caller's to see (a bug: it propagates)."""
    if isinstance(exc, QueueFull):
        return RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue_full", str(exc))
    if isinstance(exc, WorkerOutOfMemory):  # killed by its memory cap: the input's size
        return RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, "out_of_memory", str(exc))
    if isinstance(exc, WorkerDied):
        return RpcFailure(grpc.StatusCode.INTERNAL, "worker_died", str(exc))
    if isinstance(exc, JobExpired | JobTimedOut):
        return RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "timeout", str(exc))
    if isinstance(exc, OSError):  # the spool disk: full, gone, unwritable
        full = exc.errno == errno.ENOSPC
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if full else grpc.StatusCode.INTERNAL
        return RpcFailure(code, "spool", "the server could not store the upload")
    return None
