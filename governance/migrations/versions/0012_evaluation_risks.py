"""A classifier version's defects and risks beside its evaluation: slice scores with the reference's, the most
confused pairs, flip rates under perturbation with the champion's, and token attributions (`tasks/risks.py`).
Null for versions evaluated before this revision.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("evaluation_details", sa.Column("risks", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evaluation_details") as batch:
        batch.drop_column("risks")
