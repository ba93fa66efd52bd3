"""Alembic environment: the engine comes from Relance's config (bot/store.py), never from an ini.

SQLite alters a table by copying it (batch mode), which drops the old one: with foreign keys on
(bot/store.py turns them on for every connection) that fails as soon as another table refers to
rows of it. So they are off while migrating, checked once the schema is in place, and on again."""

from alembic import context
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import bot.models  # noqa: F401 - registers the tables on the metadata

engine = context.config.attributes["engine"]
assert isinstance(engine, Engine)

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:  # outside any transaction, where SQLite takes it into account
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=sqlite,  # SQLite alters tables by copy
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"the migrated schema breaks {len(broken)} foreign key(s): {broken[:3]}")
    connection.commit()
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()
