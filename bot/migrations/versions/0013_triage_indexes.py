"""Indexes for what waits for a person in the triage queue: invoices whose reminder failed on their
data (`data_error`, partial: a handful among many), failing addresses (partial), and an invoice's
contact (a failing address finds its invoices by it).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_invoice_data_error", "invoice", ["state"], sqlite_where=sa.text("data_error IS NOT NULL"),
                    postgresql_where=sa.text("data_error IS NOT NULL"))
    op.create_index("ix_contact_failing", "contact", ["id"], sqlite_where=sa.text("failing = 1"),
                    postgresql_where=sa.text("failing"))
    op.create_index("ix_invoice_contact_id", "invoice", ["contact_id"])


def downgrade() -> None:
    op.drop_index("ix_invoice_contact_id", table_name="invoice")
    op.drop_index("ix_contact_failing", table_name="contact")
    op.drop_index("ix_invoice_data_error", table_name="invoice")
