"""message ledger: outcomes committed per queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 22:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_ledger",
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("ended", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("queue"),
    )


def downgrade() -> None:
    op.drop_table("message_ledger")
