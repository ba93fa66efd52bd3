"""Where the two revisions of 2026-11-29 meet: 0005 (invoice.data_error, hostile input) and
0005_desk (the triage desk's indexes and ignored senders) were written side by side; both apply,
in either order, and this revision joins them into one head.

Revision ID: 0006
Revises: 0005, 0005_desk
"""

revision = "0006"
down_revision = ("0005", "0005_desk")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
