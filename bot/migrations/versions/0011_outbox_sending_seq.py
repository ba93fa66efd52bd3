"""outbound.sending_seq: when (a monotonic clock's nanoseconds) this instance marked the message
`sending`. Delivered messages are recorded `sent` a few at a time, so a crash may leave several
`sending`; of those one instance's batch left (same `claimed_by`, same `claimed_at`), only the
last marked can be in doubt: each mark waits for the previous message's outcome (bot/outbox.py).

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
    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sending_seq", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.drop_column("sending_seq")
