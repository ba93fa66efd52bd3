"""The credit controller's desk (the triage UI): indexes for the queue read a page at a time
(messages by status, events by message, invoices by the message holding them, contacts by address:
a person's decision reads the sender's open invoices as the pipeline does) and ignored_sender,
the addresses whose mail never waits for a person

Revision ID: 0005_desk
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_desk"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbound_status"), ["status"], unique=False)
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_inbound_id"), ["inbound_id"], unique=False)
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invoice_held_by"), ["held_by"], unique=False)
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contact_email"), ["email"], unique=False)
    op.create_table(
        "ignored_sender",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("address", sa.String(250), nullable=False, unique=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ignored_sender")
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_email"))
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoice_held_by"))
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_inbound_id"))
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_status"))
