"""Rate limits, quotas and budgets, and the usage counters a decision sees.

Counters live in fixed windows (a minute, an hour, a day, aligned to UTC) in the database.
Limits move them only by a conditional increment inside a write transaction — all of a
decision's limits at once or none — so with a limit of N, any number of concurrent
requests on any number of processes and nodes get exactly N allows. The counters a policy
reads (actions by class this hour, cost spent today, for this agent and user) are
incremented in the same transaction as the decision's audit event.

Tenant defaults (no `--agent`) count for each agent separately; an agent's own limit with
the same user, class, kind and window replaces the default for that agent. A limit for
`EACH_USER` counts every (agent, user) pair separately; one for a user counts only what
agents do for that user.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from valetkey.identity.models import CLASSES

Per = Literal["minute", "hour", "day"]
EACH_USER = "*"
WINDOWS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True, slots=True)
class Limit:
    id: str
    tenant_id: str
    agent_id: str | None
    user_id: str | None
    action_class: str | None
    kind: Literal["count", "budget"]
    maximum: int
    per: Per

    def dimension(self) -> tuple[str | None, str | None, str, str]:
        return (self.user_id, self.action_class, self.kind, self.per)


@dataclass(frozen=True, slots=True)
class Charge:
    """One counter a decision moves: `amount` more in `key`'s window, up to `maximum`."""

    key: str
    window_start: int
    expires_at: float
    amount: int
    maximum: int | None  # None: unconditional (the counters policies read)
    limit: Limit | None = None

    def retry_after(self, now: float) -> int:
        return max(1, int(self.expires_at - now))


def window(per: str, now: float) -> tuple[int, float]:
    size = WINDOWS[per]
    start = int(now // size) * size
    return start, float(start + size)


def applicable(
    limits: Sequence[Limit], agent_id: str, user_id: str | None, klass: str
) -> list[Limit]:
    """The limits that count this decision: defaults, replaced by the agent's own."""
    own = [lim for lim in limits if lim.agent_id == agent_id]
    taken = {lim.dimension() for lim in own}
    defaults = [lim for lim in limits if lim.agent_id is None and lim.dimension() not in taken]
    return [
        lim for lim in (*own, *defaults)
        if (lim.user_id in (None, EACH_USER) or lim.user_id == user_id)
        and (lim.action_class is None or lim.action_class == klass)
    ]  # fmt: skip


def charges(
    limits: Sequence[Limit],
    agent_id: str,
    user_id: str | None,
    klass: str,
    cost: int,
    now: float,
) -> list[Charge]:
    """The conditional increments a decision must win to be allowed."""
    found = []
    for lim in applicable(limits, agent_id, user_id, klass):
        amount = 1 if lim.kind == "count" else cost
        if amount == 0:
            continue
        start, end = window(lim.per, now)
        key = f"L:{lim.id}:{agent_id}"
        if lim.user_id == EACH_USER:
            key += f":{user_id or '-'}"
        found.append(Charge(key, start, end, amount, lim.maximum, lim))
    return found


def _who(agent_id: str, user_id: str | None) -> str:
    return f"{agent_id}:{user_id or '-'}"


def context_keys(agent_id: str, user_id: str | None, now: float) -> list[tuple[str, int]]:
    """The counters a policy reads: actions by class this hour, cost spent today."""
    hour, _ = window("hour", now)
    day, _ = window("day", now)
    who = _who(agent_id, user_id)
    return [(f"C:{who}:{c}", hour) for c in CLASSES] + [(f"S:{who}", day)]


def context_charges(
    agent_id: str, user_id: str | None, klass: str, cost: int, now: float
) -> list[Charge]:
    """What an allowed decision adds to the counters policies read."""
    hour, hour_end = window("hour", now)
    day, day_end = window("day", now)
    who = _who(agent_id, user_id)
    found = [Charge(f"C:{who}:{klass}", hour, hour_end, 1, None)]
    if cost:
        found.append(Charge(f"S:{who}", day, day_end, cost, None))
    return found


class UsageStore(Protocol):
    async def read_counters(
        self, tenant_id: str, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]: ...

    async def charge(self, tenant_id: str, charges: Sequence[Charge]) -> Charge | None:
        """Apply every conditional increment or none; the first that would pass its
        maximum is returned (and nothing changes)."""
        ...

    async def list_limits(self, tenant_id: str) -> list[Limit]: ...
