"""the console: an approval keeps the task's mandate, a user's sign-out ends their sessions,
a trusted issuer may sign people in to the console (its OAuth client, the secret sealed),
and the audit log gets the indexes (and a `decision` column, derived, not chained) that
keep a filtered page fast on millions of events

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("mandate", sa.JSON(), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("signed_out_at", sa.Float(precision=53), nullable=True))
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("decision", sa.String(length=24), nullable=True))
    # The verdicts already recorded, so the filter and the charts see the old events too.
    verdict = (
        "json_extract(data, '$.decision')"
        if op.get_bind().dialect.name == "sqlite"
        else "(data::json ->> 'decision')"
    )
    op.execute(
        f"UPDATE audit_events SET decision = {verdict} "  # noqa: S608 (constant text)
        "WHERE type = 'decision.made' "
        f"AND {verdict} IN ('allow', 'deny', 'approval_required')"
    )
    with op.batch_alter_table("issuers") as batch:  # console sign-in through the issuer
        batch.add_column(sa.Column("login_client_id", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("login_client_secret", sa.Text(), nullable=True))
        batch.add_column(sa.Column("login_label", sa.String(length=80), nullable=True))
    op.create_index("ix_audit_events_tenant_user", "audit_events", ["tenant_id", "user_id", "seq"])
    op.create_index(
        "ix_audit_events_tenant_decision", "audit_events", ["tenant_id", "decision", "seq"]
    )
    op.create_index("ix_audit_events_tenant_ts", "audit_events", ["tenant_id", "ts_us"])
    op.create_index(
        "ix_audit_events_tenant_correlation", "audit_events", ["tenant_id", "correlation_id", "seq"]
    )


def downgrade() -> None:
    for name in ("correlation", "ts", "decision", "user"):
        op.drop_index(f"ix_audit_events_tenant_{name}", "audit_events")
    with op.batch_alter_table("issuers") as batch:
        for column in ("login_label", "login_client_secret", "login_client_id"):
            batch.drop_column(column)
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("decision")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("signed_out_at")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("mandate")
