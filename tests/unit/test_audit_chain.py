from dataclasses import replace

from valetkey.audit.chain import GENESIS, ChainHead, link_hash, verify_chain
from valetkey.audit.events import StoredEvent


def _chain(n: int) -> list[StoredEvent]:
    events, prev = [], GENESIS
    for seq in range(1, n + 1):
        event = StoredEvent(
            f"evt_{seq}",
            "ten_1",
            seq,
            "token.issued",
            1_000_000 * seq,
            "cor_1",
            "success",
            None,
            "agt_1",
            None,
            f"jti{seq}",
            {"scope": "deals:read"},
            prev,
            "",
        )
        event = replace(event, hash=link_hash(prev, event.chained_fields()))
        events.append(event)
        prev = event.hash
    return events


def test_intact_chain_verifies() -> None:
    events = _chain(5)
    result = verify_chain(events, ChainHead("ten_1", 5, events[-1].hash))
    assert result.ok and result.events == 5


def test_altered_event_is_named() -> None:
    events = _chain(5)
    events[2] = replace(events[2], outcome="failure")
    result = verify_chain(events, None)
    assert not result.ok
    assert result.broken is not None and result.broken["seq"] == 3
    assert "altered" in result.broken["reason"]


def test_removed_event_is_detected() -> None:
    events = _chain(5)
    del events[1]
    result = verify_chain(events, None)
    assert not result.ok and result.broken is not None and result.broken["seq"] == 3


def test_rehashed_forgery_still_breaks_the_next_link() -> None:
    events = _chain(4)
    forged = replace(events[1], agent_id="agt_innocent")
    events[1] = replace(forged, hash=link_hash(forged.prev_hash, forged.chained_fields()))
    result = verify_chain(events, None)
    assert not result.ok and result.broken is not None and result.broken["seq"] == 3


def test_truncated_tail_is_detected_by_the_head() -> None:
    events = _chain(5)
    result = verify_chain(events[:4], ChainHead("ten_1", 5, events[-1].hash))
    assert not result.ok and "tail" in str(result.broken)
