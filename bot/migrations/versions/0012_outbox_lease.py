"""outbound.lease_at: when the instance that holds the message (`claimed_by`) last took, claimed
or marked it, by its own clock. Another instance judges a claimant on another host dead by it.
`claimed_at` stays the start of its pass, which names the batch whose last mark may be in doubt
after a crash: a pass longer than the lease keeps what it holds (bot/outbox.py).

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
    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.drop_column("lease_at")
