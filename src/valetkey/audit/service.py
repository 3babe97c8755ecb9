"""Reading the audit log: search, verification of every chain, export in chain order."""

from collections.abc import AsyncIterator
from typing import Protocol

from valetkey.audit.chain import ChainHead, Verification, verify_chain
from valetkey.audit.events import AuditQuery, StoredEvent


class AuditReader(Protocol):
    async def search(self, query: AuditQuery) -> list[StoredEvent]: ...
    async def chained_tenants(self) -> list[str]: ...
    async def head(self, tenant_id: str) -> ChainHead | None: ...
    def iterate(self, tenant_id: str) -> AsyncIterator[StoredEvent]: ...
    async def count(self, tenant_id: str) -> int: ...


async def verify(store: AuditReader, tenant_ids: list[str]) -> Verification:
    """Verify each tenant's chain; stop at the first broken link."""
    total = 0
    for tenant_id in tenant_ids:
        events = [e async for e in store.iterate(tenant_id)]
        result = verify_chain(events, await store.head(tenant_id))
        total += result.events
        if not result.ok:
            return Verification(False, total, result.broken)
    return Verification(True, total)
