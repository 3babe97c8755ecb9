"""What a gateway call is allowed to say about itself, and whose tokens it uses.

The intent comes from the provider's path mapping (or the method); the agent's
`X-ValetKey-Action` / `X-ValetKey-Resource` headers may make it more precise — so that
policies and mandates can name it — but never change what it is: the action keeps its
class and the resource stays inside the path's resource."""

from collections.abc import Awaitable, Callable
from typing import Protocol

from valetkey.identity.models import Tenant
from valetkey.oauth.context import TenantCache
from valetkey.policy.decision import Caller
from valetkey.vault.providers import Provider


class NarrowingError(ValueError):
    """The headers would widen or change the call's intent."""


async def narrowed(
    derived: tuple[str, str],
    mapped: bool,
    klass: str,
    action: str | None,
    resource: str | None,
    class_of: Callable[[str], Awaitable[str | None]],
) -> tuple[str, str]:
    """The intent to decide: the derived one, narrowed by the headers where they may."""
    final_action, final_resource = derived
    if action is not None and action != final_action:
        if mapped:
            raise NarrowingError(
                f"X-ValetKey-Action may not replace {final_action!r}, which this path maps to"
            )
        declared = await class_of(action)
        if declared is not None and declared != klass:
            raise NarrowingError(
                f"X-ValetKey-Action {action!r} is a {declared} action; this call is a {klass}"
            )
        final_action = action
    if resource is not None and resource != final_resource:
        if not resource.startswith(final_resource.rstrip("/") + "/"):
            raise NarrowingError(
                f"X-ValetKey-Resource may only narrow {final_resource!r} (to a part of it)"
            )
        final_resource = resource
    return final_action, final_resource


def owner_of(caller: Caller) -> tuple[str, str]:
    """Whose connection a call uses: the user's when the agent acts for one, else the
    agent's own. Never anyone else's: both come from the verified token."""
    if caller.user is not None:
        return "user", caller.user.id
    return "agent", caller.agent.id


class ProviderList(Protocol):
    async def list(self, tenant_id: str) -> list[Provider]: ...


class ProviderDirectory:
    """A tenant's providers, kept per process and reloaded when the tenant's version moves
    (adding or removing a provider bumps it), so the gateway reads no provider row per call."""

    def __init__(self, store: ProviderList, cache: TenantCache) -> None:
        self._store = store
        self._cache = cache

    async def find(self, tenant: Tenant, name: str) -> Provider | None:
        async def load() -> dict[str, Provider]:
            return {p.name: p for p in await self._store.list(tenant.id)}

        return (await self._cache.get(tenant, "providers", load)).get(name)
