"""Providers as an admin manages them. Adding one also registers the gateway's audience
for it, `{issuer}/v1/gateway/{name}` (DESIGN.md), with `{name}:read|write|delete` scopes,
so agents ask for tokens to the gateway like to any resource."""

import base64
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx

from valetkey.audit.events import AuditEvent
from valetkey.clock import Clock
from valetkey.errors import Forbidden, InvalidInput, NotFound
from valetkey.identity.models import User
from valetkey.identity.service import IdentityService
from valetkey.ids import new_id
from valetkey.vault import platform
from valetkey.vault.connections import Connection, PlatformTokens
from valetkey.vault.providers import (
    METHOD_CLASSES,
    Provider,
    ProviderConfig,
    ProviderError,
    load_preset,
    parse_config,
    valid_name,
)
from valetkey.vault.refresh import schedule


class ActionRegistry(Protocol):
    async def list_actions(self, tenant_ref: str) -> Sequence[Any]: ...
    async def add_action(
        self, tenant_ref: str, name: str, klass: str, scope: str | None
    ) -> Any: ...


class ProviderStore(Protocol):
    async def add(self, provider: Provider, secret: str, events: Sequence[AuditEvent]) -> None: ...
    async def find(self, tenant_id: str, name: str) -> Provider: ...
    async def list(self, tenant_id: str) -> list[Provider]: ...
    async def remove(self, provider: Provider, events: Sequence[AuditEvent]) -> None: ...


def gateway_audience(issuer: str, name: str) -> str:
    return f"{issuer}/v1/gateway/{name}"


class Providers:
    def __init__(
        self, identity: IdentityService, store: ProviderStore, clock: Clock, issuer: str, cid: str,
        actions: ActionRegistry | None = None,
    ) -> None:  # fmt: skip
        self._actions = actions
        self._identity = identity
        self._store = store
        self._clock = clock
        self._issuer = issuer
        self._cid = cid

    async def add(
        self,
        tenant_ref: str,
        name: str,
        *,
        client_id: str,
        client_secret: str,
        preset: str | None = None,
        options: dict[str, Any] | None = None,
        placeholders: dict[str, str] | None = None,
        scopes: Sequence[str] = (),
    ) -> Provider:
        """A provider from a preset and/or explicit options (options win over the preset)."""
        tenant = await self._identity.tenant(tenant_ref)
        if not valid_name(name):
            raise InvalidInput("a provider name is lower case letters, digits and dashes")
        if not client_id or not client_secret.strip():
            raise InvalidInput("a provider needs its client id and client secret")
        try:
            base = load_preset(preset) if preset else {}
            given = {k: v for k, v in (options or {}).items() if v is not None}
            data = {**base, **given}
            if isinstance(base.get("refresh"), dict) and isinstance(given.get("refresh"), dict):
                data["refresh"] = {**base["refresh"], **given["refresh"]}
            config = parse_config(data, placeholders=placeholders)
        except ProviderError as exc:
            raise InvalidInput(str(exc)) from exc
        provider = Provider(new_id("prv"), tenant.id, name, config, client_id,
                            tuple(dict.fromkeys(scopes)), self._clock.now())  # fmt: skip
        audience = gateway_audience(self._issuer, name)
        await self._identity.create_resource(
            tenant.id, audience, [f"{name}:read", f"{name}:write", f"{name}:delete"]
        )
        event = AuditEvent("provider.added", tenant.id, self._clock.now(), self._cid,
                           data={"provider_id": provider.id, "name": name, "preset": preset,
                                 "api_base": config.api_base, "audience": audience})  # fmt: skip
        await self._store.add(provider, client_secret.strip(), [event])
        await self._register_mapped_actions(tenant.id, name, config)
        return provider

    async def _register_mapped_actions(self, tenant_id: str, name: str,
                                       config: ProviderConfig) -> None:  # fmt: skip
        """The actions the provider's paths map to, so policies and mandates can name them
        at once: each in its method's class, needing the gateway's scope for that class.
        An action the tenant already has is left as it is."""
        if self._actions is None or not config.actions:
            return
        known = {a.name for a in await self._actions.list_actions(tenant_id)}
        for mapping in config.actions:
            if mapping.action not in known:
                klass = METHOD_CLASSES[mapping.method]
                await self._actions.add_action(tenant_id, mapping.action, klass, f"{name}:{klass}")
                known.add(mapping.action)

    async def list(self, tenant_ref: str) -> list[Provider]:
        return await self._store.list((await self._identity.tenant(tenant_ref)).id)

    async def show(self, tenant_ref: str, name: str) -> Provider:
        return await self._store.find((await self._identity.tenant(tenant_ref)).id, name)

    async def remove(self, tenant_ref: str, name: str) -> Provider:
        provider = await self.show(tenant_ref, name)
        event = AuditEvent("provider.removed", provider.tenant_id, self._clock.now(), self._cid,
                           data={"provider_id": provider.id, "name": name})  # fmt: skip
        await self._store.remove(provider, [event])
        return provider

    def view(self, provider: Provider) -> dict[str, Any]:
        """What `providers show` prints: never the client secret."""
        return {"id": provider.id, "name": provider.name, "tenant": provider.tenant_id,
                "client_id": provider.client_id, "scopes": list(provider.scopes),
                "audience": gateway_audience(self._issuer, provider.name),
                **provider.config.to_json()}  # fmt: skip


class ConnectionStore(Protocol):
    async def create(self, connection: Connection, tokens: PlatformTokens,
                     events: Sequence[AuditEvent]) -> None: ...  # fmt: skip
    async def get(self, connection_id: str) -> Connection: ...
    async def list_all(self, tenant_id: str) -> list[Connection]: ...
    async def tokens(self, connection: Connection) -> PlatformTokens: ...
    async def revoke(
        self, connection: Connection, now: float, events: Sequence[AuditEvent]
    ) -> bool: ...


class SecretSource(Protocol):
    async def client_secret(self, provider: Provider) -> str: ...


class ConnectStore(Protocol):
    async def add_state(self, state_id: str, connection: Connection, started_by: str,
                        verifier: str, expires_at: float) -> None: ...  # fmt: skip
    async def take_state(self, state_id: str, now: float) -> tuple[Any, str] | None: ...
    async def connect(self, connection: Connection, tokens: PlatformTokens,
                      refresh_after: float | None,
                      events: Sequence[AuditEvent]) -> Connection: ...  # fmt: skip


CONNECT_TTL = 600
ADMIN_ROLE = "admin"


def state_id(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ConnectStart:
    authorize_url: str
    state: str
    expires_at: float


class ConnectFlowError(Exception):
    """The callback cannot complete the flow (400 for the web layer)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ConnectFlow:
    """`/v1/connections/start` and `/callback`: ValetKey as the platform's OAuth client
    (authorization code with PKCE S256 and a single-use `state`), for a signed-in user's
    own connection or, by an admin, an agent's."""

    def __init__(self, identity: IdentityService, providers: ProviderStore,
                 secrets_: SecretSource, store: ConnectStore, clock: Clock, issuer: str,
                 http: httpx.AsyncClient, cid: str) -> None:  # fmt: skip
        self._identity = identity
        self._providers = providers
        self._secrets = secrets_
        self._store = store
        self._clock = clock
        self._issuer = issuer
        self._http = http
        self._cid = cid

    @property
    def redirect_uri(self) -> str:
        return f"{self._issuer}/v1/connections/callback"

    async def start(self, user: User, provider_name: str, agent: str | None = None,
                    scopes: Sequence[str] = ()) -> ConnectStart:  # fmt: skip
        provider = await self._providers.find(user.tenant_id, provider_name)
        if agent is not None:
            if ADMIN_ROLE not in user.roles:
                raise Forbidden("only a tenant admin may connect a platform account for an agent")
            kind, owner = "agent", (await self._identity.agent(agent, user.tenant_id)).id
        else:
            kind, owner = "user", user.id
        now = self._clock.now()
        wanted = tuple(dict.fromkeys((*provider.scopes, *scopes)))
        pending = Connection(new_id("con"), user.tenant_id, provider.id, provider.name, kind,  # type: ignore[arg-type]
                             owner, "active", wanted, None, 1, now, now)  # fmt: skip
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        await self._store.add_state(state_id(state), pending, user.id, verifier, now + CONNECT_TTL)
        config = provider.config
        params = {"response_type": "code", "client_id": provider.client_id,
                  "redirect_uri": self.redirect_uri, "state": state}  # fmt: skip
        scope = config.scope_param(wanted)
        if scope:
            params["scope"] = scope
        if config.pkce:
            digest = hashlib.sha256(verifier.encode()).digest()
            params["code_challenge"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            params["code_challenge_method"] = "S256"
        params.update(config.extra_authorize_params)
        joiner = "&" if "?" in config.authorize_url else "?"
        return ConnectStart(config.authorize_url + joiner + urlencode(params), state,
                            now + CONNECT_TTL)  # fmt: skip

    async def complete(self, state: str, code: str | None, error: str | None) -> Connection:
        now = self._clock.now()
        found = await self._store.take_state(state_id(state), now)
        if found is None:
            raise ConnectFlowError("invalid_state", "unknown, used or expired state: start again")
        row, verifier = found
        provider = await self._providers.find(row.tenant_id, await self._provider_name(row))
        if error is not None or not code:
            raise ConnectFlowError("access_denied", f"the platform answered: {error or 'no code'}")
        issued = await platform.redeem_code(
            self._http, provider, await self._secrets.client_secret(provider), code,
            self.redirect_uri, verifier if provider.config.pkce else None,
        )  # fmt: skip
        now = self._clock.now()
        expires_at, refresh_after = schedule(provider, issued.expires_in, now)
        scopes = issued.scopes or tuple(row.scopes)
        connection = Connection(new_id("con"), row.tenant_id, provider.id, provider.name,
                                row.owner_kind, row.owner_id, "active", scopes, expires_at, 1,
                                now, now)  # fmt: skip
        event = AuditEvent(
            "connection.connected", row.tenant_id, now, self._cid,
            agent_id=row.owner_id if row.owner_kind == "agent" else None,
            user_id=row.owner_id if row.owner_kind == "user" else None,
            data={"connection_id": connection.id, "provider": provider.name,
                  "started_by": row.started_by, "scopes": list(scopes)},
        )  # fmt: skip
        return await self._store.connect(connection, issued.tokens, refresh_after, [event])

    async def _provider_name(self, row: Any) -> str:
        for provider in await self._providers.list(row.tenant_id):
            if provider.id == row.provider_id:
                return provider.name
        raise ConnectFlowError("invalid_state", "the provider was removed meanwhile")


class Connections:
    """The vault's entries as admins and owners manage them; never a token in a view."""

    def __init__(self, identity: IdentityService, providers: ProviderStore, secrets: SecretSource,
                 store: ConnectionStore, clock: Clock, cid: str) -> None:  # fmt: skip
        self._identity = identity
        self._providers = providers
        self._secrets = secrets
        self._store = store
        self._clock = clock
        self._cid = cid

    async def import_refresh_token(
        self, tenant_ref: str, provider_name: str, *, user: str | None, agent: str | None,
        refresh_token: str, scopes: Sequence[str] = (),
    ) -> Connection:  # fmt: skip
        """A connection from a refresh token the owner already had (migrating away from
        borrowed credentials); its first use exchanges it for an access token."""
        tenant = await self._identity.tenant(tenant_ref)
        if (user is None) == (agent is None):
            raise InvalidInput("a connection belongs to one owner: --user EMAIL or --agent ID")
        if not refresh_token.strip() or len(refresh_token) > 8192:
            raise InvalidInput("give the refresh token on stdin")
        provider = await self._providers.find(tenant.id, provider_name)
        if user is not None:
            owner = await self._identity.user(tenant.id, user)
            if owner.status != "active":
                raise InvalidInput("the user is deactivated")
            kind, owner_id = "user", owner.id
        else:
            assert agent is not None
            kind, owner_id = "agent", (await self._identity.agent(agent, tenant.id)).id
        now = self._clock.now()
        connection = Connection(new_id("con"), tenant.id, provider.id, provider.name, kind,  # type: ignore[arg-type]
                                owner_id, "active", tuple(scopes) or provider.scopes, None, 1,
                                now, now)  # fmt: skip
        event = AuditEvent(
            "connection.imported", tenant.id, now, self._cid,
            agent_id=owner_id if kind == "agent" else None,
            user_id=owner_id if kind == "user" else None,
            data={"connection_id": connection.id, "provider": provider.name},
        )  # fmt: skip
        await self._store.create(connection, PlatformTokens(refresh_token.strip()), [event])
        return connection

    async def list(self, tenant_ref: str) -> list[Connection]:
        return await self._store.list_all((await self._identity.tenant(tenant_ref)).id)

    async def get(self, connection_id: str, tenant_ref: str | None = None) -> Connection:
        found = await self._store.get(connection_id)
        if (
            tenant_ref is not None
            and found.tenant_id != (await self._identity.tenant(tenant_ref)).id
        ):
            raise NotFound(f"no connection {connection_id!r} in this tenant")
        return found

    async def owner_label(self, connection: Connection) -> str:
        if connection.owner_kind == "user":
            return (await self._identity.user_by_id(connection.owner_id)).email
        return connection.owner_id

    async def revoke(
        self, connection_id: str, tenant_ref: str | None = None, reason: str = "revoked"
    ) -> tuple[Connection, int | None]:
        """Ask the platform to revoke (RFC 7009), then destroy the ciphertext whatever it
        answered: the tokens must not outlive the owner's wish. Returns the platform's
        HTTP status (None when it has no revocation endpoint or did not answer)."""
        connection = await self.get(connection_id, tenant_ref)
        if connection.status == "revoked":
            return connection, None
        provider = await self._providers.find(connection.tenant_id, connection.provider)
        status = None
        if provider.config.revoke_url:
            tokens = await self._store.tokens(connection)
            status = await _platform_revoke(provider, await self._secrets.client_secret(provider),
                                            tokens)  # fmt: skip
        now = self._clock.now()
        event = AuditEvent("connection.revoked", connection.tenant_id, now, self._cid,
                           data={"connection_id": connection.id, "provider": provider.name,
                                 "platform_status": status, "reason": reason})  # fmt: skip
        await self._store.revoke(connection, now, [event])
        return connection, status


async def _platform_revoke(provider: Provider, secret: str, tokens: PlatformTokens) -> int | None:
    token = tokens.refresh_token or tokens.access_token
    if not token or not provider.config.revoke_url:
        return None
    form = {"token": token, "token_type_hint": "refresh_token" if tokens.refresh_token
            else "access_token"}  # fmt: skip
    headers = {}
    if provider.config.token_auth_method == "client_secret_basic":
        headers["Authorization"] = platform.basic_auth(provider.client_id, secret)
    else:
        form.update(client_id=provider.client_id, client_secret=secret)
    try:
        async with httpx.AsyncClient(timeout=10, follow_redirects=False) as http:
            response = await http.post(provider.config.revoke_url, data=form, headers=headers)
    except httpx.HTTPError:
        return None
    return response.status_code
