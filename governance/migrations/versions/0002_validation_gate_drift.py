"""Validation results, promotion-gate decisions and drift reports.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from governance.migrations.helpers import NAME, RUN_ID, TIMESTAMP, foreign_key, id_column

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "validation_results",
        id_column(),
        *foreign_key("validation_results", "run_id", "runs.id", type_=RUN_ID),
        *foreign_key("validation_results", "dataset_id", "datasets.id", nullable=True),
        sa.Column("expectation", NAME, nullable=False),
        sa.Column("column_name", NAME, nullable=True),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("observed", sa.JSON, nullable=True),
        sa.Column("details", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_validation_results"),
    )
    op.create_index("ix_validation_results_run_id", "validation_results", ["run_id"])
    op.create_table(
        "gate_decisions",
        id_column(),
        *foreign_key("gate_decisions", "run_id", "runs.id", type_=RUN_ID),
        *foreign_key("gate_decisions", "candidate_version_id", "model_versions.id"),
        *foreign_key("gate_decisions", "champion_version_id", "model_versions.id", nullable=True),
        sa.Column("primary_metric", NAME, nullable=False),
        sa.Column("candidate_score", sa.Float, nullable=False),
        sa.Column("champion_score", sa.Float, nullable=True),
        sa.Column("min_score", sa.Float, nullable=False),
        sa.Column("min_improvement", sa.Float, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gate_decisions"),
    )
    op.create_index("ix_gate_decisions_candidate_version_id", "gate_decisions", ["candidate_version_id"])
    op.create_table(
        "drift_reports",
        id_column(),
        *foreign_key("drift_reports", "run_id", "runs.id", type_=RUN_ID, nullable=True),
        *foreign_key("drift_reports", "version_id", "model_versions.id", nullable=True),
        sa.Column("model_name", NAME, nullable=False),
        sa.Column("drift_detected", sa.Boolean, nullable=False),
        sa.Column("drift_share", sa.Float, nullable=False),
        sa.Column("report_path", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_drift_reports"),
    )
    op.create_index("ix_drift_reports_model_name", "drift_reports", ["model_name"])


def downgrade() -> None:
    for table in ("drift_reports", "gate_decisions", "validation_results"):
        op.drop_table(table)
