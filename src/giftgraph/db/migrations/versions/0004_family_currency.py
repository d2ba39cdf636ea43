"""families.currency: the family's ISO 4217 currency (budgets are in it; `spent` counts it).

Existing families get USD, the currency every gift defaulted to until now.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("families", sa.Column("currency", sa.String(length=3), nullable=False,
                                        server_default="USD"))
    op.create_check_constraint("ck_families_currency", "families", "currency ~ '^[A-Z]{3}$'")


def downgrade() -> None:
    op.drop_constraint("ck_families_currency", "families", type_="check")
    op.drop_column("families", "currency")
