"""inbound_raw: a received message's bytes move out of `inbound` into a table of their own, keyed
by the message's id. SQLite writes a row again whole when any of its columns changes: each change
of a message's status wrote its bytes again (and held them twice in memory, 120 MB more for a
40 MB message); the listings of messages read them for nothing.

Revision ID: 0010
Revises: 0009_tui
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009_tui"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbound_raw",
        sa.Column("inbound_id", sa.Integer(), sa.ForeignKey("inbound.id"), primary_key=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
    )
    op.execute("INSERT INTO inbound_raw (inbound_id, raw) SELECT id, raw FROM inbound")
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.drop_column("raw")


def downgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("raw", sa.LargeBinary(), nullable=False, server_default=sa.text("''")))
    op.execute("UPDATE inbound SET raw = (SELECT raw FROM inbound_raw WHERE inbound_raw.inbound_id = inbound.id)")
    op.drop_table("inbound_raw")
