"""Initial registry schema: models, versions, artifacts, datasets, runs, metrics, aliases, audit events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from governance.migrations.helpers import NAME, RUN_ID, TIMESTAMP, foreign_key, id_column

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registered_models",
        id_column(),
        sa.Column("name", NAME, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("require_approval", sa.Boolean, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registered_models"),
        sa.UniqueConstraint("name", name="uq_registered_models_name"),
    )
    op.create_table(
        "runs",
        sa.Column("id", RUN_ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model_name", NAME, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("code_version", NAME, nullable=False),
        sa.Column("package_versions", sa.JSON, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("author", NAME, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_model_name", "runs", ["model_name"])
    op.create_index("ix_runs_status_started_at", "runs", ["status", "started_at"])
    op.create_table(
        "model_versions",
        id_column(),
        *foreign_key("model_versions", "model_id", "registered_models.id"),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("artifact_path", sa.Text, nullable=False),
        sa.Column("base_model", sa.String(500), nullable=False),
        *foreign_key("model_versions", "parent_version_id", "model_versions.id", nullable=True),
        *foreign_key("model_versions", "run_id", "runs.id", type_=RUN_ID),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", NAME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
    )
    op.create_index("ix_model_versions_run_id", "model_versions", ["run_id"])
    op.create_table(
        "artifact_files",
        id_column(),
        *foreign_key("artifact_files", "version_id", "model_versions.id"),
        sa.Column("relative_path", sa.String(1000), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_artifact_files"),
        sa.UniqueConstraint("version_id", "relative_path", name="uq_artifact_files_version_id_relative_path"),
    )
    op.create_table(
        "datasets",
        id_column(),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("schema", sa.JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.UniqueConstraint("fingerprint", "role", name="uq_datasets_fingerprint_role"),
    )
    op.create_table(
        "version_datasets",
        *foreign_key("version_datasets", "version_id", "model_versions.id"),
        sa.Column("role", sa.String(32), nullable=False),
        *foreign_key("version_datasets", "dataset_id", "datasets.id"),
        sa.PrimaryKeyConstraint("version_id", "role", name="pk_version_datasets"),
    )
    op.create_index("ix_version_datasets_dataset_id", "version_datasets", ["dataset_id"])
    op.create_table(
        "metrics",
        id_column(),
        *foreign_key("metrics", "run_id", "runs.id", type_=RUN_ID),
        *foreign_key("metrics", "version_id", "model_versions.id", nullable=True),
        *foreign_key("metrics", "dataset_id", "datasets.id", nullable=True),
        sa.Column("key", NAME, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("step", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
    )
    op.create_index("ix_metrics_run_id", "metrics", ["run_id"])
    op.create_index("ix_metrics_version_id", "metrics", ["version_id"])
    op.create_table(
        "aliases",
        *foreign_key("aliases", "model_id", "registered_models.id"),
        sa.Column("alias", sa.String(100), nullable=False),
        *foreign_key("aliases", "version_id", "model_versions.id"),
        sa.PrimaryKeyConstraint("model_id", "alias", name="pk_aliases"),
    )
    op.create_table(
        "alias_history",
        id_column(),
        *foreign_key("alias_history", "model_id", "registered_models.id"),
        sa.Column("alias", sa.String(100), nullable=False),
        *foreign_key("alias_history", "version_id", "model_versions.id"),
        *foreign_key("alias_history", "previous_version_id", "model_versions.id", nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alias_history"),
    )
    op.create_index("ix_alias_history_model_alias", "alias_history", ["model_id", "alias"])
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_subject", "audit_events", ["subject"])


def downgrade() -> None:
    for table in (
        "audit_events",
        "alias_history",
        "aliases",
        "metrics",
        "version_datasets",
        "datasets",
        "artifact_files",
        "model_versions",
        "runs",
        "registered_models",
    ):
        op.drop_table(table)
