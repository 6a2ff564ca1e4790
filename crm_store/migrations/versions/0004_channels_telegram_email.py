"""channels I: inbound receipts, e-mail threads, outbox retry time

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 20:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('channel_receipts',
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('channel', 'external_id', name=op.f('pk_channel_receipts'))
    )
    with op.batch_alter_table('channel_receipts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_channel_receipts_received_at'), ['received_at'], unique=False)

    op.create_table('email_messages',
    sa.Column('message_id', sa.String(length=255), nullable=False),
    sa.Column('thread_id', sa.String(length=32), nullable=False),
    sa.Column('address', sa.String(length=254), nullable=False),
    sa.Column('direction', sa.String(length=3), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=True),
    sa.Column('buttons', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_email_messages'))
    )
    with op.batch_alter_table('email_messages', schema=None) as batch_op:
        batch_op.create_index('ix_email_messages_thread', ['address', 'thread_id'], unique=False)

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_attempt_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('next_attempt_at')
    with op.batch_alter_table('email_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_email_messages_thread')
    op.drop_table('email_messages')
    with op.batch_alter_table('channel_receipts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_channel_receipts_received_at'))
    op.drop_table('channel_receipts')
