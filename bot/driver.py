"""SQLAlchemy statements run on the database driver's own connection, for the send loop's one
transaction per message: compiled once, their parameters converted by the columns' own types
(UtcDateTime, Money), then handed to sqlite3 or psycopg directly. SQLAlchemy's execution layer
costs more than SQLite itself there (about a tenth of a millisecond a statement).

Everywhere else the store goes through SQLAlchemy as usual."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


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
    """One pooled connection, used through its driver's cursor. Transactions are the driver's:
    begun by the first statement, ended by `commit` or `rollback`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pooled = engine.raw_connection()
        self.cursor = self.pooled.driver_connection.cursor()  # type: ignore[union-attr]
        self._compiled: dict[int, Compiled] = {}

    def _get(self, statement: ClauseElement) -> Compiled:
        c = self._compiled.get(id(statement))
        if c is None:
            c = self._compiled[id(statement)] = Compiled(statement, self.engine)
        return c

    def execute(self, statement: ClauseElement, values: dict[str, Any] | Sequence[dict[str, Any]]) -> int:
        """Run `statement` once, or once per dict of `values`; returns the rows it changed."""
        c = self._get(statement)
        if isinstance(values, dict):
            self.cursor.execute(c.sql, c.parameters(values))
        else:
            self.cursor.executemany(c.sql, [c.parameters(v) for v in values])
        return int(self.cursor.rowcount)

    def commit(self) -> None:
        self.pooled.driver_connection.commit()  # type: ignore[union-attr]

    def rollback(self) -> None:
        self.pooled.driver_connection.rollback()  # type: ignore[union-attr]

    def close(self) -> None:
        self.cursor.close()
        self.pooled.close()
