"""archive_watermarks: how far the archive is complete (docs/adr/0018-bounded-history.md)

Revision ID: 0003_archive_watermarks
Revises: 0002_events
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003_archive_watermarks"
down_revision: str | None = "0002_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "archive_watermarks",
        sa.Column("session", sqlmodel.AutoString(length=128), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("session"),
    )


def downgrade() -> None:
    op.drop_table("archive_watermarks")
