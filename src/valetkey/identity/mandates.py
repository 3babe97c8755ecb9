"""Mandates: the task an agent was given, as an RFC 9396 authorization detail of type
`mandate` — allowed actions, resource patterns and the user's original request text.

A delegation may hold a mandate template; a mandate asked for in a token exchange must stay
inside it, and a sub-agent's mandate inside its caller's. Patterns use `*` as a wildcard
(`crm:deals/*`). The intent-check issue enforces the mandate on every call; this module only
parses and compares. Pure functions, no I/O.
"""

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

MANDATE_TYPE = "mandate"
MAX_DETAILS_BYTES = 16_384
MAX_ITEMS = 64
MAX_ITEM_LENGTH = 256
MAX_REQUEST_TEXT = 4_000
_KNOWN_FIELDS = frozenset({"type", "actions", "locations", "user_request"})


class MandateError(ValueError):
    """The authorization details are malformed or reach beyond what is allowed."""


@dataclass(frozen=True, slots=True)
class Mandate:
    actions: tuple[str, ...]
    locations: tuple[str, ...]
    user_request: str | None = None

    def to_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "type": MANDATE_TYPE,
            "actions": list(self.actions),
            "locations": list(self.locations),
        }
        if self.user_request is not None:
            detail["user_request"] = self.user_request
        return detail

    def within(self, outer: "Mandate") -> str | None:
        """Why this mandate reaches beyond `outer`, or None when it stays inside."""
        for action in self.actions:
            if not covered(action, outer.actions):
                return f"action {action!r} is outside the allowed mandate"
        for location in self.locations:
            if not covered(location, outer.locations):
                return f"location {location!r} is outside the allowed mandate"
        return None

    def narrowed(self, inner: "Mandate | None") -> "Mandate":
        """`inner` if it stays inside this mandate (keeping the user's words), else an error."""
        if inner is None:
            return self
        reason = inner.within(self)
        if reason:
            raise MandateError(reason)
        return Mandate(inner.actions, inner.locations, inner.user_request or self.user_request)


def covered(value: str, patterns: Sequence[str]) -> bool:
    """A value or a narrower pattern is covered when an outer pattern matches it whole."""
    return any(_matcher(pattern).fullmatch(value) for pattern in patterns)


@functools.lru_cache(maxsize=1024)
def _matcher(pattern: str) -> re.Pattern[str]:
    """`*` matches any run of characters; everything else, `?` included, only itself (with
    fnmatch's `?`, an outer `deals/4?` would cover an inner `deals/4*`, which is wider)."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _strings(detail: dict[str, Any], name: str) -> tuple[str, ...]:
    values = detail.get(name)
    if not isinstance(values, list) or not values:
        raise MandateError(f"a mandate needs a non-empty list of {name}")
    if len(values) > MAX_ITEMS:
        raise MandateError(f"a mandate holds at most {MAX_ITEMS} {name}")
    for value in values:
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_ITEM_LENGTH:
            raise MandateError(f"each of the mandate's {name} is a short non-empty string")
        if not value.isprintable() or "[" in value:
            raise MandateError(f"{name} hold printable text; the only wildcard is '*'")
    return tuple(dict.fromkeys(values))


def parse_mandate(detail: Any) -> Mandate:
    if not isinstance(detail, dict):
        raise MandateError("each authorization detail is a JSON object")
    if detail.get("type") != MANDATE_TYPE:
        raise MandateError(f"unsupported authorization details type {detail.get('type')!r}")
    unknown = set(detail) - _KNOWN_FIELDS
    if unknown:
        raise MandateError(f"unknown mandate field {sorted(unknown)[0]!r}")
    request = detail.get("user_request")
    if request is not None and (not isinstance(request, str) or len(request) > MAX_REQUEST_TEXT):
        raise MandateError(f"user_request is text of at most {MAX_REQUEST_TEXT} characters")
    return Mandate(_strings(detail, "actions"), _strings(detail, "locations"), request)


def parse_authorization_details(raw: str) -> Mandate | None:
    """The `authorization_details` parameter (RFC 9396 §2): a JSON array; one mandate at most."""
    if len(raw.encode()) > MAX_DETAILS_BYTES:
        raise MandateError("authorization_details is too large")
    try:
        details = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MandateError("authorization_details is not valid JSON") from exc
    if not isinstance(details, list):
        raise MandateError("authorization_details is a JSON array")
    if not details:
        return None
    if len(details) > 1:
        raise MandateError("one mandate per token")
    return parse_mandate(details[0])


def template(actions: Sequence[str], locations: Sequence[str]) -> Mandate | None:
    """A delegation's mandate template from the admin's lists (both or neither)."""
    if not actions and not locations:
        return None
    return parse_mandate(
        {"type": MANDATE_TYPE, "actions": list(actions), "locations": list(locations)}
    )
