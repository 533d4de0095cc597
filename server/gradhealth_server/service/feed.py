"""New verdicts, pushed to every WatchVerdicts call of this replica.

The feed follows the store, not this process: every replica sharing the
database delivers every replica's verdicts. It polls for rows after the last
one it delivered (a short look-back catches rows committed out of id order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Collection, Iterator
from typing import Protocol

from gradhealth.v1 import verdict_pb2
from gradhealth_server.store.rows import store_error

log = logging.getLogger(__name__)

# A watcher that falls this far behind is cut off rather than slowing the service.
WATCHER_BACKLOG = 256
# Why a watch ends, put in its queue after the last verdict.
FELL_BEHIND = "fell_behind"
CLOSED = "closed"

POLL_SECONDS = 0.25
# Rows with ids this far below the newest delivered are looked at again: a
# transaction that took its id earlier may commit later.
LOOK_BACK = 200

Item = verdict_pb2.Verdict | str


class NewVerdicts(Protocol):
    def last_id(self) -> int: ...
    def since(
        self, last_id: int, limit: int = ..., skip: Collection[int] = ...
    ) -> list[tuple[int, verdict_pb2.Verdict]]: ...


class VerdictFeed:
    def __init__(self) -> None:
        self._watchers: set[asyncio.Queue[Item]] = set()
        self.closed = False
        self._start: int | None = None  # the newest row id when following began
        self._newest = 0
        self._delivered: deque[int] = deque(maxlen=4 * LOOK_BACK)
        self._failing = False  # the store did not answer the last poll

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

    async def follow(self, store: NewVerdicts, interval: float = POLL_SECONDS) -> None:
        """Publish every verdict stored from now on, by any replica; runs until cancelled."""
        self._start = None
        while not self.closed:
            await self.poll(store)
            await asyncio.sleep(interval)

    async def poll(self, store: NewVerdicts) -> None:
        """One look at the store: publish what is new since the last look."""
        try:
            if self._start is None:  # verdicts stored before we started are not new
                self._start = self._newest = await asyncio.to_thread(store.last_id)
            if not self._watchers:  # nobody to tell: just keep up, parse nothing
                self._newest = await asyncio.to_thread(store.last_id)
                # What was stored while nobody watched is not new to the next
                # watcher: the look-back must not replay it.
                self._start = self._newest
                return
            after = max(self._start, self._newest - LOOK_BACK)
            seen = set(self._delivered)
            rows = await asyncio.to_thread(store.since, after, 500, seen)
        except Exception as exc:  # a database hiccup must not end the feed
            if not self._failing:  # once per outage, not every 0.25 s
                log.error("reading new verdicts failed, retrying: %s", store_error(exc))
            self._failing = True
            return
        if self._failing:
            log.info("reading new verdicts works again")
            self._failing = False
        for row_id, verdict in rows:
            if row_id not in seen:
                self._delivered.append(row_id)
                self._newest = max(self._newest, row_id)
                self.publish(verdict)

    def close(self) -> None:
        self.closed = True
        for queue in list(self._watchers):
            queue.put_nowait(CLOSED)
        self._watchers.clear()
