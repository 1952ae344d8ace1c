"""Where a gate decision's floor came from (`min_score` or the classical baseline), so a stored decision is the
gate's whole outcome. Earlier decisions whose floor equals their run's classical-baseline score get that source.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("gate_decisions", sa.Column("floor_source", sa.String(32), nullable=False,
                                              server_default="min_score"))
    op.execute("""
        UPDATE gate_decisions SET floor_source = 'classical baseline'
        WHERE EXISTS (SELECT 1 FROM metrics
                      WHERE metrics.run_id = gate_decisions.run_id AND metrics.version_id IS NULL
                        AND metrics.key = 'classical_baseline_' || gate_decisions.primary_metric
                        AND metrics.value = gate_decisions.min_score)
    """)


def downgrade() -> None:
    with op.batch_alter_table("gate_decisions") as batch:
        batch.drop_column("floor_source")
