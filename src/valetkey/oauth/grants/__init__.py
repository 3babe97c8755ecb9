"""One grant per module; `valetkey.oauth.server` registers them by `grant_type`."""

from dataclasses import dataclass, field
from typing import Any, Protocol

from valetkey.oauth.context import TokenRequest


@dataclass(frozen=True, slots=True)
class RefreshPlan:
    """A refresh token to issue with the access token: the first of a family, or the next
    one after spending `previous` (both in one transaction)."""

    family_id: str
    user_id: str
    delegation_id: str | None
    expires_at: float
    previous: str | None = None
    generation: str | None = None  # the family's; None: the agent's current generation
    scopes: tuple[str, ...] = ()  # what the session was granted; each access token may hold less


@dataclass(frozen=True, slots=True)
class AccessTokenSpec:
    """What the grant decided; the server mints, signs and audits it."""

    subject: str
    audience: str
    scopes: tuple[str, ...]
    lifetime: int
    extra_claims: dict[str, Any] = field(default_factory=dict)
    event_type: str = "token.issued"
    user_id: str | None = None
    response_extra: dict[str, Any] = field(default_factory=dict)
    refresh: RefreshPlan | None = None
    mandate: dict[str, Any] | None = None  # RFC 9396 detail, carried in the token


class Grant(Protocol):
    grant_type: str
    parameters: frozenset[str]

    async def handle(self, request: TokenRequest) -> AccessTokenSpec: ...
