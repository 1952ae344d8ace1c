"""Column builders shared by the migration scripts. Frozen: changing them would change old migrations."""

import sqlalchemy as sa
from sqlalchemy.schema import SchemaItem

NAME = sa.String(200)
RUN_ID = sa.String(36)
TIMESTAMP = sa.DateTime(timezone=True)


def id_column() -> sa.Column:
    return sa.Column("id", sa.Integer, nullable=False)


def foreign_key(
    table: str,
    column: str,
    target: str,
    *,
    type_: sa.types.TypeEngine | type[sa.Integer] = sa.Integer,
    nullable: bool = False,
) -> list[SchemaItem]:
    """A foreign-key column plus its constraint, named as ``governance.models.NAMING_CONVENTION`` does."""
    target_table = target.split(".")[0]
    return [
        sa.Column(column, type_, nullable=nullable),
        sa.ForeignKeyConstraint([column], [target], name=f"fk_{table}_{column}_{target_table}"),
    ]
