"""What a language model answered: a served completion's text beside its prompt in the prediction log (null for
a classifier's row, and when the server keeps no raw text).

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
    op.add_column("served_predictions", sa.Column("completion", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("served_predictions") as batch:
        batch.drop_column("completion")
