"""Alembic environment: the engine comes from Relance's config (bot/store.py), never from an ini."""

from alembic import context
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import bot.models  # noqa: F401 - registers the tables on the metadata

engine = context.config.attributes["engine"]
assert isinstance(engine, Engine)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
