"""Ledger import: every bad row named as FILE:LINE: column: message, nothing imported; upserts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import ledger
from bot.errors import ImportFileError
from bot.models import Event, Invoice, table

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
