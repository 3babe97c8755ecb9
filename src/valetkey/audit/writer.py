"""Group commit for audit events: many requests' events, one transaction, then every waiter.

A request awaits `record()`; it returns only once its events are committed, so an
acknowledged request's events are durable. Under load, one commit (one fsync) serves every
request that arrived while the previous one was being written.
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from valetkey.audit.events import AuditEvent


class AuditAppender(Protocol):
    async def append(self, events: Sequence[AuditEvent]) -> None:
        """Chain and commit the events atomically, or raise and commit none."""
        ...


class AuditSink(Protocol):
    async def record(self, *events: AuditEvent) -> None: ...


class BatchingAuditWriter:
    def __init__(self, store: AuditAppender, batch_max: int = 512) -> None:
        self._store = store
        self._batch_max = batch_max
        self._pending: deque[tuple[tuple[AuditEvent, ...], asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def record(self, *events: AuditEvent) -> None:
        if self._closed or self._task is None or self._task.done():
            raise RuntimeError("the audit writer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((events, future))
        self._wakeup.set()
        await future

    async def close(self) -> None:
        """Commit what is pending, then stop."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._commit_some()
            if self._closed:
                return

    async def _commit_some(self) -> None:
        batch: list[tuple[tuple[AuditEvent, ...], asyncio.Future[None]]] = []
        count = 0
        while self._pending and (count == 0 or count + len(self._pending[0][0]) <= self._batch_max):
            item = self._pending.popleft()
            batch.append(item)
            count += len(item[0])
        events = [event for group, _ in batch for event in group]
        try:
            await self._store.append(events)
        except Exception as exc:  # every waiter learns its events were not written
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)
