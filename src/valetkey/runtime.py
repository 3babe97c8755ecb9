"""The composition root: settings in, wired services out. The CLI and the web app start here."""

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from valetkey.audit.writer import AuditSink
from valetkey.clock import Clock, SystemClock
from valetkey.config import Settings
from valetkey.identity.delegations import DelegationService
from valetkey.identity.service import IdentityService
from valetkey.notify.messages import approval_payload
from valetkey.notify.outbox import Delivery, Dispatcher, planned
from valetkey.notify.service import Notifications
from valetkey.oauth.delegated import Consent
from valetkey.oauth.dpop import NonceSource
from valetkey.oauth.grants.authorization_code import AuthorizationCodeGrant
from valetkey.oauth.grants.client_credentials import ClientCredentialsGrant
from valetkey.oauth.grants.refresh_token import RefreshTokenGrant
from valetkey.oauth.grants.token_exchange import TokenExchangeGrant
from valetkey.oauth.keys import KeyManager
from valetkey.oauth.remote_keys import RemoteKeySets
from valetkey.oauth.server import OAuthServer
from valetkey.oauth.verification import LocalTokens
from valetkey.policy.approvals import Approval, Approvals
from valetkey.policy.authorizer import Authorizer
from valetkey.policy.authzen import AuthZen
from valetkey.policy.decision import Caller, DecisionPoint
from valetkey.policy.service import PolicyService
from valetkey.storage.approval_store import SqlApprovalStore
from valetkey.storage.audit_store import SqlAuditStore
from valetkey.storage.database import Database
from valetkey.storage.delegation_store import SqlDelegationStore
from valetkey.storage.hot_path import HotPath, open_hot_path
from valetkey.storage.identity_store import SqlIdentityStore
from valetkey.storage.migrate import upgrade
from valetkey.storage.notify_store import SqlNotifyStore
from valetkey.storage.oauth_store import SqlOAuthStore
from valetkey.storage.policy_store import SqlPolicyStore
from valetkey.storage.provider_store import SqlProviderStore
from valetkey.storage.session_store import SqlSessionStore
from valetkey.storage.usage_store import SqlUsageStore
from valetkey.vault.cipher import Envelope, LocalKey, generate_master_key_text
from valetkey.vault.service import Providers


def load_master_key(settings: Settings) -> LocalKey:
    """`VALETKEY_MASTER_KEY`, else `DATA_DIR/master.key`, created (0600) on first start."""
    if settings.master_key:
        return LocalKey.from_text(settings.master_key)
    path = Path(settings.data_dir) / "master.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_master_key_text() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    return LocalKey.from_text(path.read_text())


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
        master_key = load_master_key(settings)
        envelope = Envelope(master_key)
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
            self.identity(correlation_id), SqlProviderStore(self.db, self.envelope), self.clock,
            self.settings.issuer, correlation_id,
        )  # fmt: skip

    def notifications(self, correlation_id: str) -> Notifications:
        return Notifications(
            self.identity(correlation_id), self.notify_store, self.clock, correlation_id
        )

    def dispatcher(self) -> Dispatcher:
        settings = self.settings
        return Dispatcher(self.notify_store, self.clock, settings.smtp_url, settings.smtp_from,
                          settings.fetch_allow_hosts)  # fmt: skip

    async def close(self) -> None:
        await self.db.dispose()
