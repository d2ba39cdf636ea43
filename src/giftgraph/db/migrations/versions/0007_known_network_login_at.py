"""known_networks.login_at: when the user last logged in from the network (an account
with a login in the last hour queues behind idle ones in the hashing queue's known lane:
giftgraph.admission.throttle), kept here so that restarts and other processes know it.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("known_networks",
                  sa.Column("login_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("known_networks", "login_at")
