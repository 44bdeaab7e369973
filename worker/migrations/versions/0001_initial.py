"""create orders, event log, outbox, deliveries, dead letters

Revision ID: 0001
Revises:
Create Date: 2026-11-27 15:44:22.288548
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("task_name", sa.String(length=200), nullable=True),
        sa.Column("order_id", sa.String(length=128), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_dead_letters_order_id", "dead_letters", ["order_id"], unique=False)
    op.create_index(
        "ix_dead_letters_reason_received_at",
        "dead_letters",
        ["reason", "received_at"],
        unique=False,
    )
    op.create_table(
        "decision_deliveries",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("deliveries", sa.Integer(), server_default="1", nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    op.create_index(
        op.f("ix_decision_deliveries_order_id"), "decision_deliveries", ["order_id"], unique=False
    )
    op.create_table(
        "decision_outbox",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("supersedes", sa.String(length=36), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("decision_id"),
        sa.UniqueConstraint("order_id", "seq", name="uq_decision_outbox_order_id_seq"),
    )
    op.create_index(
        "ix_decision_outbox_unpublished",
        "decision_outbox",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "order_events",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("deliveries", sa.Integer(), server_default="1", nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        "ix_order_events_order_id_event_at", "order_events", ["order_id", "event_at"], unique=False
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("completeness", sa.Integer(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("decision_seq", sa.Integer(), nullable=False),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id"),
    )
    op.create_index("ix_orders_status_updated_at", "orders", ["status", "updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_orders_status_updated_at", table_name="orders")
    op.drop_table("orders")
    op.drop_index("ix_order_events_order_id_event_at", table_name="order_events")
    op.drop_table("order_events")
    op.drop_index(
        "ix_decision_outbox_unpublished",
        table_name="decision_outbox",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("decision_outbox")
    op.drop_index(op.f("ix_decision_deliveries_order_id"), table_name="decision_deliveries")
    op.drop_table("decision_deliveries")
    op.drop_index("ix_dead_letters_reason_received_at", table_name="dead_letters")
    op.drop_index("ix_dead_letters_order_id", table_name="dead_letters")
    op.drop_table("dead_letters")
