"""Ledger import: every bad row named as FILE:LINE: column: message, nothing imported; upserts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import ledger, store
from bot.errors import ImportFileError
from bot.models import Event, Invoice, table
from tests.servers import fresh_database

HEADER = "number,client,email,amount,currency,issue_date,due_date,language,paid,pdf,client_kind\n"
GOOD = "F-1,Société Exemple,compta@exemple.example,1500.00,EUR,2027-03-01,2027-03-31,fr,,,business\n"
NOW = datetime(2027, 4, 1, 10, tzinfo=UTC)


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "ledger.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(("row", "error"), [
    ("F-2,X,x@x.example,abc,EUR,2027-03-01,2027-03-31,,,,", ":3: amount: 'abc': expected an amount"),
    ("F-2,X,x@x.example,-5.00,EUR,2027-03-01,2027-03-31,,,,", ":3: amount: '-5.00'"),
    ("F-2,X,x@x.example,0,EUR,2027-03-01,2027-03-31,,,,", ":3: amount: '0': must be greater than zero"),
    ("F-2,X,x@x.example,12.345,EUR,2027-03-01,2027-03-31,,,,", ":3: amount: '12.345'"),
    ("F-2,X,x@x.example,10,EUR,2027-02-30,2027-03-31,,,,", ":3: issue_date: '2027-02-30': expected a date"),
    ("F-2,X,x@x.example,10,EUR,2027-03-01,31-03-2027,,,,", ":3: due_date: '31-03-2027'"),
    ("F-2,X,x@x.example,10,EUR,2027-03-10,2027-03-01,,,,", ":3: due_date: '2027-03-01': before the issue date"),
    ("F-2,X,not-an-email,10,EUR,2027-03-01,2027-03-31,,,,", ":3: email: 'not-an-email': not a valid email"),
    ("F-2,X,x@x.example,10,EURO,2027-03-01,2027-03-31,,,,", ":3: currency: 'EURO'"),
    ("F-2,X,x@x.example,10,EUR,2027-03-01,2027-03-31,de,,,", ":3: language: 'de': expected fr or en"),
    ("F-2,X,x@x.example,10,EUR,2027-03-01,2027-03-31,,20,,", ":3: paid: '20': more than the amount"),
    ("F-2,X,x@x.example,10,EUR,2027-03-01,2027-03-31,,,missing.pdf,", ":3: pdf: 'missing.pdf': no such file"),
    ("F-2,X,x@x.example,10,EUR,2027-03-01,2027-03-31,,,,person", ":3: client_kind: 'person'"),
    (",X,x@x.example,10,EUR,2027-03-01,2027-03-31,,,,", ":3: number: empty (required)"),
    ("F-1,Other,o@x.example,99.00,EUR,2027-03-01,2027-03-31,,,,", ":3: number: F-1 already on line 2"),
])
def test_bad_rows_are_named_and_nothing_is_imported(tmp_path: Path, engine: Engine, row: str, error: str) -> None:
    path = write(tmp_path, GOOD + row + "\n")
    with pytest.raises(ImportFileError) as e:
        ledger.read(path, "fr")
    assert any(line.startswith(str(path)) and error in line for line in e.value.errors), e.value.errors
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(table(Invoice))).scalar_one() == 0


def test_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path, "F-1,X,x@x.example,10,2027-03-01,2027-03-31\n",
                 header="number,client,email,amount,issue_date,due_date\n")
    with pytest.raises(ImportFileError) as e:
        ledger.read(path, "fr")
    assert e.value.errors == [f"{path}:1: currency: missing required column"]


def test_every_bad_row_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("1500.00", "x") + GOOD.replace("F-1", "F-2").replace("2027-03-01", "z"))
    with pytest.raises(ImportFileError) as e:
        ledger.read(path, "fr")
    assert [err.split(": ")[0] for err in e.value.errors] == [f"{path}:2", f"{path}:3"]


@pytest.mark.parametrize(("text", "value"), [("1234.56", "1234.56"), ("1234,56", "1234.56"),
                                             ("1 234,56", "1234.56"), ("1\u202f234,5", "1234.50"), ("7", "7.00")])
def test_amount_formats(text: str, value: str) -> None:
    assert ledger.parse_amount(text) == Decimal(value)


def test_semicolon_export_and_french_dates(tmp_path: Path) -> None:
    path = write(tmp_path, "F-9;Dupont;d@x.example;1 200,50;EUR;01/03/2027;31/03/2027\n",
                 header="number;client;email;amount;currency;issue_date;due_date\n")
    (row,) = ledger.read(path, "en")
    assert (row.amount, row.due_date.isoformat(), row.language) == (Decimal("1200.50"), "2027-03-31", "en")


def test_reimport_is_idempotent_and_paid_settles(tmp_path: Path, engine: Engine) -> None:
    path = write(tmp_path, GOOD)
    first = ledger.import_rows(engine, ledger.read(path, "fr"), NOW, "ledger.csv")
    again = ledger.import_rows(engine, ledger.read(path, "fr"), NOW, "ledger.csv")
    assert (first.created, again.created, again.unchanged, again.updated) == (1, 0, 1, 0)
    with engine.connect() as c:
        n_events = c.execute(sa.select(sa.func.count()).select_from(table(Event))).scalar_one()
    assert n_events == 1, "re-importing the same file adds no event"
    paid = write(tmp_path, GOOD.replace("fr,,,business", "fr,1500.00,,business"))
    result = ledger.import_rows(engine, ledger.read(paid, "fr"), NOW, "ledger.csv")
    assert (result.updated, result.settled) == (1, 1)
    with engine.connect() as c:
        inv = c.execute(sa.select(table(Invoice))).one()
        kinds = list(c.execute(sa.select(table(Event).c.kind).order_by(table(Event).c.id)).scalars())
    assert (inv.state, inv.paid, inv.amount) == ("paid", Decimal("1500.00"), Decimal("1500.00"))
    assert kinds == ["imported", "paid", "updated"]


def _rows(n: int, first: int = 1) -> str:
    return "".join(GOOD.replace("F-1", f"F-{i}").replace("1500.00", f"{100 + i}.00") for i in range(first, first + n))


def test_import_streams_in_bounded_batches(tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is read and written `batch` rows at a time: the first rows are in the store before
    the last ones are read, and no statement carries more than a batch of invoices."""
    path = write(tmp_path, _rows(10))
    read_so_far = [0]
    parse = ledger.parse

    def counting(*args: object, **kwargs: object) -> Iterator[ledger.Row]:
        for row in parse(*args, **kwargs):  # type: ignore[arg-type]
            read_so_far[0] += 1
            yield row

    monkeypatch.setattr(ledger, "parse", counting)
    written: list[tuple[int, int]] = []  # (rows in the statement, rows read when it ran)

    def spy(conn: object, cursor: object, statement: str, params: object, context: object, many: bool) -> None:
        if statement.startswith("INSERT INTO invoice "):
            written.append((len(params) if many else 1, read_so_far[0]))  # type: ignore[arg-type]

    sa.event.listen(engine, "before_cursor_execute", spy)
    result = ledger.import_file(engine, path, "fr", NOW, "ledger.csv", batch=3)
    assert (result.rows, result.created) == (10, 10)
    assert written == [(3, 3), (3, 6), (3, 9), (1, 10)]
    with engine.connect() as c:
        ev = table(Event)
        assert c.execute(sa.select(sa.func.count()).select_from(ev).where(ev.c.kind == "imported")).scalar_one() == 10


def test_streamed_import_keeps_the_whole_file_rules(tmp_path: Path, engine: Engine) -> None:
    """Across batches: a number given again with other values is an error naming both lines (in
    line order with the other errors) and nothing is kept of the batches already written; the
    same row twice is one invoice."""
    bad = write(tmp_path, _rows(5) + GOOD.replace("1500.00", "x").replace("F-1", "F-9") + _rows(1, first=2)
                + GOOD.replace("F-1", "F-3").replace("1500.00", "1.00"))
    with pytest.raises(ImportFileError) as e:
        ledger.import_file(engine, bad, "fr", NOW, "ledger.csv", batch=2)
    assert [err.removeprefix(f"{bad}:") for err in e.value.errors] == [
        "7: amount: 'x': expected an amount >= 0 with at most two decimals, such as 1234.56 or 1234,56",
        "9: number: F-3 already on line 4 with different values"]
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(table(Invoice))).scalar_one() == 0
        assert c.execute(sa.select(sa.func.count()).select_from(table(Event))).scalar_one() == 0
    good = write(tmp_path, _rows(5) + _rows(2, first=2))
    assert ledger.import_file(engine, good, "fr", NOW, "ledger.csv", batch=2).created == 5
    again = ledger.import_file(engine, good, "fr", NOW, "ledger.csv", batch=2)
    assert (again.rows, again.created, again.unchanged) == (5, 0, 5)
    paid = write(tmp_path, _rows(4) + _rows(1, first=5).replace("fr,,,business", "fr,105.00,,business"))
    settled = ledger.import_file(engine, paid, "fr", NOW, "ledger.csv", batch=2)
    assert (settled.updated, settled.unchanged, settled.settled) == (1, 4, 1)
    with engine.connect() as c:
        inv = table(Invoice)
        assert c.execute(sa.select(inv.c.state).where(inv.c.number == "F-5")).scalar_one() == "paid"


def test_not_utf8_names_the_byte_of_the_file(tmp_path: Path, engine: Engine) -> None:
    """The byte counted from the start of the file, however far into it."""
    path = tmp_path / "ledger.csv"
    body = (HEADER + _rows(20_000)).encode()
    path.write_bytes(body + b"F-X,Soci\xe9t\xe9,x@x.example,1.00,EUR,2027-03-01,2027-03-31,,,,\n")
    with pytest.raises(ImportFileError) as e:
        ledger.import_file(engine, path, "fr", NOW, "ledger.csv")
    assert e.value.errors == [f"{path}: not UTF-8 (invalid continuation byte at byte {len(body) + 8}); "
                              "save the file as UTF-8 CSV"]


@pytest.mark.postgres
@pytest.mark.parametrize(("rows", "analyzed"), [(store.BULK - 1, False), (store.BULK, True)])
def test_a_bulk_import_refreshes_the_planner_statistics(tmp_path: Path, pg_base: str, rows: int,
                                                        analyzed: bool) -> None:
    """After a large import the next statements are planned on what the tables hold, not on the
    empty tables autovacuum last saw (it would look again within a minute)."""
    with fresh_database(pg_base, "t_") as url:
        engine = store.make_engine(url)
        try:
            store.migrate(engine)
            with engine.begin() as c:  # only the import may count the rows, not autovacuum meanwhile
                c.exec_driver_sql("ALTER TABLE invoice SET (autovacuum_enabled = false)")
            ledger.import_file(engine, write(tmp_path, _rows(rows)), "fr", NOW, "ledger.csv")
            with engine.connect() as c:
                tuples = c.exec_driver_sql("SELECT reltuples FROM pg_class WHERE relname = 'invoice'").scalar_one()
            assert (tuples == rows) is analyzed, tuples
        finally:
            engine.dispose()
