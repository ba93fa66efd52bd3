"""Engines, migrations and sessions. SQLite (WAL, foreign keys on) by default, PostgreSQL by URL.

No engine is created at import time: callers build one from the config and pass it down."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from bot.errors import StoreError
from bot.models import Event, InboundRaw, table

log = logging.getLogger("relance")

# `Engine` is re-exported so that the UI names the store's handle without importing SQLAlchemy.
__all__ = ["TRANSIENT_DB", "Engine", "db_text", "ensure_ready", "inbound_raw", "make_engine", "migrate",
           "record_event", "record_events", "session", "unreachable"]

# The database going away (a PostgreSQL restart, SQLite locked past its timeout): the long-running
# loops retry these with backoff rather than stop.
TRANSIENT_DB = (sa.exc.OperationalError, sa.exc.InterfaceError)


def unreachable(e: BaseException) -> str:
    """What a TRANSIENT_DB error says, on one line, without SQLAlchemy's statement and link: for a
    log line that says what the daemon waits for."""
    orig = getattr(e, "orig", None) or e
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def make_engine(url: str) -> Engine:
    """An engine for `url`; on SQLite, each connection gets WAL, foreign keys and a busy timeout."""
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 30})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA synchronous=NORMAL")  # durable across a crash of the process
                cur.close()

            return engine
        # Each connection names its instance (host:pid), as `pg_stat_activity` and `pg_locks` show it:
        # which instance holds a watched folder, or a lock, is one query away.
        me = f"relance {socket.gethostname()}:{os.getpid()}"
        name = {} if "application_name" in url else {"application_name": me}
        return sa.create_engine(url, pool_pre_ping=True, connect_args=name)
    except (sa.exc.ArgumentError, ImportError) as e:
        raise StoreError(f"database.url = {url!r}: {e}") from e


BULK = 1000  # rows written at once from which PostgreSQL's statistics are refreshed (`refresh_statistics`)


def refresh_statistics(engine: Engine, written: int, *tables: str) -> None:
    """After `written` rows went into `tables` at once (an import, a tick's queue), PostgreSQL's
    planner statistics are refreshed (ANALYZE, a sample: tens of milliseconds). Autovacuum would do
    it within a minute, but the next statements come sooner: with a table still counted empty, the
    planner hash-joins the whole invoice table for each chunk of a batch (24 ms a query instead of
    0.3 on 100,000 invoices). SQLite's planner works without statistics: nothing to do there.

    What was written is committed: a refresh that fails (a lock not granted within 5 s) is said in
    one line and changes nothing else. A role that does not own the tables gets a warning from the
    server and no refresh (PostgreSQL 16 and before)."""
    if written < BULK or engine.dialect.name != "postgresql":
        return
    try:
        with engine.connect() as c:
            c.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            c.exec_driver_sql(f"ANALYZE {', '.join(tables)}")  # the tables are the callers' constants
            c.commit()
    except sa.exc.DBAPIError as e:
        log.warning("planner statistics not refreshed after %d rows: %s", written, unreachable(e))


def _alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(resources.files("bot") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> str:
    """Create or upgrade the schema to the latest revision (idempotent). Returns the revision."""
    cfg = _alembic_config(engine)
    try:
        command.upgrade(cfg, "head")
    except sa.exc.OperationalError as e:
        raise StoreError(f"cannot migrate the database: {e.orig}") from e
    return ScriptDirectory.from_config(cfg).get_current_head() or ""


def ensure_ready(engine: Engine) -> None:
    """Raise a StoreError saying what to do when the database is unreachable or not migrated."""
    cfg = _alembic_config(engine)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except sa.exc.OperationalError as e:
        raise StoreError(f"cannot open the database {engine.url!r}: {e.orig}") from e
    if current is None:
        raise StoreError(f"the database {engine.url!r} is not initialised: run `relance init`")
    if current != head:
        raise StoreError(f"the database is at revision {current}, this version needs {head}: "
                         "run `relance init` to migrate it")


@contextmanager
def session(engine: Engine) -> Iterator[Connection]:
    """One transaction on one connection (Core, no ORM unit of work): committed on success,
    rolled back on any exception."""
    with engine.begin() as conn:
        yield conn


def record_event(s: Connection, *, invoice_id: int | None, kind: str, at: datetime, reason: str = "",
                 actor: str = "relance", data: dict[str, Any] | None = None,
                 outbound_id: int | None = None, inbound_id: int | None = None) -> None:
    """Append one event row (in the caller's transaction)."""
    record_events(s, [{"invoice_id": invoice_id, "kind": kind, "at": at, "reason": reason, "actor": actor,
                       "data": data, "outbound_id": outbound_id, "inbound_id": inbound_id}])


def record_events(s: Connection, events: list[dict[str, Any]]) -> None:
    """Append many events in one statement; each dict has the keys of `record_event`."""
    if not events:
        return
    rows = [{"invoice_id": None, "reason": "", "actor": "relance", "outbound_id": None, "inbound_id": None,
             **e, "data": json.dumps(e["data"], ensure_ascii=False, default=str) if e.get("data") else "{}"}
            for e in events]
    s.execute(sa.insert(table(Event)), rows)


def db_text(text: str) -> str:
    """Text a database accepts: no NUL (PostgreSQL refuses it), no lone surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def inbound_raw(conn: Connection, ids: list[int]) -> dict[int, bytes]:
    """The bytes of the received messages `ids` (those that exist), as the server gave them."""
    raw_t = table(InboundRaw)
    return {i: bytes(r) for i, r in conn.execute(sa.select(raw_t.c.inbound_id, raw_t.c.raw)
                                                  .where(raw_t.c.inbound_id.in_(ids)))}
