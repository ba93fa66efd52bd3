"""SQLAlchemy statements run on the database driver's own connection, for the send loop's one
statement per message: compiled once, their parameters converted by the columns' own types
(UtcDateTime, Money), then handed to sqlite3 or psycopg directly. SQLAlchemy's execution layer
costs more than SQLite itself there (about a tenth of a millisecond a statement).

The connection is in autocommit mode: one statement is its own transaction, in one round trip
and without a COMMIT of its own (on PostgreSQL a pipeline of the statement and its COMMIT cost
five times the client's CPU of the statement alone); several go in an explicit transaction.

Everywhere else the store goes through SQLAlchemy as usual."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Values = dict[str, Any] | Sequence[dict[str, Any]]  # a statement's parameters: once, or once per dict


class Compiled:
    """One statement, compiled for a dialect, with what turns Python values into the driver's."""

    def __init__(self, statement: ClauseElement, engine: Engine) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.compiled = compiled
        self.sql = str(compiled)
        self.positions = compiled.positiontup  # qmark (sqlite3): the order of the parameters; None: named
        self.convert: dict[str, Callable[[Any], Any]] = {}
        for bind, name in compiled.bind_names.items():
            processor = bind.type.bind_processor(dialect)
            if processor is not None:
                self.convert[name] = processor

    def parameters(self, values: dict[str, Any]) -> Any:
        params = dict(self.compiled.construct_params(values))
        for name, convert in self.convert.items():
            if name in params:
                params[name] = convert(params[name])
        return tuple(params[n] for n in self.positions) if self.positions is not None else params


class DriverConnection:
    """One pooled connection, used through its driver's cursor, in autocommit mode.

    `flush_on_commit=False` (PostgreSQL): a commit returns once the server has the transaction,
    without waiting for its disk (`synchronous_commit = off`): what is committed outlives the
    crash of this process, not a crash of the PostgreSQL server (its last fraction of a second of
    commits is lost). The outbox flushes (bot/outbox.py `flush_marks`)."""

    def __init__(self, engine: Engine, flush_on_commit: bool = True) -> None:
        self.engine = engine
        self.pooled = engine.raw_connection()
        self.cursor = self.pooled.driver_connection.cursor()  # type: ignore[union-attr]
        self._compiled: dict[int, Compiled] = {}
        self.settings: list[str] = []
        self._isolation: str | None = None  # sqlite3's, given back with the connection
        # The same few statements, thousands of times: prepared on the server, they are planned
        # once (planning the mark's subqueries costs 0.4 ms, running them 0.05 ms).
        self.prepare = {"prepare": True} if engine.dialect.name == "postgresql" else {}
        self.postgres = engine.dialect.name == "postgresql"
        if self.postgres and not flush_on_commit:
            self.settings.append("synchronous_commit TO off")
        for setting in self.settings:
            self.cursor.execute(f"SET {setting}")
        self.commit()
        conn: Any = self.pooled.driver_connection
        if self.postgres:
            conn.autocommit = True
        else:  # sqlite3: no implicit BEGIN
            self._isolation = conn.isolation_level
            conn.isolation_level = None

    def _get(self, statement: ClauseElement) -> Compiled:
        c = self._compiled.get(id(statement))
        if c is None:
            c = self._compiled[id(statement)] = Compiled(statement, self.engine)
        return c

    def execute(self, statement: ClauseElement, values: dict[str, Any]) -> int:
        """Run one statement, its own transaction (committed when it returns); the rows it changed."""
        with self._as_sqlalchemy_errors():
            return int(self._run(self.cursor, statement, values).rowcount)

    def transaction(self, steps: Sequence[tuple[ClauseElement, Values]]) -> list[int]:
        """Run each statement (once, or once per dict of values) in one transaction, and commit;
        returns the rows each changed."""
        conn: Any = self.pooled.driver_connection
        with self._as_sqlalchemy_errors():
            if self.postgres:
                with conn.transaction():
                    return [int(self._run(self.cursor, statement, values).rowcount) for statement, values in steps]
            self.cursor.execute("BEGIN")
            try:
                counts = [int(self._run(self.cursor, statement, values).rowcount) for statement, values in steps]
            except BaseException:
                with contextlib.suppress(Exception):  # a lost connection cannot roll back: the server did
                    self.cursor.execute("ROLLBACK")
                raise
            self.cursor.execute("COMMIT")
            return counts

    @contextlib.contextmanager
    def _as_sqlalchemy_errors(self) -> Iterator[None]:
        """The driver's own error for a database gone, as SQLAlchemy's everywhere else: the daemon's
        loops wait for the database on TRANSIENT_DB (bot/store.py), they would end on this one."""
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            yield
        except (dbapi.OperationalError, dbapi.InterfaceError) as e:
            raise sa.exc.OperationalError(None, None, e) from e

    def _run(self, cursor: Any, statement: ClauseElement, values: Values) -> Any:
        c = self._get(statement)
        if isinstance(values, dict):
            cursor.execute(c.sql, c.parameters(values), **self.prepare)
        elif len(values) == 1:
            cursor.execute(c.sql, c.parameters(values[0]), **self.prepare)
        else:
            cursor.executemany(c.sql, [c.parameters(v) for v in values])
        return cursor

    def commit(self) -> None:
        self.pooled.driver_connection.commit()  # type: ignore[union-attr]

    def rollback(self) -> None:
        self.pooled.driver_connection.rollback()  # type: ignore[union-attr]

    def close(self) -> None:
        """Back to the pool, as it came (the pool's next user gets the server's setting); a
        connection the server dropped is discarded instead."""
        conn: Any = self.pooled.driver_connection
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            for setting in self.settings:
                self.cursor.execute(f"RESET {setting.split()[0]}")
            if self.postgres:
                conn.autocommit = False
            else:
                conn.isolation_level = self._isolation
            self.cursor.close()
        except (dbapi.OperationalError, dbapi.InterfaceError):
            self.pooled.invalidate()
        finally:
            self.pooled.close()
