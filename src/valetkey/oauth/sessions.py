"""Delegated sessions: single-use authorization codes and rotating refresh tokens.

Both are opaque random strings handed out once and stored only as SHA-256 digests. A
refresh token is bound to its client, user, delegation, scopes, resource and (when DPoP was
used) the proof key; every use spends it and issues the next one of the same family, in one
database transaction, so of any number of concurrent uses exactly one succeeds. Presenting
a spent token again means it leaked: the whole family and the access tokens it produced
are revoked (RFC 9700 §4.14.2). A reused authorization code revokes what it produced too
(RFC 6749 §4.1.2).
"""

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from valetkey.audit.events import AuditEvent

CODE_PREFIX = "vk_ac_"
REFRESH_PREFIX = "vk_rt_"
CODE_LIFETIME = 60  # seconds; RFC 6749 §4.1.2 recommends at most 10 minutes


def new_opaque(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """256-bit random tokens need no slow hash: SHA-256 cannot be reversed or guessed."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    digest: str
    tenant_id: str
    client_id: str
    user_id: str
    delegation_id: str | None
    redirect_uri: str
    scopes: tuple[str, ...]
    resource: str | None
    code_challenge: str
    created_at: float
    expires_at: float
    dpop_jkt: str | None = None
    mandate: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    digest: str
    family_id: str
    tenant_id: str
    client_id: str
    user_id: str
    delegation_id: str | None
    scopes: tuple[str, ...]
    resource: str
    generation: str  # the agent's token generation when the session began
    access_jti: str  # the access token issued together with this refresh token
    access_exp: float
    created_at: float
    expires_at: float  # the family's end: never extended by rotation
    status: Literal["active", "used", "revoked"] = "active"
    dpop_jkt: str | None = None
    mandate: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CodeUse:
    """The outcome of presenting a code: the code if this was its first use, else why not."""

    code: AuthorizationCode | None
    reused_family: str | None = None  # a spent code: the family its first use started


class SessionStore(Protocol):
    async def save_code(
        self, code: AuthorizationCode, events: Sequence[AuditEvent] = ()
    ) -> None: ...

    async def use_code(
        self, code_digest: str, client_id: str, family_id: str, now: float
    ) -> CodeUse:
        """Mark the code used (recording the family its tokens start) exactly once; another
        client's presentation neither spends it nor counts as a replay."""
        ...

    async def refresh_record(self, token_digest: str) -> RefreshRecord | None: ...

    async def rotate_refresh(self, previous: str | None, record: RefreshRecord, now: float) -> bool:
        """In one transaction: spend `previous` (if given) and store `record`. False, with
        nothing stored, when `previous` was no longer active (a concurrent or repeated use)
        or, for a session's first token, when its code was replayed meanwhile."""
        ...

    async def revoke_family(
        self, family_id: str, now: float, events: Sequence[AuditEvent] = ()
    ) -> int:
        """Revoke every refresh token of the family and the access tokens issued with them;
        returns how many refresh tokens were still usable."""
        ...


def family_event(
    event_type: str,
    tenant_id: str,
    family_id: str,
    now: float,
    correlation_id: str,
    agent_id: str,
    user_id: str | None,
) -> AuditEvent:
    """`refresh_token.reused` (a leak: failure) or `refresh_token.revoked` (on request)."""
    reuse = event_type.endswith("reused")
    return AuditEvent(
        type=event_type,
        tenant_id=tenant_id,
        ts=now,
        correlation_id=correlation_id,
        outcome="failure" if reuse else "success",
        reason="a spent refresh token or code was presented again" if reuse else None,
        agent_id=agent_id,
        user_id=user_id,
        data={"family_id": family_id},
    )


async def revoke_reused(
    store: SessionStore,
    family_id: str,
    tenant_id: str,
    now: float,
    correlation_id: str,
    agent_id: str,
    user_id: str | None,
) -> None:
    """A spent code or refresh token came back: it leaked, so the session ends (audited)."""
    event = family_event(
        "refresh_token.reused", tenant_id, family_id, now, correlation_id, agent_id, user_id
    )
    await store.revoke_family(family_id, now, [event])
