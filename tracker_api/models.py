"""Database tables (SQLModel): the same models run on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class Account(SQLModel, table=True):
    __tablename__ = "accounts"

    account_id: str = Field(primary_key=True, max_length=64)
    account_name: str = Field(max_length=200)
    is_active: bool = Field(default=True)
