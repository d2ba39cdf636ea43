"""Trigram indexes for `search`, where the server ships pg_trgm.

`persons(search:)` and `gifts(search:)` are `name ILIKE '%…%'`: without an index every
search reads all of a family's rows. A trigram GIN index serves such a pattern. pg_trgm
is a contrib extension: the system PostgreSQL has it, the embedded one (the pgserver
wheel) does not, so the extension and the indexes are created only where it is
available; search gives the same results either way, only slower without them.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table): the searched column of each is `name`.
TRGM_INDEXES = (("ix_persons_name_trgm", "persons"), ("ix_gifts_name_trgm", "gifts"))


def _create_trgm_indexes() -> None:
    bind = op.get_bind()
    available = bind.scalar(sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm')"))
    if not available:
        return
    try:
        # A savepoint: without the privilege to create it, the rest still migrates.
        with bind.begin_nested():
            op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError:
        return
    for name, table in TRGM_INDEXES:
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} "
                   "USING gin (name gin_trgm_ops)")


def upgrade() -> None:
    _create_trgm_indexes()


def downgrade() -> None:
    for name, _ in TRGM_INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
