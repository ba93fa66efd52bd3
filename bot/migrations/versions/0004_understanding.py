"""outbound.client_id nullable (the operator's daily digest); invoice.held_by: the message a person
must read before the invoice goes on (a reply held "until a person decides"); inbound.label /
labelled_by / labelled_at: the kind a person set, kept as an example the classifier learns from;
classifier: the models `relance learn` fitted on this installation

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.add_column(sa.Column("held_by", sa.Integer(), nullable=True))
    with op.batch_alter_table("outbound", schema=None) as batch_op:  # the operator's digest has no client
        batch_op.alter_column("client_id", existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("label", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("labelled_by", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "classifier",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("examples", sa.Integer(), nullable=False),
        sa.Column("labelled", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("classifier")
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.drop_column("labelled_at")
        batch_op.drop_column("labelled_by")
        batch_op.drop_column("label")
    op.execute("DELETE FROM outbound WHERE client_id IS NULL")  # the digests: 0003 has no place for them
    with op.batch_alter_table("outbound", schema=None) as batch_op:
        batch_op.alter_column("client_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_column("held_by")
