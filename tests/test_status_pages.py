"""`relance status` streams: the database sorts the open invoices, a page at a time goes through
the rules and is printed; the rows and their order are those of the whole list sorted in memory."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import actions, cli, ledger, reports
from bot.config import Config
from bot.mailer import MemoryMailer
from bot.models import Invoice, table
from bot.tick import tick
from tests.conftest import EXAMPLE, at, merge, no_sleep
from tests.test_contract_like import toml_dump

HEADER = "number,client,email,amount,currency,issue_date,due_date,language,paid\n"
# Ties on the amount due and the due date, numbers a locale would sort otherwise than Python
# (case, digits, accents), a partly paid one, a paid one (not listed), a long client name.
ROWS = """F-9,Alpha,a@a.example,300.00,EUR,2027-01-01,2027-02-01,fr,
F-10,Beta,b@b.example,300.00,EUR,2027-01-01,2027-02-01,fr,
f-1,Gamma,g@g.example,300.00,EUR,2027-01-01,2027-02-01,en,
É-1,Delta,d@d.example,300.00,EUR,2027-01-01,2027-02-01,fr,
F-2,Alpha,a@a.example,300.00,EUR,2027-01-01,2027-01-15,fr,
F-3,Epsilon Société Anonyme à Conseil d'Administration,e@e.example,1250.50,EUR,2027-03-01,2027-04-01,fr,
F-4,Beta,b@b.example,400.00,EUR,2027-03-01,2027-03-31,fr,100.00
F-5,Beta,b@b.example,80.00,USD,2027-03-01,2027-05-30,en,
F-6,Gamma,g@g.example,90.00,EUR,2027-03-01,2027-03-31,fr,90.00
F-7,Zeta,z@z.example,5.00,EUR,2026-01-01,2026-02-01,fr,
"""
NOW = "2027-04-12T10:00"


@pytest.fixture
def ledger_db(engine: Engine, tmp_path: Path, make_config: Callable[..., Config]) -> tuple[Engine, Config]:
    path = tmp_path / "l.csv"
    path.write_text(HEADER + ROWS)
    ledger.import_file(engine, path, "fr", at("2027-03-01T08:00"), "l.csv")
    cfg = make_config(database={"url": str(engine.url.render_as_string(hide_password=False))},
                      penalties={"ecb_rates": {"2027-H1": "2.00"}}, imap={"folders": []})
    asyncio.run(tick(engine, cfg, MemoryMailer(), at("2027-04-06T10:00"), datetime.now(UTC),  # some stages reached
                     sleep=no_sleep))
    actions.pause(engine, "F-10", at(NOW), at("2027-05-01T00:00"), "client called", "test")
    return engine, cfg


def in_memory(engine: Engine, cfg: Config) -> list[dict[str, Any]]:
    """The whole list read at once and sorted in Python, as `relance status` did."""
    inv = table(Invoice)
    with engine.connect() as c:
        numbers = list(c.execute(sa.select(inv.c.number).where(inv.c.state != "paid")).scalars())
        return reports.status_rows(c, cfg, at(NOW), numbers)


@pytest.mark.parametrize("page", [1, 3, 1000])
def test_pages_give_the_rows_of_the_whole_list_in_its_order(ledger_db: tuple[Engine, Config], page: int) -> None:
    """Whatever the page size, the same rows in the same order: amount due, then due date, then number."""
    engine, cfg = ledger_db
    expected = in_memory(engine, cfg)
    assert [r["number"] for r in expected] == ["F-3", "F-2", "F-10", "F-9", "f-1", "É-1", "F-4", "F-5", "F-7"]
    with engine.connect() as c:
        pages = list(reports.status_pages(c, cfg, at(NOW), page=page))
    assert all(len(p) <= page for p in pages)
    assert [r for p in pages for r in p] == expected


def test_cli_status_streams_the_same_json_and_lines(ledger_db: tuple[Engine, Config], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`--json` is the document of the whole list, character for character; the table has one line
    per invoice in that order, its cells lined up under the header."""
    engine, cfg = ledger_db
    expected = in_memory(engine, cfg)
    config = tmp_path / "config.toml"
    config.write_text(toml_dump(merge(EXAMPLE, {"database": {"url": engine.url.render_as_string(hide_password=False)},
                                                "imap": {"folders": []}})))
    monkeypatch.setattr(reports, "PAGE", 2)
    monkeypatch.setattr(reports.status_pages, "__defaults__", (2,))
    assert cli.main(["--config", str(config), "status", "--json", "--now", NOW]) == 0
    out = capsys.readouterr().out
    assert out == json.dumps(expected, ensure_ascii=False, indent=2) + "\n"
    assert cli.main(["--config", str(config), "status", "--now", NOW]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert [re.split(r"\s{2,}", line)[0] for line in lines] == [r["number"] for r in expected]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    for line, r in zip(lines, expected, strict=True):
        assert line[starts[1]:].startswith(r["client"]) and line[starts[2]:].startswith(r["amount_due"])
        assert line[starts[2]:starts[3]].split() == [r["amount_due"], r["currency"]]  # the currency has no title
        assert line[starts[3]:].startswith(str(r["days_overdue"]))
    assert max(map(len, [header, *lines])) < 150


def test_status_with_nothing_open(engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(toml_dump(merge(EXAMPLE, {"database": {"url": engine.url.render_as_string(hide_password=False)},
                                                "imap": {"folders": []}})))
    assert cli.main(["--config", str(config), "status", "--json", "--now", NOW]) == 0
    assert capsys.readouterr().out == "[]\n"
    assert cli.main(["--config", str(config), "status", "--now", NOW]) == 0
    assert capsys.readouterr().out.strip() in ("(none)", "(aucune)")
