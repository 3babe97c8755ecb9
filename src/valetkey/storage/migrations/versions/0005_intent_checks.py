"""intent checks: actions, versioned policies, limits and exact usage counters, approvals

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.String(length=64)
Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "actions",
        sa.Column(
            "tenant_id",
            Id,
            sa.ForeignKey("tenants.id", name=op.f("fk_actions_tenant_id_tenants")),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("action_class", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=128), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name=op.f("pk_actions")),
    )
    op.create_table(
        "policy_versions",
        sa.Column(
            "tenant_id",
            Id,
            sa.ForeignKey("tenants.id", name=op.f("fk_policy_versions_tenant_id_tenants")),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("entities", sa.JSON(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=256), server_default="", nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "version", name=op.f("pk_policy_versions")),
    )
    op.create_table(
        "usage_counters",
        sa.Column("tenant_id", Id, nullable=False),
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("window_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "key", "window_start", name=op.f("pk_usage_counters")),
    )
    op.create_index(op.f("ix_usage_counters_expires_at"), "usage_counters", ["expires_at"])
    op.create_table(
        "limits",
        sa.Column("id", Id, nullable=False),
        sa.Column(
            "tenant_id",
            Id,
            sa.ForeignKey("tenants.id", name=op.f("fk_limits_tenant_id_tenants")),
            nullable=False,
        ),
        sa.Column("agent_id", Id, nullable=True),
        sa.Column("user_id", Id, nullable=True),
        sa.Column("action_class", sa.String(length=16), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("maximum", sa.BigInteger(), nullable=False),
        sa.Column("per", sa.String(length=16), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limits")),
        sa.UniqueConstraint(
            "tenant_id",
            "agent_id",
            "user_id",
            "action_class",
            "kind",
            "per",
            name="uq_limits_subject",
        ),
    )
    op.create_table(
        "approvals",
        sa.Column("id", Id, nullable=False),
        sa.Column(
            "tenant_id",
            Id,
            sa.ForeignKey("tenants.id", name=op.f("fk_approvals_tenant_id_tenants")),
            nullable=False,
        ),
        sa.Column("agent_id", Id, nullable=False),
        sa.Column("user_id", Id, nullable=True),
        sa.Column("delegation_key", sa.String(length=128), nullable=True),
        sa.Column("intent_hash", sa.String(length=64), nullable=False),
        sa.Column("intent", sa.JSON(), nullable=False),
        sa.Column("action_class", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", Id, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("decided_at", Time, nullable=True),
        sa.Column("used_at", Time, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    op.create_index("ix_approvals_tenant_status", "approvals", ["tenant_id", "status"])
    op.create_table(
        "webhooks",
        sa.Column("id", Id, nullable=False),
        sa.Column(
            "tenant_id",
            Id,
            sa.ForeignKey("tenants.id", name=op.f("fk_webhooks_tenant_id_tenants")),
            nullable=False,
        ),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    op.create_index(op.f("ix_webhooks_tenant_id"), "webhooks", ["tenant_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", Id, nullable=False),
        sa.Column("tenant_id", Id, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=2048), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Time, nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("delivered_at", Time, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_tenant", "deliveries", ["tenant_id", "created_at"])


def downgrade() -> None:
    for table in (
        "deliveries",
        "webhooks",
        "approvals",
        "limits",
        "usage_counters",
        "policy_versions",
        "actions",
    ):
        op.drop_table(table)
