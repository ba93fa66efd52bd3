"""inbound.moved_at: when a handled message was moved to imap.move_handled_to; inbound.suggested:
the invoices a message probably concerns, for a person to confirm

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("moved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("suggested", sa.String(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.drop_column("suggested")
        batch_op.drop_column("moved_at")
