"""channels II: buttons offered on text-only channels (SMS, voice)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('channel_choices',
    sa.Column('tracker_key', sa.String(length=255), nullable=False),
    sa.Column('buttons', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('tracker_key', name=op.f('pk_channel_choices'))
    )


def downgrade() -> None:
    op.drop_table('channel_choices')
