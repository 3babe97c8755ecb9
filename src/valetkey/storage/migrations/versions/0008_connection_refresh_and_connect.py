"""refresh leases on connections, and connect-flow states

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("connections", sa.Column("lease_until", sa.Float(precision=53), nullable=True))
    op.add_column("connections", sa.Column("lease_holder", sa.String(length=64), nullable=True))
    op.add_column("connections", sa.Column("refresh_after", sa.Float(precision=53), nullable=True))
    op.add_column("connections", sa.Column("refreshed_at", sa.Float(precision=53), nullable=True))
    op.create_table(
        "connect_states",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column(
            "tenant_id",
            sa.String(length=64),
            sa.ForeignKey("tenants.id", name=op.f("fk_connect_states_tenant_id_tenants")),
            nullable=False,
        ),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("owner_kind", sa.String(length=8), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=False),
        sa.Column("started_by", sa.String(length=64), nullable=False),
        sa.Column("verifier", sa.Text(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("expires_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connect_states")),
    )


def downgrade() -> None:
    op.drop_table("connect_states")
    for column in ("refreshed_at", "refresh_after", "lease_holder", "lease_until"):
        op.drop_column("connections", column)
