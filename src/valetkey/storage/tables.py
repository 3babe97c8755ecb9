"""The schema, as SQLAlchemy Core tables; Alembic migrations create exactly this."""

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = sa.String(64)
Time = sa.Float(precision=53)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", Time, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("roles", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(256), nullable=True),
    sa.Column("signed_out_at", Time, nullable=True),  # sessions signed before it are dead
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.UniqueConstraint("tenant_id", "email", name="uq_users_tenant_email"),
)

resources = sa.Table(
    "resources",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("uri", sa.String(2048), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("implies", sa.JSON, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.UniqueConstraint("tenant_id", "uri", name="uq_resources_tenant_uri"),
)

clients = sa.Table(
    "clients",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("secrets", sa.JSON, nullable=False),
    sa.Column("jwks", sa.JSON, nullable=True),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("rights", sa.JSON, nullable=False),
    sa.Column("sponsor_id", Id, sa.ForeignKey("users.id"), nullable=True, index=True),
    sa.Column("address", sa.String(320), nullable=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("needs_sponsor", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("revoked_before", Time, nullable=False, server_default="0"),
    sa.Column("redirect_uris", sa.JSON, nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("tenant_id", "kind", "name", name="uq_clients_tenant_kind_name"),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(128), primary_key=True),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("private_key", sa.Text, nullable=False),
    sa.Column("public_jwk", sa.JSON, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("activated_at", Time, nullable=True),
    sa.Column("retired_at", Time, nullable=True),
    sa.Column("publish_until", Time, nullable=True),
)

revoked_tokens = sa.Table(
    "revoked_tokens",
    metadata,
    sa.Column("jti", sa.String(128), primary_key=True),
    sa.Column("tenant_id", Id, nullable=False),
    sa.Column("expires_at", Time, nullable=False, index=True),
    sa.Column("revoked_at", Time, nullable=False),
)

used_assertions = sa.Table(
    "used_assertions",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("expires_at", Time, nullable=False, index=True),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("tenant_id", Id, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Column("correlation_id", sa.String(128), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("agent_id", Id, nullable=True),
    sa.Column("user_id", Id, nullable=True),
    sa.Column("jti", sa.String(128), nullable=True),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # data["decision"] of decision events, copied for the console's filter (not chained)
    sa.Column("decision", sa.String(24), nullable=True),
    sa.Index("ix_audit_events_tenant_agent", "tenant_id", "agent_id", "seq"),
    sa.Index("ix_audit_events_tenant_user", "tenant_id", "user_id", "seq"),
    sa.Index("ix_audit_events_tenant_decision", "tenant_id", "decision", "seq"),
    sa.Index("ix_audit_events_tenant_ts", "tenant_id", "ts_us"),
    sa.Index("ix_audit_events_tenant_correlation", "tenant_id", "correlation_id", "seq"),
    sa.Index("ix_audit_events_tenant_type", "tenant_id", "type", "seq"),
    sa.Index("ix_audit_events_correlation", "correlation_id"),
)

audit_heads = sa.Table(
    "audit_heads",
    metadata,
    sa.Column("tenant_id", Id, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

issuers = sa.Table(
    "issuers",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("issuer", sa.String(2048), nullable=False),
    sa.Column("jwks_uri", sa.String(2048), nullable=False),
    sa.Column("audience", sa.String(2048), nullable=True),
    sa.Column("claim", sa.String(64), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    # Console sign-in through this issuer (OpenID Connect): its client, the secret sealed.
    sa.Column("login_client_id", sa.String(255), nullable=True),
    sa.Column("login_client_secret", sa.Text, nullable=True),
    sa.Column("login_label", sa.String(80), nullable=True),
    sa.UniqueConstraint("tenant_id", "issuer", name="uq_issuers_tenant_issuer"),
)

role_scopes = sa.Table(
    "role_scopes",
    metadata,
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("role", sa.String(32), primary_key=True),
    sa.Column("scopes", sa.JSON, nullable=False),
)

delegations = sa.Table(
    "delegations",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("user_id", Id, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("agent_id", Id, sa.ForeignKey("clients.id"), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("resources", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=True),
    sa.Column("revoked_at", Time, nullable=True),
    sa.Column("mandate", sa.JSON, nullable=True),
    sa.Column("sub_agents", sa.JSON, nullable=True),
    sa.Index("ix_delegations_user_agent", "tenant_id", "user_id", "agent_id"),
)

# Single-use authorization codes (RFC 6749 §4.1.2), stored by digest only.
authorization_codes = sa.Table(
    "authorization_codes",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("tenant_id", Id, nullable=False),
    sa.Column("client_id", Id, nullable=False),
    sa.Column("user_id", Id, nullable=False),
    sa.Column("delegation_id", Id, nullable=True),
    sa.Column("redirect_uri", sa.String(2048), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("resource", sa.String(2048), nullable=True),
    sa.Column("code_challenge", sa.String(128), nullable=False),
    sa.Column("dpop_jkt", sa.String(64), nullable=True),
    sa.Column("mandate", sa.JSON, nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False, index=True),
    sa.Column("used_at", Time, nullable=True),
    sa.Column("family_id", Id, nullable=True),  # the session its tokens started
)

# Refresh tokens (RFC 6749 §6, RFC 9700 §4.14.2): opaque, stored by digest, rotated on
# every use; a family is every token descended from one grant.
refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("family_id", Id, nullable=False, index=True),
    sa.Column("tenant_id", Id, nullable=False),
    sa.Column("client_id", Id, nullable=False),
    sa.Column("user_id", Id, nullable=False),
    sa.Column("delegation_id", Id, nullable=True, index=True),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("resource", sa.String(2048), nullable=False),
    sa.Column("dpop_jkt", sa.String(64), nullable=True),
    sa.Column("mandate", sa.JSON, nullable=True),
    sa.Column("generation", sa.String(32), nullable=False),
    sa.Column("access_jti", sa.String(128), nullable=False),
    sa.Column("access_exp", Time, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | used | revoked
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("used_at", Time, nullable=True),
)

# Intent checks (issue 4) ------------------------------------------------------------------
actions = sa.Table(
    "actions",
    metadata,
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("action_class", sa.String(16), nullable=False),
    sa.Column("scope", sa.String(128), nullable=True),
    sa.Column("created_at", Time, nullable=False),
)

policy_versions = sa.Table(
    "policy_versions",
    metadata,
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("entities", sa.JSON, nullable=True),  # the tenant's own Cedar entities
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("note", sa.String(256), nullable=False, server_default=""),
    sa.Column("created_at", Time, nullable=False),
)

# Exact counters: one row per (tenant, key, window start); a conditional increment inside a
# write transaction is the only way a count moves.
usage_counters = sa.Table(
    "usage_counters",
    metadata,
    sa.Column("tenant_id", Id, primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("window_start", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("expires_at", Time, nullable=False, index=True),
)

limits = sa.Table(
    "limits",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("agent_id", Id, nullable=True),
    sa.Column("user_id", Id, nullable=True),
    sa.Column("action_class", sa.String(16), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),  # count | budget
    sa.Column("maximum", sa.BigInteger, nullable=False),
    sa.Column("per", sa.String(16), nullable=False),  # minute | hour | day
    sa.Column("created_at", Time, nullable=False),
    sa.UniqueConstraint(
        "tenant_id", "agent_id", "user_id", "action_class", "kind", "per", name="uq_limits_subject"
    ),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("agent_id", Id, nullable=False),
    sa.Column("user_id", Id, nullable=True),
    sa.Column("delegation_key", sa.String(128), nullable=True),
    sa.Column("intent_hash", sa.String(64), nullable=False),
    sa.Column("intent", sa.JSON, nullable=False),
    sa.Column("mandate", sa.JSON, nullable=True),  # the task's, shown to the approver
    sa.Column("action_class", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending|approved|denied|used|expired
    sa.Column("decided_by", Id, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("decided_at", Time, nullable=True),
    sa.Column("used_at", Time, nullable=True),
    sa.Index("ix_approvals_tenant_status", "tenant_id", "status"),
)

# Notifications: webhooks (Standard Webhooks) and a durable outbox of deliveries.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("secret", sa.Text, nullable=False),  # envelope-encrypted whsec_ secret
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),  # webhook | email
    sa.Column("target", sa.String(2048), nullable=False),  # webhook id, or an email address
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", Time, nullable=False),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("delivered_at", Time, nullable=True),
    sa.Index("ix_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_tenant", "tenant_id", "created_at"),
)

# The vault (issue 5): downstream platforms' OAuth configurations.
providers = sa.Table(
    "providers",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("client_id", sa.String(512), nullable=False),
    sa.Column("client_secret", sa.Text, nullable=False),  # envelope-encrypted
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_providers_tenant_name"),
)

# The vault's entries: one set of platform tokens per (tenant, provider, owner).
connections = sa.Table(
    "connections",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("provider_id", Id, nullable=False),
    sa.Column("owner_kind", sa.String(8), nullable=False),  # user | agent
    sa.Column("owner_id", Id, nullable=False),
    sa.Column("tokens", sa.Text, nullable=True),  # envelope-encrypted JSON; None once revoked
    sa.Column("status", sa.String(16), nullable=False),  # active | needs_reauth | revoked
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("expires_at", Time, nullable=True),  # the access token's
    sa.Column("version", sa.Integer, nullable=False),  # bumped by every token write
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    # Refresh single-flight across processes and nodes: a lease taken by compare-and-set.
    sa.Column("lease_until", Time, nullable=True),
    sa.Column("lease_holder", sa.String(64), nullable=True),
    sa.Column("refresh_after", Time, nullable=True),  # when the access token is due a refresh
    sa.Column("refreshed_at", Time, nullable=True),
    sa.Index("ix_connections_owner", "tenant_id", "provider_id", "owner_kind", "owner_id"),
)

# The connect flow's pending authorizations: one row per `state`, spent at the callback.
connect_states = sa.Table(
    "connect_states",
    metadata,
    sa.Column("id", Id, primary_key=True),  # SHA-256 of the state sent to the platform
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("provider_id", Id, nullable=False),
    sa.Column("owner_kind", sa.String(8), nullable=False),
    sa.Column("owner_id", Id, nullable=False),
    sa.Column("started_by", Id, nullable=False),
    sa.Column("verifier", sa.Text, nullable=False),  # the PKCE verifier, envelope-encrypted
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
)

# Secrets every node shares and derives keys from (sessions, DPoP nonces) when an external
# KMS replaces the local master key: random, created once, sealed by the KMS.
instance_secrets = sa.Table(
    "instance_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("secret", sa.Text, nullable=False),  # envelope-encrypted
    sa.Column("created_at", Time, nullable=False),
)

# The MCP gateway (issue 6): a tenant's upstream MCP servers, with the admin's per-tool
# overrides ({tool: {"class", "resource", "sanitize"}}) as one JSON column.
mcp_upstreams = sa.Table(
    "mcp_upstreams",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("tenant_id", Id, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(32), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("provider", sa.String(40), nullable=True),  # a provider's name in the tenant
    sa.Column("sanitize", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("tools", sa.JSON, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_mcp_upstreams_tenant_name"),
)
