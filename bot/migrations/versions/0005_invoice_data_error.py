"""invoice.data_error: why the invoice's reminder could not be built or addressed (a control
character, an address the server cannot take, a message the server refused for its content); the
ladder waits until the data is fixed (a re-import that changes the row, `relance contact`)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_error", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_column("data_error")
