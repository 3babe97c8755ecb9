"""Token exchange (RFC 8693) on behalf of a user: the agent presents the user's identity
assertion from a trusted issuer and gets a short token with `sub` = the user and
`act.sub` = itself.

Effective scope = requested ∩ the user's rights ∩ what the user delegated to this agent ∩
what the agent is allowed — never wider. This step takes assertions from trusted issuers;
ValetKey's own user tokens, actor tokens and chains, mandates, refresh tokens and DPoP
come next (issue 3).
"""

import base64
import binascii
from typing import Any, Protocol

import orjson
from joserfc import jwt
from joserfc.errors import JoseError

from valetkey.identity.models import Delegation, TrustedIssuer, User
from valetkey.identity.rights import user_rights
from valetkey.identity.scopes import closure, parse_scope_param
from valetkey.oauth import audience
from valetkey.oauth.client_auth import ASSERTION_ALGORITHMS
from valetkey.oauth.context import TokenRequest
from valetkey.oauth.errors import (
    InvalidGrant,
    InvalidRequest,
    InvalidTarget,
    UnauthorizedClient,
)
from valetkey.oauth.grants import AccessTokenSpec
from valetkey.oauth.remote_keys import KeyFetchError, RemoteKeySets

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ASSERTION_TYPES = (
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
)
LEEWAY = 30


class ExchangeStore(Protocol):
    async def trusted_issuer(self, tenant_id: str, issuer: str) -> TrustedIssuer | None: ...
    async def user_by_email(self, tenant_id: str, email: str) -> User | None: ...
    async def live_delegations(
        self, tenant_id: str, user_id: str, agent_id: str, now: float
    ) -> list[Delegation]: ...
    async def role_scopes(self, tenant_id: str) -> dict[str, list[str]]: ...


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header_b64, payload_b64, _ = token.split(".")
        header = orjson.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
        payload = orjson.loads(
            base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
        )
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidRequest("subject_token is not a JWT") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise InvalidRequest("subject_token is not a JWT")
    return header, payload


def _covering(delegations: list[Delegation], uri: str) -> list[Delegation]:
    """The delegations that reach `uri` (one without resources reaches every resource)."""
    covering = [d for d in delegations if not d.resources or uri in d.resources]
    if not covering:
        raise InvalidTarget("the user did not delegate this resource to this agent")
    return covering


class TokenExchangeGrant:
    grant_type = GRANT_TYPE
    parameters = frozenset(
        {"subject_token", "subject_token_type", "actor_token", "actor_token_type",
         "requested_token_type", "resource", "audience", "scope"}
    )  # fmt: skip

    def __init__(
        self, issuer: str, store: ExchangeStore, keys: RemoteKeySets, default_lifetime: int = 300
    ) -> None:
        self._issuer = issuer
        self._store = store
        self._keys = keys
        self._default_lifetime = default_lifetime

    async def handle(self, request: TokenRequest) -> AccessTokenSpec:
        agent = request.context.client
        tenant = request.context.tenant
        params = request.params
        if not agent.is_agent:
            raise UnauthorizedClient("only agents exchange tokens on behalf of users")
        self._check_parameters(params)
        claims = await self._verified_assertion(tenant.id, params["subject_token"], request.now)
        user = await self._subject_user(tenant.id, claims)
        delegations = await self._store.live_delegations(tenant.id, user.id, agent.id, request.now)
        if not delegations:
            raise InvalidGrant(f"no delegation: {user.email} has not consented to this agent")
        uris = self._requested_resources(request)
        requested = parse_scope_param(params.get("scope", "")) or None
        if uris:
            delegations = _covering(delegations, uris[0])
        effective = await self._effective_scopes(request, user, delegations)
        chosen = audience.select(
            request.tenant_resources, uris, requested, sorted(effective), self._issuer
        )
        covering = _covering(delegations, chosen.audience)
        if covering != delegations:  # only what was delegated for the chosen audience counts
            effective = await self._effective_scopes(request, user, covering)
            chosen = audience.select(
                request.tenant_resources, [chosen.audience] if chosen.resource else [],
                requested, sorted(effective), self._issuer,
            )  # fmt: skip
        lifetime = min(
            tenant.settings.access_token_lifetime(self._default_lifetime),
            int(float(claims["exp"]) - request.now),
        )
        if lifetime <= 0:
            raise InvalidRequest("subject_token has expired")
        return AccessTokenSpec(
            subject=user.id,
            audience=chosen.audience,
            scopes=chosen.scopes,
            lifetime=lifetime,
            extra_claims={"act": {"sub": agent.id}},
            event_type="token.exchanged",
            user_id=user.id,
            response_extra={"issued_token_type": ACCESS_TOKEN_TYPE},
        )

    @staticmethod
    def _check_parameters(params: Any) -> None:
        if not params.get("subject_token") or not params.get("subject_token_type"):
            raise InvalidRequest("subject_token and subject_token_type are required")
        if ("actor_token" in params) != ("actor_token_type" in params):
            raise InvalidRequest("actor_token and actor_token_type go together")
        if "actor_token" in params:
            raise InvalidRequest("actor tokens are not supported yet")
        wanted = params.get("requested_token_type")
        if wanted not in (None, ACCESS_TOKEN_TYPE):
            raise InvalidRequest("only access tokens can be requested")
        if params["subject_token_type"] not in ASSERTION_TYPES:
            raise InvalidRequest(
                "subject_token_type must be an identity assertion (token-type:jwt or id_token)"
            )

    async def _verified_assertion(self, tenant_id: str, token: str, now: float) -> dict[str, Any]:
        header, unverified = _unverified(token)
        iss = unverified.get("iss")
        trusted = await self._store.trusted_issuer(tenant_id, iss) if isinstance(iss, str) else None
        if trusted is None:
            raise InvalidRequest("the subject token's issuer is not trusted by this tenant")
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise InvalidRequest(f"subject token algorithm {alg!r} is not allowed")
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        try:
            key_set = await self._keys.key_set(trusted.jwks_uri, kid)
        except KeyFetchError as exc:
            raise InvalidRequest(f"cannot check the subject token: {exc}") from exc
        candidates = [k for k in key_set.keys if kid is None or k.kid == kid]
        claims: dict[str, Any] | None = None
        for key in candidates:
            try:
                claims = dict(jwt.decode(token, key, algorithms=[alg]).claims)
                break
            except (JoseError, ValueError, TypeError):
                continue
        if claims is None:
            raise InvalidRequest("the subject token's signature does not verify")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp + LEEWAY <= now:
            raise InvalidRequest("the subject token has expired or carries no exp")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is not None and (not isinstance(value, int | float) or value > now + LEEWAY):
                raise InvalidRequest(f"the subject token's {name} is in the future")
        if trusted.audience is not None:
            aud = claims.get("aud")
            if trusted.audience not in (aud if isinstance(aud, list) else [aud]):
                raise InvalidRequest("the subject token is not for this audience")
        claims["_claim"] = claims.get(trusted.claim)
        return claims

    async def _subject_user(self, tenant_id: str, claims: dict[str, Any]) -> User:
        email = claims.get("_claim")
        if not isinstance(email, str) or not email:
            raise InvalidRequest("the subject token does not name a user")
        user = await self._store.user_by_email(tenant_id, email.strip().lower())
        if user is None:
            raise InvalidRequest("the subject is not a user of this tenant")
        if user.status != "active":
            raise InvalidGrant("the user is deactivated")
        return user

    @staticmethod
    def _requested_resources(request: TokenRequest) -> list[str]:
        uris = list(request.resources_requested)
        if "audience" in request.params:
            uris.append(request.params["audience"])
        return uris

    async def _effective_scopes(
        self, request: TokenRequest, user: User, delegations: list[Delegation]
    ) -> set[str]:
        resources = request.tenant_resources
        implies: dict[str, set[str]] = {}
        for resource in resources:
            for scope, lower in resource.implies.items():
                implies.setdefault(scope, set()).update(lower)
        rights = user_rights(user.roles, await self._store.role_scopes(user.tenant_id), resources)
        delegated = closure([s for d in delegations for s in d.scopes], implies)
        allowed = closure(request.context.client.scopes, implies)
        return rights & delegated & allowed
