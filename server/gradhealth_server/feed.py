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


class VerdictFeed:
    def __init__(self) -> None:
        self._watchers: set[asyncio.Queue[verdict_pb2.Verdict | None]] = set()

    @contextlib.contextmanager
    def watch(self) -> Iterator[asyncio.Queue[verdict_pb2.Verdict | None]]:
        """A queue of new verdicts; None means the watcher fell behind or we stop."""
        queue: asyncio.Queue[verdict_pb2.Verdict | None] = asyncio.Queue(WATCHER_BACKLOG + 1)
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
                queue.put_nowait(None)
            else:
                queue.put_nowait(verdict)

    def close(self) -> None:
        for queue in list(self._watchers):
            queue.put_nowait(None)
        self._watchers.clear()
