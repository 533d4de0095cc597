"""Where verdicts are kept and queried.

Until the run-history store (SQLAlchemy) lands, the service keeps verdicts in
memory: queries answer for this replica's lifetime only. The interface is the
one the persistent store will have.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from gradhealth.v1 import service_pb2, verdict_pb2

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class BadPageToken(ValueError):
    pass


@dataclass(frozen=True)
class VerdictQuery:
    run_id: str = ""
    status: int = verdict_pb2.STATUS_UNSPECIFIED
    cause: int = verdict_pb2.CAUSE_UNSPECIFIED
    start_time: Timestamp | None = None
    end_time: Timestamp | None = None

    def matches(self, v: verdict_pb2.Verdict) -> bool:
        if self.run_id and v.run_id != self.run_id:
            return False
        if self.status and v.status != self.status:
            return False
        if self.cause and self.cause not in {f.cause for f in v.findings}:
            return False
        when = v.create_time.ToNanoseconds()
        if self.start_time is not None and when < self.start_time.ToNanoseconds():
            return False
        return self.end_time is None or when < self.end_time.ToNanoseconds()


def page_bounds(page_size: int, page_token: str) -> tuple[int, int]:
    size = DEFAULT_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)
    if not page_token:
        return 0, size
    try:
        offset = int(base64.urlsafe_b64decode(page_token.encode()).decode())
    except ValueError as exc:
        raise BadPageToken(f"page_token {page_token[:40]!r} is not one this server gave") from exc
    if offset < 0:
        raise BadPageToken("page_token is not one this server gave")
    return offset, size


def next_token(offset: int, size: int, total: int) -> str:
    end = offset + size
    return base64.urlsafe_b64encode(str(end).encode()).decode() if end < total else ""


class MemoryStore:
    """Verdicts of this process, oldest evicted past `capacity`; thread-safe."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._verdicts: dict[str, verdict_pb2.Verdict] = {}  # insertion order: oldest first
        self._requests: dict[tuple[str, str], str] = {}  # (run_id, request_id) -> verdict_id

    def add(self, verdict: verdict_pb2.Verdict, request_id: str = "") -> None:
        with self._lock:
            self._verdicts[verdict.verdict_id] = verdict
            if request_id:
                self._requests[(verdict.run_id, request_id)] = verdict.verdict_id
            while len(self._verdicts) > self.capacity:
                self._verdicts.pop(next(iter(self._verdicts)))
            if len(self._requests) > self.capacity:
                self._requests = {k: v for k, v in self._requests.items() if v in self._verdicts}

    def find_request(self, run_id: str, request_id: str) -> verdict_pb2.Verdict | None:
        """The verdict an earlier attempt of this call stored, if any."""
        with self._lock:
            verdict_id = self._requests.get((run_id, request_id))
            return self._verdicts.get(verdict_id) if verdict_id else None

    def get(self, verdict_id: str) -> verdict_pb2.Verdict | None:
        with self._lock:
            return self._verdicts.get(verdict_id)

    def _newest_first(self) -> list[verdict_pb2.Verdict]:
        with self._lock:
            verdicts = list(self._verdicts.values())
        return sorted(verdicts, key=lambda v: (v.create_time.ToNanoseconds(), v.step), reverse=True)

    def list_verdicts(
        self, query: VerdictQuery, page_size: int, page_token: str
    ) -> tuple[list[verdict_pb2.Verdict], str]:
        offset, size = page_bounds(page_size, page_token)
        found = [v for v in self._newest_first() if query.matches(v)]
        return found[offset : offset + size], next_token(offset, size, len(found))

    def list_runs(self, page_size: int, page_token: str) -> tuple[list[service_pb2.Run], str]:
        offset, size = page_bounds(page_size, page_token)
        runs: dict[str, service_pb2.Run] = {}
        for v in self._newest_first():
            run = runs.get(v.run_id)
            if run is None:
                run = runs[v.run_id] = service_pb2.Run(
                    run_id=v.run_id,
                    latest_status=v.status,
                    latest_primary_cause=v.primary_cause,
                    latest_step=v.step,
                    last_diagnosis_time=v.create_time,
                )
            run.verdict_count += 1
        ordered = list(runs.values())
        return ordered[offset : offset + size], next_token(offset, size, len(ordered))
