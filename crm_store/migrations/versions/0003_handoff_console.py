"""handoff queue and console: staff sessions, notes, queue order, conversation outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 16:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('staff_sessions',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('staff_id', BigId, nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['staff_id'], ['staff_users.id'], name=op.f('fk_staff_sessions_staff_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_sessions')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_staff_sessions_token_hash'))
    )
    with op.batch_alter_table('staff_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_sessions_staff_id'), ['staff_id'], unique=False)

    op.create_table('handoff_notes',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('handoff_id', BigId, nullable=False),
    sa.Column('staff_id', BigId, nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['handoff_id'], ['handoffs.id'], name=op.f('fk_handoff_notes_handoff_id_handoffs')),
    sa.ForeignKeyConstraint(['staff_id'], ['staff_users.id'], name=op.f('fk_handoff_notes_staff_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handoff_notes'))
    )
    with op.batch_alter_table('handoff_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_handoff_notes_handoff_id'), ['handoff_id'], unique=False)

    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('told_position', sa.Integer(), nullable=True))
    op.execute("UPDATE handoffs SET queue_at = created_at WHERE queue_at IS NULL")

    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_login_at', sa.DateTime(), nullable=True))

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tracker_key', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('conversation_id', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('handoff_id', BigId, nullable=True))
        batch_op.add_column(sa.Column('payload', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_outbox_conversation_id_conversations'), 'conversations', ['conversation_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_outbox_handoff_id_handoffs'), 'handoffs', ['handoff_id'], ['id'])
        batch_op.create_index('ix_outbox_tracker_key_status', ['tracker_key', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_tracker_key_status')
        batch_op.drop_constraint(batch_op.f('fk_outbox_handoff_id_handoffs'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_outbox_conversation_id_conversations'), type_='foreignkey')
        batch_op.drop_column('last_error')
        batch_op.drop_column('attempts')
        batch_op.drop_column('payload')
        batch_op.drop_column('handoff_id')
        batch_op.drop_column('conversation_id')
        batch_op.drop_column('tracker_key')
    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        batch_op.drop_column('last_login_at')
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.drop_column('told_position')
        batch_op.drop_column('queue_at')
    with op.batch_alter_table('handoff_notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_handoff_notes_handoff_id'))
    op.drop_table('handoff_notes')
    with op.batch_alter_table('staff_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_sessions_staff_id'))
    op.drop_table('staff_sessions')
