"""The ledger as relay.pairing writes it: calls queued in order, written by one task.

The session rules are synchronous and must not wait for a disk or a database; they hand
each transition to ``QueuedRecorder``, whose one writer task awaits the store (SQLite in
its own thread, or PostgreSQL) in the order the rules made them. A write the database
refuses because it is out of reach is tried again, in order, until it is back (bounded);
``flush`` waits until everything queued so far is written (shutdown, tests).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from relay.stores import Store, StoreFailure

log = logging.getLogger("relay")

RETRY_S = 1.0
RETRIES = 120  # two minutes of outage; longer, and the row is logged and given up
REF_BLOCK = 1000  # ledger references reserved at a time (the rules need one at once)


class QueuedRecorder:
    """relay.pairing.Recorder over an async store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: asyncio.Queue[tuple[Callable[..., Awaitable[Any]], tuple]] = \
            asyncio.Queue()
        self._unwritten = 0  # queued or being written
        self.queued = 0  # writes queued so far (a mark for ``reached``)
        self._written = 0  # writes done (or given up) so far
        self._progress = asyncio.Event()
        self._refs: deque[int] = deque()
        self._refilling = False

    async def prepare(self) -> None:
        """Reserve the first ledger references (call once, before the first session)."""
        await self._refill()

    async def _refill(self) -> None:
        first, count = await self.store.reserve_refs(REF_BLOCK)
        self._refs.extend(range(first, first + count))
        self._refilling = False

    def requested(self, session: str, technician: str, machine: str, user: str,
                  address: str, at: float) -> int:
        """Queue the row; its ledger reference (the receipt's "ref") at once."""
        ref = self._refs.popleft() if self._refs else 0
        if len(self._refs) < REF_BLOCK // 2 and not self._refilling:
            self._refilling = True
            self._put(self._refill)
        self._put(self.store.requested, session, technician, machine, user, address, at, ref)
        return ref

    def paused(self, session: str, paused: bool, at: float) -> None:
        self._put(self.store.paused, session, paused, at)

    def accepted(self, session: str, at: float) -> None:
        self._put(self.store.accepted, session, at)

    def control(self, session: str, taken: bool, at: float) -> None:
        self._put(self.store.control, session, taken, at)

    def ended(self, session: str, by: str, reason: str, at: float) -> None:
        self._put(self.store.ended, session, by, reason, at)

    def note(self, session: str, text: str, at: float) -> None:
        self._put(self.store.note, session, text, at)

    def event(self, session: str | None, kind: str, detail: str, at: float) -> None:
        self._put(self.store.event, session, kind, detail, at)

    def transfer(self, row: Any) -> None:  # relay.transfers.TransferRow
        self._put(self.store.transfer, row)

    def call(self, write: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Any other store write, in its place in the order (e.g. the session directory)."""
        self._put(write, *args)

    def _put(self, write: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._unwritten += 1
        self.queued += 1
        self._queue.put_nowait((write, args))

    @property
    def pending(self) -> int:
        """Writes not done yet (/healthz shows it: a growing number is a slow database)."""
        return self._unwritten

    async def reached(self, mark: int) -> None:
        """Wait until the first ``mark`` writes are done: what a peer is told next was
        recorded first, so a relay killed a moment later bills what its peers saw."""
        while self._written < mark:
            self._progress.clear()
            await self._progress.wait()

    async def flush(self) -> None:
        await self._queue.join()

    async def run(self) -> None:
        """Write until cancelled."""
        while True:
            write, args = await self._queue.get()
            try:
                await self._write(write, args)
            finally:
                self._unwritten -= 1
                self._written += 1
                self._progress.set()
                self._queue.task_done()

    async def _write(self, write: Callable[..., Awaitable[Any]], args: tuple) -> None:
        for attempt in range(RETRIES + 1):
            try:
                await write(*args)
                return
            except (*StoreFailure, OSError) as error:
                if attempt == RETRIES:
                    log.error("ledger write %s%r lost: %s", write.__name__, args[:2], error)
                    return
                if attempt == 0:
                    log.warning("the database is out of reach (%s); retrying", error)
                await asyncio.sleep(RETRY_S)
            except Exception:  # a bug, not an outage: keep writing the rest
                log.exception("ledger write %s%r failed", write.__name__, args[:2])
                return
