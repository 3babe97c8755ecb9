"""Reading the audit log: search, verification of every chain, export in chain order."""

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Protocol

from valetkey.audit.chain import ChainHead, ChainWalk, Verification
from valetkey.audit.events import AuditQuery, StoredEvent


class AuditReader(Protocol):
    async def search(self, query: AuditQuery) -> list[StoredEvent]: ...
    async def chained_tenants(self) -> list[str]: ...
    async def head(self, tenant_id: str) -> ChainHead | None: ...
    def iterate(
        self, tenant_id: str, upto: int | None = None
    ) -> AsyncGenerator[StoredEvent, None]: ...
    async def count(self, tenant_id: str) -> int: ...


async def verify(store: AuditReader, tenant_ids: list[str]) -> Verification:
    """Verify each tenant's chain; stop at the first broken link."""
    total = 0
    for tenant_id in tenant_ids:
        # The head first: events appended while we read are past it and not this check's.
        head = await store.head(tenant_id)
        if head is None:
            if await store.count(tenant_id) == 0:
                continue
            head = await store.head(tenant_id)  # a head is written with the first events
            if head is None:
                broken = {"tenant": tenant_id, "seq": 0, "id": None,
                          "reason": "the chain's head record is missing"}  # fmt: skip
                return Verification(False, total, broken)
        walk = ChainWalk()  # streamed: memory stays flat however long the chain
        result: Verification | None = None
        async with aclosing(store.iterate(tenant_id, upto=head.seq)) as events:
            async for event in events:
                if (result := walk.step(event)) is not None:
                    break
        result = result or walk.finish(head)
        total += result.events
        if not result.ok:
            return Verification(False, total, result.broken)
    return Verification(True, total)
