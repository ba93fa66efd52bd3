"""mailbox state per IMAP folder; one inbound row per (folder, uidvalidity, uid)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(length=250), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("folder"),
    )
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        # IMAP UIDs and UIDVALIDITY are unsigned 32-bit: past PostgreSQL's INTEGER.
        batch_op.alter_column("uidvalidity", type_=sa.BigInteger(), existing_nullable=True)
        batch_op.alter_column("uid", type_=sa.BigInteger(), existing_nullable=True)
        batch_op.create_unique_constraint("uq_inbound_folder_uidvalidity_uid", ["folder", "uidvalidity", "uid"])


def downgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.drop_constraint("uq_inbound_folder_uidvalidity_uid", type_="unique")
        batch_op.alter_column("uid", type_=sa.Integer(), existing_nullable=True)
        batch_op.alter_column("uidvalidity", type_=sa.Integer(), existing_nullable=True)
    op.drop_table("mailbox")
