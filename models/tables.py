"""The PostgreSQL tables (SQLAlchemy 2.x typed declarative), apart from the pure domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Instant = DateTime(timezone=True)


class Base(DeclarativeBase):
    pass


class OrderRow(Base):
    """One row per order: the current document plus the columns that are queried.

    Bounded in size: the history lives in `order_events`, never in this row.
    """

    __tablename__ = "orders"

    order_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    completeness: Mapped[int] = mapped_column(Integer, nullable=False)
    event_count: Mapped[int] = mapped_column(Integer, nullable=False)
    decision_seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_event_at: Mapped[datetime | None] = mapped_column(Instant)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(Instant, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(Instant, nullable=False)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (Index("ix_orders_status_updated_at", "status", "updated_at"),)


class EventRow(Base):
    """The event log: every distinct event once, as received; `deliveries` counts re-sends."""

    __tablename__ = "order_events"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(128), nullable=False)
    event_type: Mapped[str] = mapped_column(String(32), nullable=False)
    event_at: Mapped[datetime] = mapped_column(Instant, nullable=False)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    deliveries: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    received_at: Mapped[datetime] = mapped_column(Instant, nullable=False)
    applied_at: Mapped[datetime] = mapped_column(Instant, nullable=False)

    __table_args__ = (Index("ix_order_events_order_id_event_at", "order_id", "event_at"),)


class OutboxRow(Base):
    """A decision to publish, written in the same transaction as the state change."""

    __tablename__ = "decision_outbox"

    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(128), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(64))
    supersedes: Mapped[str | None] = mapped_column(String(36))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(Instant, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(Instant)

    __table_args__ = (
        UniqueConstraint("order_id", "seq", name="uq_decision_outbox_order_id_seq"),
        Index(
            "ix_decision_outbox_unpublished",
            "created_at",
            postgresql_where=text("published_at IS NULL"),
        ),
    )


class DecisionDeliveryRow(Base):
    """A decision received by the default decision tasks (idempotent by decisionId)."""

    __tablename__ = "decision_deliveries"

    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    deliveries: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    received_at: Mapped[datetime] = mapped_column(Instant, nullable=False)


class DeadLetterRow(Base):
    """A message that could not be applied, with why; replayable."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(Instant, nullable=False)
    reason: Mapped[str] = mapped_column(String(64), nullable=False)
    error: Mapped[str] = mapped_column(Text, nullable=False)
    raw: Mapped[str] = mapped_column(Text, nullable=False)
    task_name: Mapped[str | None] = mapped_column(String(200))
    order_id: Mapped[str | None] = mapped_column(String(128))
    event_id: Mapped[str | None] = mapped_column(String(128))
    replayed_at: Mapped[datetime | None] = mapped_column(Instant)

    __table_args__ = (
        Index("ix_dead_letters_reason_received_at", "reason", "received_at"),
        Index("ix_dead_letters_order_id", "order_id"),
    )


class LedgerRow(Base):
    """Outcomes committed per queue: the database side of the message accounting.

    Incremented in the transaction that commits a message's outcome (applied, duplicate, dead
    letter, decision delivery); the broker side counts messages taken (worker/transport.py).
    """

    __tablename__ = "message_ledger"

    queue: Mapped[str] = mapped_column(String(200), primary_key=True)
    ended: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
