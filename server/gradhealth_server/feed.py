"""New verdicts, pushed to every WatchVerdicts call of this replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from gradhealth.v1 import verdict_pb2

log = logging.getLogger(__name__)

# A watcher that falls this far behind is cut off rather than slowing the service.
WATCHER_BACKLOG = 256
# Why a watch ends, put in its queue after the last verdict.
FELL_BEHIND = "fell_behind"
CLOSED = "closed"

Item = verdict_pb2.Verdict | str


class VerdictFeed:
    def __init__(self) -> None:
        self._watchers: set[asyncio.Queue[Item]] = set()
        self.closed = False

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    @contextlib.contextmanager
    def watch(self) -> Iterator[asyncio.Queue[Item]]:
        """A queue of new verdicts, ended by FELL_BEHIND or CLOSED."""
        queue: asyncio.Queue[Item] = asyncio.Queue(WATCHER_BACKLOG + 1)
        self._watchers.add(queue)
        try:
            yield queue
        finally:
            self._watchers.discard(queue)

    def publish(self, verdict: verdict_pb2.Verdict) -> None:
        for queue in list(self._watchers):
            if queue.qsize() >= WATCHER_BACKLOG:
                log.warning("a verdict watcher fell %d behind; closing it", WATCHER_BACKLOG)
                self._watchers.discard(queue)
                queue.put_nowait(FELL_BEHIND)
            else:
                queue.put_nowait(verdict)

    def close(self) -> None:
        self.closed = True
        for queue in list(self._watchers):
            queue.put_nowait(CLOSED)
        self._watchers.clear()
