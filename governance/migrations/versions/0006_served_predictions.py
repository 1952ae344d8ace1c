"""The prediction log: every text a model server answered, with the version that answered.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from governance.migrations.helpers import NAME, TIMESTAMP

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "served_predictions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),  # 64-bit ids
        sa.Column("model_name", NAME, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("served_at", TIMESTAMP, nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("label", NAME, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_served_predictions"),
    )
    op.create_index("ix_served_predictions_model_name_served_at", "served_predictions", ["model_name", "served_at"])


def downgrade() -> None:
    op.drop_index("ix_served_predictions_model_name_served_at", table_name="served_predictions")
    op.drop_table("served_predictions")
