"""Evaluation details of a version: per-class scores, confusion matrix, reliability bins, adapted checkpoint.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from governance.migrations.helpers import RUN_ID, TIMESTAMP, foreign_key, id_column

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluation_details",
        id_column(),
        *foreign_key("evaluation_details", "run_id", "runs.id", type_=RUN_ID),
        *foreign_key("evaluation_details", "version_id", "model_versions.id"),
        *foreign_key("evaluation_details", "dataset_id", "datasets.id", nullable=True),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("per_class", sa.JSON, nullable=False),
        sa.Column("confusion_matrix", sa.JSON, nullable=False),
        sa.Column("reliability", sa.JSON, nullable=False),
        sa.Column("adapted_checkpoint_key", sa.String(64), nullable=True),
        sa.Column("adapted_checkpoint_path", sa.Text, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_evaluation_details"),
    )
    op.create_index("ix_evaluation_details_version_id", "evaluation_details", ["version_id"])


def downgrade() -> None:
    op.drop_table("evaluation_details")
