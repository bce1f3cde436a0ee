"""Alembic's environment: the SQLModel metadata, and the database of the settings, or the
connection ``db.migrate`` hands over (``config.attributes["connection"]``)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from tracker_api.config import get_settings
from tracker_api.storage import models  # noqa: F401 - registers the tables on the metadata
from tracker_api.storage.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or get_settings().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # SQLite alters tables by copying them ("batch" mode); the same scripts then run
        # on both databases.
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or get_settings().database_url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection, target_metadata=target_metadata, render_as_batch=True
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
