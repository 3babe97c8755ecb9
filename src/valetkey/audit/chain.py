"""The hash chain: each event's hash covers its fields and the previous event's hash.

Changing, removing or reordering any event, or cutting the chain's tail, breaks a link that
`verify` names. Hand-written because it is twenty lines of hashlib over a canonical JSON form.
"""

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from valetkey.audit.events import StoredEvent

GENESIS = "0" * 64


def canonical(fields: dict[str, Any]) -> bytes:
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def link_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(fields)).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    tenant_id: str
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    events: int
    broken: dict[str, Any] | None = None


class ChainWalk:
    """One tenant's chain checked event by event, in `seq` order, holding only the last
    link: a million events verify in constant memory."""

    def __init__(self) -> None:
        self.prev_hash, self.expected_seq, self.count = GENESIS, 1, 0

    def step(self, event: StoredEvent) -> Verification | None:
        """None while the chain holds; the verdict at the first broken link."""
        problem = None
        if event.seq != self.expected_seq:
            problem = (
                f"expected seq {self.expected_seq}, found {event.seq} (events removed or reordered)"
            )
        elif event.prev_hash != self.prev_hash:
            problem = "prev_hash does not match the previous event's hash"
        elif link_hash(self.prev_hash, event.chained_fields()) != event.hash:
            problem = "event content does not match its hash (event altered)"
        if problem:
            return Verification(
                False, self.count, _broken(event.tenant_id, event.seq, event.id, problem)
            )
        self.prev_hash, self.expected_seq = event.hash, self.expected_seq + 1
        self.count += 1
        return None

    def finish(self, head: ChainHead | None) -> Verification:
        if head is not None and (head.seq != self.count or head.hash != self.prev_hash):
            problem = f"chain head records {head.seq} events but {self.count} remain (tail removed)"
            return Verification(
                False, self.count, _broken(head.tenant_id, self.count + 1, None, problem)
            )
        return Verification(True, self.count)


def verify_chain(events: Iterable[StoredEvent], head: ChainHead | None) -> Verification:
    """Walk one tenant's events in `seq` order and check every link and the recorded head."""
    walk = ChainWalk()
    for event in events:
        broken = walk.step(event)
        if broken is not None:
            return broken
    return walk.finish(head)


def _broken(tenant: str, seq: int, event_id: str | None, reason: str) -> dict[str, Any]:
    return {"tenant": tenant, "seq": seq, "id": event_id, "reason": reason}
