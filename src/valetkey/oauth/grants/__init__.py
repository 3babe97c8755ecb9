"""One grant per module; `valetkey.oauth.server` registers them by `grant_type`."""

from dataclasses import dataclass, field
from typing import Any, Protocol

from valetkey.oauth.context import TokenRequest


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


class Grant(Protocol):
    grant_type: str
    parameters: frozenset[str]

    async def handle(self, request: TokenRequest) -> AccessTokenSpec: ...
