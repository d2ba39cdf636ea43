"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-21 13:01:47.087181
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('families',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('gifts',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=True),
    sa.Column('store', sa.String(length=255), nullable=True),
    sa.Column('price', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('image_url', sa.String(length=2048), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('family_id', sa.UUID(), nullable=False),
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name='ck_gifts_currency'),
    sa.CheckConstraint('price IS NULL OR price >= 0', name='ck_gifts_price'),
    sa.ForeignKeyConstraint(['family_id'], ['families.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_gifts_family_created', 'gifts', ['family_id', 'created_at', 'id'], unique=False)
    op.create_index(op.f('ix_gifts_family_id'), 'gifts', ['family_id'], unique=False)
    op.create_table('occasions',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.Enum('BIRTHDAY', 'HOLIDAY', 'ANNIVERSARY', 'OTHER', name='occasion_kind'), nullable=False),
    sa.Column('date', sa.Date(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('budget', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('family_id', sa.UUID(), nullable=False),
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('budget IS NULL OR budget >= 0', name='ck_occasions_budget'),
    sa.ForeignKeyConstraint(['family_id'], ['families.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_occasions_family_date', 'occasions', ['family_id', 'date', 'id'], unique=False)
    op.create_index(op.f('ix_occasions_family_id'), 'occasions', ['family_id'], unique=False)
    op.create_index('ix_occasions_family_kind_date', 'occasions', ['family_id', 'kind', 'date'], unique=False)
    op.create_table('persons',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('relationship', sa.String(length=100), nullable=True),
    sa.Column('birthday', sa.Date(), nullable=True),
    sa.Column('interests', postgresql.ARRAY(sa.String(length=100)), nullable=False),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('family_id', sa.UUID(), nullable=False),
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['family_id'], ['families.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_persons_family_id'), 'persons', ['family_id'], unique=False)
    op.create_index('ix_persons_family_name', 'persons', ['family_id', 'name', 'id'], unique=False)
    op.create_table('users',
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('display_name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.Enum('ADMIN', 'MEMBER', name='user_role'), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('family_id', sa.UUID(), nullable=False),
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['family_id'], ['families.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_users_family_id'), 'users', ['family_id'], unique=False)
    op.create_index('uq_users_email_lower', 'users', [sa.literal_column('lower(email)')], unique=True)
    op.create_table('comments',
    sa.Column('target', sa.Enum('LIST', 'LIST_ITEM', 'GIFT', 'PERSON', 'OCCASION', name='comment_target'), nullable=False),
    sa.Column('target_id', sa.UUID(), nullable=False),
    sa.Column('author_id', sa.UUID(), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('family_id', sa.UUID(), nullable=False),
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('char_length(body) BETWEEN 1 AND 2000', name='ck_comments_body_length'),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['family_id'], ['families.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_comments_author_id'), 'comments', ['author_id'], unique=False)
    op.create_index(op.f('ix_comments_family_id'), 'comments', ['family_id'], unique=False)
    op.create_index('ix_comments_target', 'comments', ['family_id', 'target', 'target_id', 'created_at', 'id'], unique=False)
    op.create_table('events',
    sa.Column('seq', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('family_id', sa.UUID(), nullable=False),
    sa.Column('topic', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.Enum('ADDED', 'UPDATED', 'DELETED', 'STATUS_CHANGED', 'ASSIGNED', 'COMMENT_ADDED', name='event_kind'), nullable=False),
    sa.Column('entity_type', sa.String(length=50), nullable=False),
    sa.Column('entity_id', sa.UUID(), nullable=False),
    sa.Column('actor_id', sa.UUID(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['family_id'], ['families.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_index(op.f('ix_events_actor_id'), 'events', ['actor_id'], unique=False)
    op.create_index('ix_events_family_topic_seq', 'events', ['family_id', 'topic', 'seq'], unique=False)
    op.create_table('gift_lists',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.Enum('WISHLIST', 'IDEAS', 'GIFT_PLAN', name='list_kind'), nullable=False),
    sa.Column('person_id', sa.UUID(), nullable=True),
    sa.Column('occasion_id', sa.UUID(), nullable=True),
    sa.Column('owner_id', sa.UUID(), nullable=False),
    sa.Column('budget', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('family_id', sa.UUID(), nullable=False),
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('budget IS NULL OR budget >= 0', name='ck_gift_lists_budget'),
    sa.ForeignKeyConstraint(['family_id'], ['families.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['occasion_id'], ['occasions.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_gift_lists_family_created', 'gift_lists', ['family_id', 'created_at', 'id'], unique=False)
    op.create_index(op.f('ix_gift_lists_family_id'), 'gift_lists', ['family_id'], unique=False)
    op.create_index('ix_gift_lists_family_kind', 'gift_lists', ['family_id', 'kind'], unique=False)
    op.create_index(op.f('ix_gift_lists_occasion_id'), 'gift_lists', ['occasion_id'], unique=False)
    op.create_index(op.f('ix_gift_lists_owner_id'), 'gift_lists', ['owner_id'], unique=False)
    op.create_index(op.f('ix_gift_lists_person_id'), 'gift_lists', ['person_id'], unique=False)
    op.create_table('refresh_tokens',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('chain_id', sa.UUID(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index(op.f('ix_refresh_tokens_chain_id'), 'refresh_tokens', ['chain_id'], unique=False)
    op.create_index(op.f('ix_refresh_tokens_user_id'), 'refresh_tokens', ['user_id'], unique=False)
    op.create_table('list_items',
    sa.Column('list_id', sa.UUID(), nullable=False),
    sa.Column('gift_id', sa.UUID(), nullable=False),
    sa.Column('status', sa.Enum('IDEA', 'SELECTED', 'PURCHASED', 'RECEIVED', name='item_status'), nullable=False),
    sa.Column('assignee_id', sa.UUID(), nullable=True),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('family_id', sa.UUID(), nullable=False),
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('quantity >= 1', name='ck_list_items_quantity'),
    sa.ForeignKeyConstraint(['assignee_id'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['family_id'], ['families.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['gift_id'], ['gifts.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['list_id'], ['gift_lists.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_list_items_assignee_id'), 'list_items', ['assignee_id'], unique=False)
    op.create_index(op.f('ix_list_items_family_id'), 'list_items', ['family_id'], unique=False)
    op.create_index('ix_list_items_family_status', 'list_items', ['family_id', 'status', 'updated_at'], unique=False)
    op.create_index(op.f('ix_list_items_gift_id'), 'list_items', ['gift_id'], unique=False)
    op.create_index('ix_list_items_list_created', 'list_items', ['list_id', 'created_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_list_items_list_created', table_name='list_items')
    op.drop_index(op.f('ix_list_items_gift_id'), table_name='list_items')
    op.drop_index('ix_list_items_family_status', table_name='list_items')
    op.drop_index(op.f('ix_list_items_family_id'), table_name='list_items')
    op.drop_index(op.f('ix_list_items_assignee_id'), table_name='list_items')
    op.drop_table('list_items')
    op.drop_index(op.f('ix_refresh_tokens_user_id'), table_name='refresh_tokens')
    op.drop_index(op.f('ix_refresh_tokens_chain_id'), table_name='refresh_tokens')
    op.drop_table('refresh_tokens')
    op.drop_index(op.f('ix_gift_lists_person_id'), table_name='gift_lists')
    op.drop_index(op.f('ix_gift_lists_owner_id'), table_name='gift_lists')
    op.drop_index(op.f('ix_gift_lists_occasion_id'), table_name='gift_lists')
    op.drop_index('ix_gift_lists_family_kind', table_name='gift_lists')
    op.drop_index(op.f('ix_gift_lists_family_id'), table_name='gift_lists')
    op.drop_index('ix_gift_lists_family_created', table_name='gift_lists')
    op.drop_table('gift_lists')
    op.drop_index('ix_events_family_topic_seq', table_name='events')
    op.drop_index(op.f('ix_events_actor_id'), table_name='events')
    op.drop_table('events')
    op.drop_index('ix_comments_target', table_name='comments')
    op.drop_index(op.f('ix_comments_family_id'), table_name='comments')
    op.drop_index(op.f('ix_comments_author_id'), table_name='comments')
    op.drop_table('comments')
    op.drop_index('uq_users_email_lower', table_name='users')
    op.drop_index(op.f('ix_users_family_id'), table_name='users')
    op.drop_table('users')
    op.drop_index('ix_persons_family_name', table_name='persons')
    op.drop_index(op.f('ix_persons_family_id'), table_name='persons')
    op.drop_table('persons')
    op.drop_index('ix_occasions_family_kind_date', table_name='occasions')
    op.drop_index(op.f('ix_occasions_family_id'), table_name='occasions')
    op.drop_index('ix_occasions_family_date', table_name='occasions')
    op.drop_table('occasions')
    op.drop_index(op.f('ix_gifts_family_id'), table_name='gifts')
    op.drop_index('ix_gifts_family_created', table_name='gifts')
    op.drop_table('gifts')
    op.drop_table('families')
    for enum_name in ("event_kind", "comment_target", "item_status", "list_kind",
                      "occasion_kind", "user_role"):
        op.execute(f"DROP TYPE IF EXISTS {enum_name}")
