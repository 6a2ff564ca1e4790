"""manager review: scorecards, report and transcript-search indexes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:00:00

On PostgreSQL also a full-text GIN index over the message text (the ``simple``
configuration: customers write in several languages, so no stemming); SQLite
searches with a plain case-insensitive match instead.
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

FTS_INDEX = 'ix_interactions_text_fts'


def upgrade() -> None:
    op.create_table('scorecards',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('conversation_id', sa.String(length=128), nullable=False),
    sa.Column('reviewer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('scores', sa.JSON(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_scorecards_conversation_id_conversations')),
    sa.ForeignKeyConstraint(['reviewer_id'], ['staff_users.id'], name=op.f('fk_scorecards_reviewer_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scorecards')),
    sa.UniqueConstraint('conversation_id', 'reviewer_id', name='uq_scorecard_reviewer')
    )
    with op.batch_alter_table('scorecards', schema=None) as batch_op:
        batch_op.create_index('ix_scorecards_created', ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_scorecards_conversation_id'), ['conversation_id'], unique=False)
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.create_index('ix_conversations_customer_started', ['customer_id', 'started_at'], unique=False)
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.create_index('ix_handoffs_conversation', ['conversation_id'], unique=False)
        batch_op.create_index('ix_handoffs_created', ['created_at'], unique=False)
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.create_index('ix_interactions_intent', ['intent', 'conversation_id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(
            f"CREATE INDEX {FTS_INDEX} ON interactions "
            "USING gin (to_tsvector('simple', coalesce(text, '')))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(f"DROP INDEX IF EXISTS {FTS_INDEX}")
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_index('ix_interactions_intent')
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.drop_index('ix_handoffs_created')
        batch_op.drop_index('ix_handoffs_conversation')
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_index('ix_conversations_customer_started')
    with op.batch_alter_table('scorecards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scorecards_conversation_id'))
        batch_op.drop_index('ix_scorecards_created')
    op.drop_table('scorecards')
