"""An index on event (kind, invoice_id): the scans that look for one kind of event (the plans that
run, each tick; the events of a reply or of an instalment reminder) read only that kind instead of
the whole history (171,000 events in bench/tui.py's store: a full scan of 60 ms a tick).

Revision ID: 0009_tui
Revises: 0008
"""

from alembic import op

revision = "0009_tui"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:  # no batch: an index needs no copy of the table on SQLite
    op.create_index("ix_event_kind_invoice_id", "event", ["kind", "invoice_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_event_kind_invoice_id", table_name="event")
