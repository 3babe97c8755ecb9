"""The authorization server: token, introspection and revocation endpoints as short steps.

Each endpoint: parse the form → reject repeated parameters → authenticate the client →
(token) pick the grant by `grant_type` → let it decide → mint, audit, answer. Grants are
registered by type (as authlib's `AuthorizationServer` and Fosite's handlers); a new grant
is a new module. Every issuance and refusal is audited before the response goes out.
"""

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from valetkey.audit.events import SYSTEM_TENANT, AuditEvent
from valetkey.audit.writer import AuditSink
from valetkey.clock import Clock
from valetkey.identity.models import Resource
from valetkey.identity.secrets import digest_secret
from valetkey.oauth import client_auth, client_documents, dpop, sessions
from valetkey.oauth.context import (
    ClientContext,
    OAuthStore,
    RequestMeta,
    TenantCache,
    TokenRequest,
)
from valetkey.oauth.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    NotPermitted,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from valetkey.oauth.grants import AccessTokenSpec, Grant
from valetkey.oauth.keys import KeyManager
from valetkey.oauth.tokens import IssuedToken, mint_access_token
from valetkey.oauth.verification import LocalTokens

REPEATABLE = frozenset({"resource"})  # RFC 8707 §2 lets `resource` repeat
PUBLIC_GRANTS = frozenset({"authorization_code", "refresh_token"})


def parse_params(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Form pairs -> (single-valued params, resources); a repeated parameter is refused."""
    params: dict[str, str] = {}
    resources: list[str] = []
    for name, value in pairs:
        if name == "resource":
            resources.append(value)
        elif name in params:
            raise InvalidRequest(f"parameter {name[:64]!r} is repeated")
        else:
            params[name] = value
    return params, tuple(resources)


class OAuthServer:
    def __init__(
        self,
        *,
        store: OAuthStore,
        keys: KeyManager,
        audit: AuditSink,
        clock: Clock,
        issuer: str,
        grants: Sequence[Grant],
        tokens: LocalTokens,
        sessions: sessions.SessionStore | None = None,
        nonces: dpop.NonceSource | None = None,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._sessions = sessions
        self._nonces = nonces
        self._keys = keys
        self._audit = audit
        self._clock = clock
        self.issuer = issuer
        self.token_endpoint = f"{issuer}/oauth/token"
        self._grants = {g.grant_type: g for g in grants}
        self._cache = TenantCache()

    def clock_now(self) -> float:
        return self._clock.now()

    @property
    def tokens(self) -> LocalTokens:
        return self._tokens

    @property
    def cache(self) -> TenantCache:
        """Tenant configuration, reloaded when the tenant's version moves (shared with the
        decision point, so both see one copy)."""
        return self._cache

    @property
    def store(self) -> OAuthStore:
        return self._store

    @property
    def grant_types(self) -> list[str]:
        return list(self._grants)

    # token ---------------------------------------------------------------------------------
    async def token(self, pairs: Iterable[tuple[str, str]], meta: RequestMeta) -> dict[str, Any]:
        now = self._clock.now()
        ctx: ClientContext | None = None
        params: dict[str, str] = {}
        try:
            params, resources = parse_params(pairs)
            grant = self._grant_for(params.get("grant_type"))
            creds, ctx = await self._identify(params, meta)
            ctx = await self._verify_client(creds, ctx, now)
            if creds.method == "none" and params["grant_type"] not in PUBLIC_GRANTS:
                raise UnauthorizedClient("a public client may use only the code and refresh grants")
            jkt = await self._dpop(meta, ctx, now)
            request = TokenRequest(
                params,
                resources,
                ctx,
                await self.tenant_resources(ctx),
                now,
                correlation_id=meta.correlation_id,
                dpop_jkt=jkt,
                cache=self._cache,
            )
            spec = await grant.handle(request)
            blocked = ctx.tenant.settings.blocked(spec.scopes)
            if blocked:  # one check for every grant: a blocked scope is refused everywhere
                raise InvalidScope(f"scope {blocked[0]!r} is blocked by the tenant's admin")
            return await self._issue(spec, ctx, params["grant_type"], meta, now, jkt)
        except OAuthError as exc:
            await self._audit.record(self._refusal(exc, ctx, params, meta, now))
            raise

    async def record_refusal(self, exc: OAuthError, meta: RequestMeta) -> None:
        """Audit a token request refused before it reached `token()` (a malformed body)."""
        await self._audit.record(self._refusal(exc, None, {}, meta, self._clock.now()))

    def _grant_for(self, grant_type: str | None) -> Grant:
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        grant = self._grants.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType(f"grant_type {grant_type[:64]!r} is not supported")
        return grant

    async def _dpop(self, meta: RequestMeta, ctx: ClientContext, now: float) -> str | None:
        """The proof key's thumbprint when a DPoP proof came (RFC 9449 §5), checked in full."""
        if not meta.dpop_sent:
            if ctx.client.is_agent and ctx.tenant.settings.require_dpop:
                raise dpop.InvalidDPoPProof(
                    "this tenant requires DPoP-bound tokens for agents: send a DPoP proof"
                )
            return None
        try:
            proof = await dpop.verify_proof(
                meta.dpop,
                method="POST",
                url=self.token_endpoint,
                now=now,
                replay=self._store,
                nonces=self._nonces,
            )
        except dpop.UseDPoPNonce as exc:
            meta.response_headers["DPoP-Nonce"] = exc.nonce
            raise
        if self._nonces is not None:
            meta.response_headers["DPoP-Nonce"] = self._nonces.issue(now)
        return proof.jkt

    async def _issue(
        self,
        spec: AccessTokenSpec,
        ctx: ClientContext,
        grant_type: str,
        meta: RequestMeta,
        now: float,
        jkt: str | None = None,
    ) -> dict[str, Any]:
        kid, alg, key = await self._keys.signer(ctx.active_kid)
        extra = {**spec.extra_claims, "cnf": {"jkt": jkt}} if jkt else spec.extra_claims
        issued = mint_access_token(
            key=key,
            kid=kid,
            alg=alg,
            issuer=self.issuer,
            subject=spec.subject,
            client_id=ctx.client.id,
            audience=spec.audience,
            scope=spec.scopes,
            tenant=ctx.tenant.id,
            now=int(now),
            lifetime=spec.lifetime,
            generation=ctx.client.token_generation,
            extra=extra,
        )
        refresh = await self._next_refresh(spec, ctx, issued, jkt, meta, now)
        await self._audit.record(
            AuditEvent(
                type=spec.event_type,
                tenant_id=ctx.tenant.id,
                ts=self._clock.now(),
                correlation_id=meta.correlation_id,
                agent_id=ctx.client.id,
                user_id=spec.user_id,
                jti=issued.jti,
                data={
                    "grant_type": grant_type,
                    "aud": spec.audience,
                    "scope": " ".join(spec.scopes),
                    "exp": issued.claims["exp"],
                    "kid": kid,
                    **({"dpop_jkt": jkt} if jkt else {}),
                    **({"family_id": spec.refresh.family_id} if spec.refresh else {}),
                },
            )
        )
        response = {
            "access_token": issued.token,
            "token_type": "DPoP" if jkt else "Bearer",
            "expires_in": spec.lifetime,
            "scope": " ".join(spec.scopes),
            **spec.response_extra,
        }
        if refresh is not None:
            response["refresh_token"] = refresh
        return response

    async def _next_refresh(
        self,
        spec: AccessTokenSpec,
        ctx: ClientContext,
        issued: IssuedToken,
        jkt: str | None,
        meta: RequestMeta,
        now: float,
    ) -> str | None:
        """Store the session's next refresh token — spending the presented one in the same
        transaction — or, when that one was spent meanwhile, revoke the whole family."""
        plan = spec.refresh
        if plan is None or self._sessions is None:
            return None
        token = sessions.new_opaque(sessions.REFRESH_PREFIX)
        record = sessions.RefreshRecord(
            digest=sessions.digest(token),
            family_id=plan.family_id,
            tenant_id=ctx.tenant.id,
            client_id=ctx.client.id,
            user_id=plan.user_id,
            delegation_id=plan.delegation_id,
            scopes=plan.scopes or spec.scopes,  # a narrower refresh never shrinks the session
            resource=spec.audience,
            generation=plan.generation or ctx.client.token_generation,
            access_jti=issued.jti,
            access_exp=float(issued.claims["exp"]),
            created_at=now,
            expires_at=plan.expires_at,
            dpop_jkt=jkt,
            mandate=spec.mandate,
        )
        if not await self._sessions.rotate_refresh(plan.previous, record, now):
            await self.revoke_family(
                plan.family_id, ctx, meta, now, "refresh_token.reused", plan.user_id
            )
            raise InvalidGrant(
                "this code or refresh token was already used: the session is revoked"
            )
        return token

    async def revoke_family(
        self,
        family_id: str,
        ctx: ClientContext,
        meta: RequestMeta,
        now: float,
        event_type: str,
        user_id: str | None,
    ) -> None:
        """End a delegated session: its refresh tokens and the access tokens they produced."""
        assert self._sessions is not None
        event = sessions.family_event(
            event_type, ctx.tenant.id, family_id, now, meta.correlation_id, ctx.client.id, user_id
        )
        await self._sessions.revoke_family(family_id, now, [event])

    def _refusal(
        self,
        exc: OAuthError,
        ctx: ClientContext | None,
        params: dict[str, str],
        meta: RequestMeta,
        now: float,
    ) -> AuditEvent:
        data: dict[str, Any] = {"error": exc.error}
        if params.get("grant_type"):
            data["grant_type"] = params["grant_type"][:64]
        if ctx is None and params.get("client_id"):
            data["client_id"] = params["client_id"][:128]
        return AuditEvent(
            type="token.refused",
            tenant_id=ctx.tenant.id if ctx else SYSTEM_TENANT,
            ts=now,
            correlation_id=meta.correlation_id,
            outcome="failure",
            reason=f"{exc.error}: {exc.description}" if exc.description else exc.error,
            agent_id=ctx.client.id if ctx else None,
            data=data,
        )

    async def tenant_resources(self, ctx: ClientContext) -> tuple[Resource, ...]:
        async def load() -> tuple[Resource, ...]:
            return tuple(await self._store.resources_for_tenant(ctx.tenant.id))

        return await self._cache.get(ctx.tenant, "resources", load)

    # client authentication -----------------------------------------------------------------
    async def _authenticate(
        self, params: dict[str, str], meta: RequestMeta, now: float
    ) -> ClientContext:
        creds, ctx = await self._identify(params, meta)
        return await self._verify_client(creds, ctx, now)

    async def _identify(
        self, params: dict[str, str], meta: RequestMeta
    ) -> tuple[client_auth.PresentedCredentials, ClientContext | None]:
        """Which client the request claims to come from (not yet verified)."""
        creds = client_auth.extract_credentials(meta.authorization, params)
        if creds is None:
            raise InvalidClient("client authentication is required")
        if client_documents.is_document_url(creds.client_id):  # known from /oauth/authorize
            creds = replace(creds, client_id=client_documents.agent_id_for(creds.client_id))
        plausible = client_auth.plausible_client_id(creds.client_id)
        ctx = await self._store.load_client_context(creds.client_id) if plausible else None
        return creds, ctx

    async def _verify_client(
        self, creds: client_auth.PresentedCredentials, ctx: ClientContext | None, now: float
    ) -> ClientContext:
        if ctx is None:
            digest_secret(creds.secret or "")  # same work as a wrong secret: no timing oracle
            raise InvalidClient(
                "client authentication failed",
                basic_challenge=creds.method == "client_secret_basic",
            )
        if creds.method == "private_key_jwt":
            await client_auth.verify_assertion(
                ctx.client, creds, (self.issuer, self.token_endpoint), now, self._store
            )
        elif creds.method == "none":
            if not ctx.client.public:
                raise InvalidClient("client authentication is required")
        else:
            client_auth.verify_secret(ctx.client, creds, now)
        if not ctx.client.active:
            raise InvalidClient(
                f"client is {ctx.client.status}",
                basic_challenge=creds.method == "client_secret_basic",
            )
        return ctx

    async def authenticate(self, meta: RequestMeta) -> ClientContext:
        """A client by its `Authorization` header (Basic), for endpoints beyond OAuth's."""
        return await self._authenticate({}, meta, self._clock.now())

    # introspection (RFC 7662) --------------------------------------------------------------
    async def introspect(
        self, pairs: Iterable[tuple[str, str]], meta: RequestMeta
    ) -> dict[str, Any]:
        now = self._clock.now()
        params, _ = parse_params(pairs)
        caller = await self._authenticate(params, meta, now)
        if "introspect" not in caller.client.rights:
            raise NotPermitted("this client does not hold the introspect right")
        token = params.get("token")
        if not token:
            raise InvalidRequest("token is required")
        claims = await self._tokens.live(token, now)
        if claims is None or claims["tenant"] != caller.tenant.id:
            return {"active": False}
        return {"active": True, "token_type": "DPoP" if "cnf" in claims else "Bearer", **claims}

    # revocation (RFC 7009) -----------------------------------------------------------------
    async def revoke(self, pairs: Iterable[tuple[str, str]], meta: RequestMeta) -> None:
        now = self._clock.now()
        params, _ = parse_params(pairs)
        caller = await self._authenticate(params, meta, now)
        token = params.get("token")
        if not token:
            raise InvalidRequest("token is required")
        if token.startswith(sessions.REFRESH_PREFIX):
            await self._revoke_refresh(token, caller, meta, now)
            return
        claims = await self._tokens.verified(token, now)
        if claims is None:
            return  # RFC 7009 §2.2: an invalid token needs no revocation; answer 200
        own = claims["client_id"] == caller.client.id and claims["tenant"] == caller.tenant.id
        if own:
            await self._store.revoke_token(
                claims["jti"], caller.tenant.id, float(claims["exp"]), now
            )
        await self._audit.record(
            AuditEvent(
                type="token.revoked",
                tenant_id=caller.tenant.id,
                ts=now,
                correlation_id=meta.correlation_id,
                outcome="success" if own else "failure",
                reason=None if own else "the token was not issued to this client",
                agent_id=caller.client.id,
                jti=claims["jti"] if own else None,
            )
        )

    async def _revoke_refresh(
        self, token: str, caller: ClientContext, meta: RequestMeta, now: float
    ) -> None:
        """RFC 7009 §2.1: revoking a refresh token ends its session and its access tokens."""
        if self._sessions is None:
            return
        record = await self._sessions.refresh_record(sessions.digest(token))
        if record is None or record.client_id != caller.client.id:
            return  # unknown, or another client's: nothing to say (RFC 7009 §2.2)
        await self.revoke_family(
            record.family_id, caller, meta, now, "refresh_token.revoked", record.user_id
        )

    def dpop_nonce(self, now: float) -> str | None:
        return self._nonces.issue(now) if self._nonces else None

    # discovery (RFC 8414) ------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        methods = client_auth.AUTH_METHODS
        algs = client_auth.ASSERTION_ALGORITHMS
        return {
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": f"{self.issuer}/jwks",
            "revocation_endpoint": f"{self.issuer}/oauth/revoke",
            "introspection_endpoint": f"{self.issuer}/oauth/introspect",
            "authorization_endpoint": f"{self.issuer}/oauth/authorize",
            "grant_types_supported": self.grant_types,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
            "authorization_details_types_supported": ["mandate"],
            "dpop_signing_alg_values_supported": dpop.DPOP_ALGORITHMS,
            "token_endpoint_auth_methods_supported": [*methods, "none"],
            "registration_endpoint": f"{self.issuer}/oauth/register",
            "client_id_metadata_document_supported": True,
            "token_endpoint_auth_signing_alg_values_supported": algs,
            "revocation_endpoint_auth_methods_supported": methods,
            "introspection_endpoint_auth_methods_supported": methods,
            "introspection_endpoint_auth_signing_alg_values_supported": algs,
            "revocation_endpoint_auth_signing_alg_values_supported": algs,
        }
