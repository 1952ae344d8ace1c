"""Compressed forms of a version (ONNX int8, a distilled student): files, size, test metrics and the gate's verdict.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from governance.migrations.helpers import RUN_ID, TIMESTAMP, foreign_key, id_column

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compressed_forms",
        id_column(),
        *foreign_key("compressed_forms", "run_id", "runs.id", type_=RUN_ID),
        *foreign_key("compressed_forms", "version_id", "model_versions.id"),
        sa.Column("form", sa.String(32), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("artifact_path", sa.Text, nullable=True),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=True),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("per_class_f1_delta", sa.JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_compressed_forms"),
    )
    op.create_index("ix_compressed_forms_version_id", "compressed_forms", ["version_id"])


def downgrade() -> None:
    op.drop_table("compressed_forms")
