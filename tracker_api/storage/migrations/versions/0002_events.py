"""events: the archive (docs/adr/0015-event-archive.md)

Revision ID: 0002_events
Revises: 0001_accounts
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002_events"
down_revision: str | None = "0001_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sqlmodel.AutoString(length=64), nullable=False),
        sa.Column("event_id", sqlmodel.AutoString(length=128), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("account_id", "event_id", name="uq_events_account_event"),
    )
    op.create_index("ix_events_account_ts_seq", "events", ["account_id", "ts", "seq"])
    op.create_index("ix_events_ts_seq", "events", ["ts", "seq"])


def downgrade() -> None:
    op.drop_index("ix_events_ts_seq", table_name="events")
    op.drop_index("ix_events_account_ts_seq", table_name="events")
    op.drop_table("events")
