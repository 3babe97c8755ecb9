"""The composition root: settings in, wired services out. The CLI and the web app start here."""

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from valetkey.audit.writer import AuditSink
from valetkey.clock import Clock, SystemClock
from valetkey.config import Settings
from valetkey.errors import InvalidInput
from valetkey.identity.delegations import DelegationService
from valetkey.identity.registration import ClientMetadata
from valetkey.identity.service import IdentityService
from valetkey.identity.sso import ConsoleLogin
from valetkey.ids import new_id
from valetkey.mcp.upstreams import McpUpstreams
from valetkey.notify.messages import approval_payload, connection_payload
from valetkey.notify.outbox import Delivery, Dispatcher, planned
from valetkey.notify.service import Notifications
from valetkey.oauth.client_documents import ClientDocuments, agent_id_for
from valetkey.oauth.delegated import Consent
from valetkey.oauth.dpop import NonceSource
from valetkey.oauth.grants.authorization_code import AuthorizationCodeGrant
from valetkey.oauth.grants.client_credentials import ClientCredentialsGrant
from valetkey.oauth.grants.refresh_token import RefreshTokenGrant
from valetkey.oauth.grants.token_exchange import TokenExchangeGrant
from valetkey.oauth.keys import KeyManager
from valetkey.oauth.remote_keys import RemoteKeySets
from valetkey.oauth.server import OAuthServer
from valetkey.oauth.sso import SsoClient
from valetkey.oauth.verification import LocalTokens
from valetkey.policy.approvals import Approval, Approvals
from valetkey.policy.authorizer import Authorizer
from valetkey.policy.authzen import AuthZen
from valetkey.policy.decision import Caller, DecisionPoint
from valetkey.policy.service import PolicyService
from valetkey.storage.approval_store import SqlApprovalStore
from valetkey.storage.audit_store import SqlAuditStore
from valetkey.storage.connection_store import SqlConnectionStore
from valetkey.storage.database import Database
from valetkey.storage.delegation_store import SqlDelegationStore
from valetkey.storage.hot_path import HotPath, open_hot_path
from valetkey.storage.identity_store import SqlIdentityStore
from valetkey.storage.instance_secrets import instance_secret
from valetkey.storage.mcp_store import SqlMcpStore
from valetkey.storage.migrate import upgrade
from valetkey.storage.notify_store import SqlNotifyStore
from valetkey.storage.oauth_store import SqlOAuthStore
from valetkey.storage.policy_store import SqlPolicyStore
from valetkey.storage.provider_store import SqlProviderStore
from valetkey.storage.sealed import count_sealed, rewrap_all
from valetkey.storage.session_store import SqlSessionStore
from valetkey.storage.sso_store import SqlSsoStore
from valetkey.storage.usage_store import SqlUsageStore
from valetkey.vault.cipher import Envelope, LocalKey, generate_master_key_text, load_kms
from valetkey.vault.connections import Connection
from valetkey.vault.refresh import TokenVault
from valetkey.vault.service import ConnectFlow, Connections, Providers


def _write_key_file(path: Path, text: str) -> None:
    """Create `path` (0600) with `text`, durably; never overwrite an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def load_master_key(settings: Settings) -> LocalKey:
    """`VALETKEY_MASTER_KEY`, else `DATA_DIR/master.key`, created (0600) on first start."""
    if settings.master_key:
        return LocalKey.from_text(settings.master_key)
    path = Path(settings.data_dir) / "master.key"
    _write_key_file(path, generate_master_key_text())
    return LocalKey.from_text(path.read_text())


def older_master_keys(settings: Settings) -> list[LocalKey]:
    """Keys that may still wrap some records: the one before the last rotation, and the
    next one of a rotation that was interrupted."""
    if settings.master_key:
        return []
    folder = Path(settings.data_dir)
    return [LocalKey.from_text((folder / name).read_text())
            for name in (NEXT_KEY, PREVIOUS_KEY) if (folder / name).exists()]  # fmt: skip


NEXT_KEY = "master.key.next"
PREVIOUS_KEY = "master.key.previous"


@dataclass
class Runtime:
    settings: Settings
    db: Database
    envelope: Envelope
    clock: Clock
    identity_store: SqlIdentityStore
    oauth_store: SqlOAuthStore
    audit_store: SqlAuditStore
    keys: KeyManager
    master_key: LocalKey

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True) -> "Runtime":
        db = Database(
            settings.resolved_database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms
        )
        if migrate:
            await upgrade(db)
        if settings.kms:
            # The KMS wraps the data keys; what the nodes derive from (sign-in cookies,
            # DPoP nonces) is a random secret stored sealed by it.
            envelope = Envelope(load_kms(settings.kms))
            master_key = LocalKey(await instance_secret(db, envelope, "derivation"))
        else:
            master_key = load_master_key(settings)
            envelope = Envelope(master_key, *older_master_keys(settings))
        clock = SystemClock()
        oauth_store = SqlOAuthStore(db)
        keys = KeyManager(oauth_store, envelope, clock, settings.signing_alg)
        return cls(
            settings=settings,
            db=db,
            envelope=envelope,
            clock=clock,
            identity_store=SqlIdentityStore(db),
            oauth_store=oauth_store,
            audit_store=SqlAuditStore(db),
            keys=keys,
            master_key=master_key,
        )

    @functools.cached_property
    def delegation_store(self) -> SqlDelegationStore:
        return SqlDelegationStore(self.db)

    @functools.cached_property
    def session_store(self) -> SqlSessionStore:
        return SqlSessionStore(self.db)

    @functools.cached_property
    def policy_store(self) -> SqlPolicyStore:
        return SqlPolicyStore(self.db)

    def policies(self, correlation_id: str) -> PolicyService:
        return PolicyService(
            self.identity(correlation_id), self.policy_store, self.clock, correlation_id,
            self.usage_store,
        )  # fmt: skip

    def delegations(self, correlation_id: str) -> DelegationService:
        return DelegationService(
            self.identity(correlation_id), self.delegation_store, self.clock, correlation_id
        )

    def console_login(self, correlation_id: str) -> ConsoleLogin:
        return ConsoleLogin(self.delegations(correlation_id), self.sso_store, self.clock,
                            correlation_id)  # fmt: skip

    @functools.cached_property
    def sso_store(self) -> SqlSsoStore:
        return SqlSsoStore(self.db, self.envelope)

    @functools.cached_property
    def sso(self) -> SsoClient:
        """Signing people in to the console through a trusted issuer (one key cache)."""
        return SsoClient(RemoteKeySets(self.clock))

    def identity(self, correlation_id: str) -> IdentityService:
        return IdentityService(
            self.identity_store,
            self.clock,
            correlation_id=correlation_id,
            agent_domain=self.settings.agent_domain,
            secret_grace=self.settings.secret_grace,
        )

    async def open_hot_path(self) -> HotPath:
        return await open_hot_path(
            self.settings.resolved_database_url,
            self.settings.sqlite_busy_timeout_ms,
            inline_commits=self.settings.workers > 1,
        )

    def oauth_server(self, audit: AuditSink, hot: HotPath | None = None) -> OAuthServer:
        settings = self.settings
        issuer = settings.issuer
        store = self.oauth_store.with_hot_path(hot) if hot else self.oauth_store
        delegations = self.delegation_store.with_hot_path(hot) if hot else self.delegation_store
        sessions = self.session_store.with_hot_path(hot) if hot else self.session_store
        tokens = LocalTokens(store, self.keys, issuer, Consent(delegations, store))
        ttl = settings.access_token_ttl
        return OAuthServer(
            store=store,
            keys=self.keys,
            audit=audit,
            clock=self.clock,
            issuer=issuer,
            grants=[
                ClientCredentialsGrant(issuer, ttl),
                TokenExchangeGrant(
                    issuer,
                    delegations,
                    RemoteKeySets(self.clock),
                    tokens,
                    default_lifetime=settings.exchange_token_ttl,
                    max_depth=settings.max_chain_depth,
                ),
                AuthorizationCodeGrant(
                    issuer,
                    sessions,
                    delegations,
                    default_lifetime=ttl,
                    refresh_lifetime=settings.refresh_token_ttl,
                ),
                RefreshTokenGrant(sessions, delegations, default_lifetime=ttl),
            ],
            tokens=tokens,
            sessions=sessions,
            nonces=NonceSource(self.master_key.derive("dpop-nonce"))
            if settings.dpop_nonce
            else None,
        )

    def decision_point(self, server: OAuthServer, hot: HotPath | None) -> DecisionPoint:
        policies = self.policy_store.with_hot_path(hot) if hot else self.policy_store
        return DecisionPoint(policies, server.cache)

    def authzen(self, audit: AuditSink, server: OAuthServer, hot: HotPath | None) -> AuthZen:
        return AuthZen(self.decision_point(server, hot), audit, self.clock)

    def authorizer(self, audit: AuditSink, server: OAuthServer, hot: HotPath | None) -> Authorizer:
        users = self.delegation_store.with_hot_path(hot) if hot else self.delegation_store
        point = self.decision_point(server, hot)
        approvals = self.approvals(hot)
        usage = self.usage_store.with_hot_path(hot) if hot else self.usage_store
        return Authorizer(
            point, server.store, users, server.tenant_resources, audit, self.clock, approvals,
            self.settings.issuer, usage, server.cache,
        )  # fmt: skip

    @functools.cached_property
    def usage_store(self) -> SqlUsageStore:
        return SqlUsageStore(self.db)

    @functools.cached_property
    def approval_store(self) -> SqlApprovalStore:
        return SqlApprovalStore(self.db)

    @functools.cached_property
    def notify_store(self) -> SqlNotifyStore:
        return SqlNotifyStore(self.db, self.envelope)

    def approvals(self, hot: HotPath | None = None) -> Approvals:
        store = self.approval_store.with_hot_path(hot) if hot else self.approval_store
        return Approvals(store, self.clock, self.settings.approval_ttl, self._plan_notifications)

    async def _plan_notifications(self, approval: Approval, caller: Caller) -> list[Delivery]:
        """Who hears of a new approval request: the tenant's webhooks and approvers."""
        notify = self.notify_store
        sponsor = await self.delegation_store.user_by_id(caller.agent.sponsor_id or "")
        agent = {
            "id": caller.agent.id,
            "name": caller.agent.name,
            "address": caller.agent.address,
            "sponsor": sponsor.email if sponsor else None,
        }
        payload = approval_payload(
            approval.to_json(self.settings.issuer), agent,
            caller.user.email if caller.user else None, approval.tenant_id,
        )  # fmt: skip
        emails = await notify.approver_emails(approval.tenant_id) if self.settings.smtp_url else []
        hooks = await notify.active_webhooks(approval.tenant_id)
        return planned(approval.tenant_id, "approval.requested", payload, hooks, emails,
                       self.clock.now())  # fmt: skip

    def providers(self, correlation_id: str) -> Providers:
        return Providers(
            self.identity(correlation_id), self.provider_store, self.clock, self.settings.issuer,
            correlation_id, self.policies(correlation_id),
        )  # fmt: skip

    @functools.cached_property
    def provider_store(self) -> SqlProviderStore:
        return SqlProviderStore(self.db, self.envelope)

    @functools.cached_property
    def connection_store(self) -> SqlConnectionStore:
        return SqlConnectionStore(self.db, self.envelope)

    def connections(self, correlation_id: str) -> Connections:
        providers = self.provider_store
        return Connections(
            self.identity(correlation_id), providers, providers, self.connection_store,
            self.clock, correlation_id,
        )  # fmt: skip

    @functools.cached_property
    def client_documents(self) -> ClientDocuments:
        """Client ID metadata documents, fetched and cached per process."""

        async def register(url: str, meta: ClientMetadata) -> str:
            identity = self.identity(new_correlation())
            return await identity.register_document_client(url, meta, agent_id_for(url))

        def new_correlation() -> str:
            return new_id("cor")

        return ClientDocuments(self.settings.fetch_allow_hosts, register)

    def connect_flow(self, http: httpx.AsyncClient, correlation_id: str) -> ConnectFlow:
        return ConnectFlow(
            self.identity(correlation_id), self.provider_store, self.provider_store,
            self.connection_store, self.clock, self.settings.issuer, http, correlation_id,
        )  # fmt: skip

    def token_vault(self, http: httpx.AsyncClient, hot: HotPath | None = None) -> TokenVault:
        store = self.connection_store.with_hot_path(hot) if hot else self.connection_store
        return TokenVault(store, self.provider_store, http, self.clock, self._plan_reconnect)

    async def _plan_reconnect(self, connection: Connection, reason: str) -> list[Delivery]:
        """Who hears that a connection needs its owner: the tenant's webhooks, and the
        owner by email (a user, or an agent's sponsor) — the approval channels."""
        notify = self.notify_store
        if connection.owner_kind == "user":
            owner = await self.delegation_store.user_by_id(connection.owner_id)
            label = owner.email if owner else connection.owner_id
        else:
            agent = await self.identity_store.get_client(connection.owner_id)
            owner = await self.delegation_store.user_by_id(agent.sponsor_id or "")
            label = connection.owner_id
        view = {**connection.view(label), "status": "needs_reauth",
                "connect_url": f"{self.settings.issuer}/v1/connections/start?provider="
                               f"{connection.provider}"}  # fmt: skip
        payload = connection_payload(view, connection.tenant_id, reason)
        emails = [owner.email] if owner is not None and self.settings.smtp_url else []
        hooks = await notify.active_webhooks(connection.tenant_id)
        return planned(connection.tenant_id, "connection.needs_reauth", payload, hooks, emails,
                       self.clock.now())  # fmt: skip

    def notifications(self, correlation_id: str) -> Notifications:
        return Notifications(
            self.identity(correlation_id), self.notify_store, self.clock, correlation_id
        )

    def dispatcher(self) -> Dispatcher:
        settings = self.settings
        return Dispatcher(self.notify_store, self.clock, settings.smtp_url, settings.smtp_from,
                          settings.fetch_allow_hosts)  # fmt: skip

    async def rotate_master(self, progress: Callable[[int, int], None]) -> dict[str, object]:
        """Re-wrap every data key under a new master key, then make it the key file.

        Resumable: the new key is written first (`master.key.next`), each record is
        re-wrapped in its own transaction, and the key files change only at the end — the
        old key is copied to `master.key.previous` before `master.key.next` atomically
        replaces `master.key`. Run it again after an interruption and it goes on."""
        if self.settings.kms:
            raise InvalidInput(
                "data keys are wrapped by your KMS (VALETKEY_KMS): rotate the key there; "
                "rotate-master manages DATA_DIR/master.key"
            )
        if self.settings.master_key:
            raise InvalidInput(
                "the master key comes from VALETKEY_MASTER_KEY: rotate it in your secret "
                "store; rotate-master manages DATA_DIR/master.key"
            )
        folder = Path(self.settings.data_dir)
        _write_key_file(folder / NEXT_KEY, generate_master_key_text())
        new = LocalKey.from_text((folder / NEXT_KEY).read_text())
        envelope = Envelope(new, self.master_key, *older_master_keys(self.settings))
        total, done, changed = await count_sealed(self.db), 0, 0
        async for moved in rewrap_all(self.db, envelope):
            done += 1
            changed += moved
            progress(done, total)
        previous = folder / PREVIOUS_KEY
        previous.unlink(missing_ok=True)
        _write_key_file(previous, (folder / "master.key").read_text().strip())
        os.replace(folder / NEXT_KEY, folder / "master.key")
        return {"key_id": new.key_id, "previous_key_id": self.master_key.key_id,
                "records": total, "rewrapped": changed}  # fmt: skip

    # The MCP gateway's upstreams (docs/mcp.md) ------------------------------------------------
    @functools.cached_property
    def mcp_store(self) -> SqlMcpStore:
        return SqlMcpStore(self.db)

    def mcp_upstreams(self, correlation_id: str) -> McpUpstreams:
        return McpUpstreams(
            self.identity(correlation_id), self.mcp_store, self.provider_store, self.clock,
            self.settings.issuer, correlation_id,
        )  # fmt: skip

    async def close(self) -> None:
        await self.db.dispose()
