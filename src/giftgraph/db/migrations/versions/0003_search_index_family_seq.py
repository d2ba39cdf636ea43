"""Event `seq` per family; trigram indexes for `search`, where the server ships pg_trgm.

`events.seq` was one identity for all families, so a family's seqs had gaps that measured
the other families' writes. It becomes a per-family counter (1, 2, 3, … within each
family; `events.record` numbers each transaction's events after the family's last one,
under the family's event lock), backfilled here in the old order. The old global number
stays as the primary key `id` (nothing outside the table uses it).

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


def _seq_per_family() -> None:
    op.alter_column("events", "seq", new_column_name="id")  # keeps its identity and the PK
    op.add_column("events", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute("""
        UPDATE events e SET seq = n.seq
        FROM (SELECT id, row_number() OVER (PARTITION BY family_id ORDER BY id) AS seq
              FROM events) n
        WHERE e.id = n.id
    """)
    op.alter_column("events", "seq", nullable=False)
    op.create_unique_constraint("uq_events_family_seq", "events", ["family_id", "seq"])
    op.drop_index("ix_events_family_topic_seq", table_name="events")  # it followed the rename
    op.create_index("ix_events_family_topic_seq", "events", ["family_id", "topic", "seq"])


def upgrade() -> None:
    _seq_per_family()
    _create_trgm_indexes()


def downgrade() -> None:
    for name, _ in TRGM_INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    op.drop_index("ix_events_family_topic_seq", table_name="events")
    op.drop_constraint("uq_events_family_seq", "events", type_="unique")
    op.drop_column("events", "seq")
    op.alter_column("events", "id", new_column_name="seq")
    op.create_index("ix_events_family_topic_seq", "events", ["family_id", "topic", "seq"])
