"""persisted_documents: APQ registrations, shared by every instance (giftgraph.persisted).

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "persisted_documents",
        sa.Column("hash", sa.String(length=64), primary_key=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("now()")),
        sa.CheckConstraint("hash ~ '^[0-9a-f]{64}$'", name="ck_persisted_documents_hash"),
    )


def downgrade() -> None:
    op.drop_table("persisted_documents")
