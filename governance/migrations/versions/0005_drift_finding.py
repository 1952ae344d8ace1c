"""What a drift check found (drift, prior shift or nothing) and what it decided about retraining.

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
    op.add_column("drift_reports", sa.Column("finding", sa.String(32), nullable=False, server_default="none"))
    op.add_column("drift_reports", sa.Column("retrain", sa.String(32), nullable=False, server_default="not_needed"))
    op.execute("UPDATE drift_reports SET finding = 'drift', retrain = 'requested' WHERE drift_detected")


def downgrade() -> None:
    with op.batch_alter_table("drift_reports") as batch:
        batch.drop_column("retrain")
        batch.drop_column("finding")
