"""A causal-lm version's evaluation for its audit report: per-document losses (with perplexity and interval) of the
base, the champion and the candidate on the test documents and of the base and the candidate on the reference
texts, the reference's source, the corpus's token count, and the fixed prompts answered by the base and the
candidate.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from governance.migrations.helpers import RUN_ID, TIMESTAMP, foreign_key, id_column

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLE = "language_model_evaluations"


def upgrade() -> None:
    op.create_table(
        TABLE,
        id_column(),
        *foreign_key(TABLE, "run_id", "runs.id", type_=RUN_ID),
        *foreign_key(TABLE, "version_id", "model_versions.id"),
        *foreign_key(TABLE, "dataset_id", "datasets.id", nullable=True),
        sa.Column("base_test", sa.JSON, nullable=False),
        sa.Column("champion_test", sa.JSON, nullable=True),
        sa.Column("candidate_test", sa.JSON, nullable=False),
        sa.Column("base_reference", sa.JSON, nullable=False),
        sa.Column("candidate_reference", sa.JSON, nullable=False),
        sa.Column("reference_source", sa.Text, nullable=False),
        sa.Column("corpus_tokens", sa.BigInteger, nullable=True),
        sa.Column("samples", sa.JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{TABLE}"),
    )
    op.create_index(f"ix_{TABLE}_version_id", TABLE, ["version_id"])


def downgrade() -> None:
    op.drop_table(TABLE)
