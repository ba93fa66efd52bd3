"""outbound.prepared_at, outbound.prepared_paid_cents: a message is rendered and stored ahead of
its sending (status `prepared`); when, and what its invoices had been paid then, so that the
claim before sending sees a payment that changed the letter (bot/outbox.py). An index on
(status, id) for the claims, which take the oldest messages of one status a chunk at a time; it
replaces the index on status alone (a message changes status five times on its way: one index
fewer to keep each time).

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
    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prepared_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("prepared_paid_cents", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_outbound_status_id", ["status", "id"], unique=False)
        batch_op.drop_index("ix_outbound_status")


def downgrade() -> None:
    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.create_index("ix_outbound_status", ["status"], unique=False)
        batch_op.drop_index("ix_outbound_status_id")
        batch_op.drop_column("prepared_paid_cents")
        batch_op.drop_column("prepared_at")
