"""Audit event values. Types are `<noun>.<past verb>`: `token.issued`, `agent.suspended`.

An event never carries a secret or a token value: only ids (`jti`, key ids, digests' ids).
"""

from dataclasses import dataclass, field
from typing import Any, Literal

from valetkey.clock import to_datetime

Outcome = Literal["success", "failure"]
SYSTEM_TENANT = "system"  # chain for events that belong to no tenant (an unknown client)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    type: str
    tenant_id: str
    ts: float
    correlation_id: str
    outcome: Outcome = "success"
    reason: str | None = None
    agent_id: str | None = None
    user_id: str | None = None
    jti: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    # Usage counters to move in the event's own transaction (key, window start, expiry,
    # amount): what a decision adds to the counts policies read. Not part of the chain.
    counters: tuple[tuple[str, int, float, int], ...] = ()


DECISIONS = ("allow", "deny", "approval_required")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as chained: its place (`seq`) in its tenant's chain and both hashes."""

    id: str
    tenant_id: str
    seq: int
    type: str
    ts_us: int
    correlation_id: str
    outcome: str
    reason: str | None
    agent_id: str | None
    user_id: str | None
    jti: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def decision(self) -> str | None:
        """A decision event's verdict, kept in its own indexed column so the console can
        filter on it (derived from `data`, which the hash covers)."""
        if self.type != "decision.made":  # the verdict's own event, not what cites it
            return None
        value = self.data.get("decision")
        return value if value in DECISIONS else None

    def chained_fields(self) -> dict[str, Any]:
        """The fields the hash covers: all of them but the hashes themselves."""
        return {
            "id": self.id,
            "tenant": self.tenant_id,
            "seq": self.seq,
            "type": self.type,
            "ts_us": self.ts_us,
            "correlation_id": self.correlation_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "agent_id": self.agent_id,
            "user_id": self.user_id,
            "jti": self.jti,
            "data": self.data,
        }

    def to_json(self) -> dict[str, Any]:
        out = self.chained_fields()
        out["time"] = to_datetime(self.ts_us / 1e6).isoformat().replace("+00:00", "Z")
        out["prev_hash"] = self.prev_hash
        out["hash"] = self.hash
        return out


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """A search of the log, newest first. Within one tenant the order is the chain's (`seq`)
    and `before_seq` / `after_seq` are keyset cursors: the page of events just older, or
    just newer, than that position. `since` (inclusive) and `until` (exclusive) bound the
    events' time, in seconds since the epoch."""

    tenant_id: str | None = None
    agent_id: str | None = None
    user_id: str | None = None
    correlation_id: str | None = None
    type: str | None = None
    limit: int = 100
    decision: str | None = None
    since: float | None = None
    until: float | None = None
    before_seq: int | None = None
    after_seq: int | None = None
