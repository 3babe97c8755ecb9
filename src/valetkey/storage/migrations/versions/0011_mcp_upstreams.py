"""the MCP gateway's upstreams and their per-tool overrides

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mcp_upstreams",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column(
            "tenant_id",
            sa.String(length=64),
            sa.ForeignKey("tenants.id", name=op.f("fk_mcp_upstreams_tenant_id_tenants")),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=True),
        sa.Column("sanitize", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("tools", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_upstreams")),
        sa.UniqueConstraint("tenant_id", "name", name="uq_mcp_upstreams_tenant_name"),
    )


def downgrade() -> None:
    op.drop_table("mcp_upstreams")
