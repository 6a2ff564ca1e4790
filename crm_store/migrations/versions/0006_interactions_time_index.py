"""interactions by time: an index for counts over a time window (/metrics, reports)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:30:00
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.create_index('ix_interactions_occurred', ['occurred_at', 'channel'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_index('ix_interactions_occurred')
