"""Token exchange (RFC 8693) on behalf of a user: the agent authenticates as itself and
presents the user's identity — an assertion from a trusted issuer, or a ValetKey token that
names the user — and gets a short token with `sub` = the user and `act.sub` = itself.

Effective scope = requested ∩ the user's rights ∩ what the user delegated to this agent ∩
what the agent is allowed — never wider. A delegated token may be exchanged again by a
sub-agent the delegation names: `act` nests (newest actor outermost), rights and mandate
only narrow, the audience stays, the depth is bounded and no actor appears twice.
"""

import base64
import binascii
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError

from valetkey.identity.mandates import (
    Mandate,
    MandateError,
    parse_authorization_details,
    parse_mandate,
)
from valetkey.identity.models import Delegation, User
from valetkey.identity.scopes import closure, parse_scope_param
from valetkey.oauth import audience
from valetkey.oauth.client_auth import ASSERTION_ALGORITHMS
from valetkey.oauth.context import TokenRequest
from valetkey.oauth.delegated import (
    DelegatedStore,
    active_user,
    covering,
    effective_scopes,
    mandate_for,
    rights_of,
)
from valetkey.oauth.dpop import InvalidDPoPProof
from valetkey.oauth.errors import (
    InvalidAuthorizationDetails,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnauthorizedClient,
)
from valetkey.oauth.grants import AccessTokenSpec
from valetkey.oauth.remote_keys import KeyFetchError, RemoteKeySets
from valetkey.oauth.verification import LocalTokens, actors

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ASSERTION_TYPES = (
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
)
SUBJECT_TYPES = (*ASSERTION_TYPES, ACCESS_TOKEN_TYPE)
LEEWAY = 30


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


def _token_mandate(claims: dict[str, Any]) -> Mandate | None:
    """The mandate a presented token carries; one that does not parse is refused, never
    read as "no mandate" (that would lift every limit)."""
    details = claims.get("authorization_details")
    if details is None:
        return None
    try:
        return parse_mandate(details[0] if isinstance(details, list) and details else details)
    except MandateError as exc:
        raise InvalidRequest("the subject token's mandate cannot be read") from exc


def _requested_mandate(params: Any) -> Mandate | None:
    raw = params.get("authorization_details")
    if raw is None:
        return None
    try:
        return parse_authorization_details(raw)
    except MandateError as exc:
        raise InvalidAuthorizationDetails(str(exc)) from exc


class TokenExchangeGrant:
    grant_type = GRANT_TYPE
    parameters = frozenset(
        {"subject_token", "subject_token_type", "actor_token", "actor_token_type",
         "requested_token_type", "resource", "audience", "scope", "authorization_details"}
    )  # fmt: skip

    def __init__(
        self,
        issuer: str,
        store: DelegatedStore,
        keys: RemoteKeySets,
        tokens: LocalTokens,
        *,
        default_lifetime: int = 300,
        max_depth: int = 3,
    ) -> None:
        self._issuer = issuer
        self._store = store
        self._keys = keys
        self._tokens = tokens
        self._default_lifetime = default_lifetime
        self._max_depth = max_depth

    async def handle(self, request: TokenRequest) -> AccessTokenSpec:
        agent = request.context.client
        tenant = request.context.tenant
        params = request.params
        if not agent.is_agent:
            raise UnauthorizedClient("only agents exchange tokens on behalf of users")
        self._check_parameters(params)
        mandate = _requested_mandate(params)
        if "actor_token" in params:
            await self._check_actor(request)
        token = params["subject_token"]
        if params["subject_token_type"] == ACCESS_TOKEN_TYPE:
            claims = await self._tokens.live(token, request.now)
            if claims is None:
                raise InvalidRequest("subject_token is not an active ValetKey access token")
            if claims["tenant"] != tenant.id:
                raise InvalidRequest("the subject token belongs to another tenant")
            if "cnf" in claims and request.dpop_jkt is None:
                raise InvalidDPoPProof(
                    "the subject token is DPoP-bound, so the exchange must be: send a DPoP proof"
                )
            if "act" in claims:
                return await self._chain(request, claims, mandate)
            if claims["sub"] == claims["client_id"]:
                raise InvalidRequest("the subject token does not name a user")
            if claims["aud"] != self._issuer:
                raise InvalidRequest("a user's token for exchange must be issued for ValetKey")
            user = active_user(await self._store.user_by_id(claims["sub"]), tenant.id)
        else:
            claims = await self._verified_assertion(request, token)
            user = await self._subject_user(tenant.id, claims)
        return await self._for_user(request, user, float(claims["exp"]), mandate)

    async def _for_user(
        self, request: TokenRequest, user: User, expires: float, mandate: Mandate | None
    ) -> AccessTokenSpec:
        agent = request.context.client
        tenant = request.context.tenant
        delegations = await self._store.live_delegations(tenant.id, user.id, agent.id, request.now)
        if not delegations:
            raise InvalidGrant("no delegation: the user has not consented to this agent")
        uris = self._requested_resources(request)
        requested = parse_scope_param(request.params.get("scope", "")) or None
        if uris:
            delegations = covering(delegations, uris[0])
        rights = await rights_of(self._store, request, user)
        effective = self._effective(request, rights, delegations)
        chosen = audience.select(
            request.tenant_resources, uris, requested, sorted(effective), self._issuer
        )
        reaching = covering(delegations, chosen.audience)
        if reaching != delegations:  # only what was delegated for the chosen audience counts
            effective = self._effective(request, rights, reaching)
            chosen = audience.select(
                request.tenant_resources, [chosen.audience] if chosen.resource else [],
                requested, sorted(effective), self._issuer,
            )  # fmt: skip
        return self._spec(
            request, user, chosen.audience, chosen.scopes, expires,
            {"sub": agent.id}, mandate_for(mandate, reaching),
        )  # fmt: skip

    async def _chain(
        self, request: TokenRequest, claims: dict[str, Any], mandate: Mandate | None
    ) -> AccessTokenSpec:
        """A sub-agent takes over a delegated token: the audience stays, everything narrows."""
        agent = request.context.client
        tenant = request.context.tenant
        chain = actors(claims["act"])
        if not chain:
            raise InvalidRequest("the subject token's act claim is malformed")
        if agent.id in chain:
            raise InvalidGrant("an agent may appear only once in a delegation chain")
        if len(chain) + 1 > self._max_depth:
            raise InvalidGrant(f"a delegation chain holds at most {self._max_depth} actors")
        user = active_user(await self._store.user_by_id(claims["sub"]), tenant.id)
        aud = str(claims["aud"])
        if any(uri != aud for uri in self._requested_resources(request)):
            raise InvalidTarget("a chained token keeps the audience of the token it replaces")
        delegations = await self._store.live_delegations(tenant.id, user.id, chain[-1], request.now)
        reaching = [d for d in delegations if d.reaches(aud)]
        helpers = {agent.id, *chain[:-1]}
        if not any(helpers <= set(d.sub_agents) for d in reaching):
            raise InvalidGrant("no delegation: the user has not allowed this agent as a sub-agent")
        held = str(claims.get("scope", "")).split()
        rights = await rights_of(self._store, request, user)
        allowed = closure(agent.scopes, audience.all_implications(request.tenant_resources))
        effective = [s for s in held if s in allowed and s in rights]
        requested = parse_scope_param(request.params.get("scope", "")) or None
        if requested is not None:
            for scope in requested:
                if scope not in effective:
                    raise InvalidScope(f"scope {scope!r} is beyond what this chain may hold")
            effective = requested
        if not effective:
            raise InvalidScope("this agent may hold none of the delegated token's scopes")
        outer = _token_mandate(claims)
        if outer is not None:
            try:
                narrowed: Mandate | None = outer.narrowed(mandate)
            except MandateError as exc:
                raise InvalidAuthorizationDetails(str(exc)) from exc
        else:
            narrowed = mandate_for(mandate, reaching)
        return self._spec(
            request, user, aud, tuple(effective), float(claims["exp"]),
            {"sub": agent.id, "act": claims["act"]}, narrowed,
        )  # fmt: skip

    def _spec(
        self,
        request: TokenRequest,
        user: User,
        aud: str,
        scopes: tuple[str, ...],
        expires: float,
        act: dict[str, Any],
        mandate: Mandate | None,
    ) -> AccessTokenSpec:
        settings = request.context.tenant.settings
        lifetime = min(
            self._default_lifetime, settings.max_token_lifetime, int(expires - request.now)
        )
        if lifetime <= 0:
            raise InvalidRequest("subject_token has expired")
        detail = [mandate.to_detail()] if mandate else None
        extra: dict[str, Any] = {"act": act}
        response_extra: dict[str, Any] = {"issued_token_type": ACCESS_TOKEN_TYPE}
        if detail:
            extra["authorization_details"] = detail
            response_extra["authorization_details"] = detail
        return AccessTokenSpec(
            subject=user.id,
            audience=aud,
            scopes=scopes,
            lifetime=lifetime,
            extra_claims=extra,
            event_type="token.exchanged",
            user_id=user.id,
            response_extra=response_extra,
        )

    @staticmethod
    def _check_parameters(params: Any) -> None:
        if not params.get("subject_token") or not params.get("subject_token_type"):
            raise InvalidRequest("subject_token and subject_token_type are required")
        if ("actor_token" in params) != ("actor_token_type" in params):
            raise InvalidRequest("actor_token and actor_token_type go together")
        wanted = params.get("requested_token_type")
        if wanted not in (None, ACCESS_TOKEN_TYPE):
            raise InvalidRequest("only access tokens can be requested")
        if params["subject_token_type"] not in SUBJECT_TYPES:
            raise InvalidRequest(
                "subject_token_type must be an identity assertion (token-type:jwt or "
                "id_token) or a ValetKey access token (token-type:access_token)"
            )

    async def _check_actor(self, request: TokenRequest) -> None:
        """RFC 8693 §2.1: the actor token names the acting party — here, the calling agent."""
        if request.params["actor_token_type"] != ACCESS_TOKEN_TYPE:
            raise InvalidRequest("actor_token_type must be token-type:access_token")
        claims = await self._tokens.live(request.params["actor_token"], request.now)
        agent = request.context.client
        if claims is None or claims["sub"] != agent.id or claims["client_id"] != agent.id:
            raise InvalidRequest("actor_token is not an active token of the calling agent")
        bound = claims.get("cnf", {}).get("jkt") if isinstance(claims.get("cnf"), dict) else None
        if bound is not None and bound != request.dpop_jkt:
            raise InvalidDPoPProof("actor_token is DPoP-bound: prove possession of its key")

    async def _verified_assertion(self, request: TokenRequest, token: str) -> dict[str, Any]:
        tenant, now = request.context.tenant, request.now
        header, unverified = _unverified(token)
        iss = unverified.get("iss")
        known = await request.cache.get(
            tenant, "issuers", lambda: self._store.list_issuers(tenant.id)
        )
        trusted = next((i for i in known if i.issuer == iss), None)
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

    @staticmethod
    def _effective(
        request: TokenRequest, rights: set[str], delegations: list[Delegation]
    ) -> set[str]:
        return effective_scopes(
            request.tenant_resources,
            rights,
            [s for d in delegations for s in d.scopes],
            request.context.client.scopes,
        )
