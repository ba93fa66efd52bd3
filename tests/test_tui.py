"""The triage UI, driven as a person would (Textual's run_test), with its effects on the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from textual.widgets import DataTable

from bot import inbound, ledger, reports
from bot.config import Config
from bot.mailbox import MemorySource
from tui.app import RelanceApp

NOW = datetime(2027, 4, 6, 9, tzinfo=UTC)


def seed(engine: Engine, cfg: Config, tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("number,client,email,amount,currency,issue_date,due_date\n"
                                    "F-1,Client A,a@client.example,100.00,EUR,2027-03-01,2027-03-31\n"
                                    "F-2,Client B,b@client.example,900.00,EUR,2027-03-01,2027-03-31\n")
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), NOW, "l.csv")
    raw = (b"From: a@client.example\r\nSubject: Facture F-1\r\nMessage-ID: <d1@client.example>\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nNous contestons cette facture.\r\n")
    inbound.store_new(engine, MemorySource({"INBOX": [raw]}), "INBOX", NOW, inbound.SyncReport())
    inbound.process(engine, cfg, NOW)


def seeded_app(engine: Engine, cfg: Config, tmp_path: Path) -> RelanceApp:
    """The UI on a store with two invoices and one client's dispute waiting in triage."""
    seed(engine, cfg, tmp_path)
    return RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test")


async def test_triage_and_overrides(engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    app = seeded_app(engine, make_config(), tmp_path)
    async with app.run_test(size=(140, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        triage = app.query_one("#triage", DataTable)
        assert triage.row_count == 1
        assert "Nous contestons" in str(app.query_one("#text").render())
        await pilot.press("r")  # resume the disputed invoice this message is about
        await app.workers.wait_for_complete()
        await pilot.press("d")  # and the message is dealt with
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.query_one("#triage", DataTable).row_count == 0
        await pilot.press("tab", "tab")  # to the invoices pane (tabs, then the table)
        app.query_one("#invoices", DataTable).focus()
        app.query_one("#invoices", DataTable).move_cursor(row=0)  # F-2, the largest amount first
        await pilot.press("m")
        await app.workers.wait_for_complete()
    with engine.connect() as c:
        states = dict(c.execute(sa.text("SELECT number, state FROM invoice")).all())
        kinds = [k for (k,) in c.execute(sa.text("SELECT kind FROM event WHERE actor = 'tui:test' ORDER BY id"))]
        assert reports.messages(c, triage_only=True) == []
    assert states == {"F-1": "active", "F-2": "paid"}
    assert kinds == ["resumed", "triage_closed", "paid"]


def test_relance_tui_is_registered_without_bot_importing_textual() -> None:
    """`relance tui` is found through the `relance.commands` entry points (bot never imports the UI)."""
    from importlib.metadata import entry_points

    from tui.app import run

    (ep,) = entry_points(group="relance.commands", name="tui")
    assert ep.load() is run


async def test_assign_a_message_to_its_suggested_invoice(engine: Engine, make_config: Callable[..., Config],
                                                         tmp_path: Path) -> None:
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    raw = (b"From: b@client.example\r\nSubject: Paiement\r\nMessage-ID: <g2@client.example>\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nVirement effectu\xc3\xa9 ce matin.\r\n")
    inbound.store_new(engine, MemorySource({"Paiements": [raw]}), "Paiements", NOW, inbound.SyncReport())
    inbound.process(engine, cfg, NOW)
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test")
    async with app.run_test(size=(140, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.query_one("#triage", DataTable).move_cursor(row=1)  # the guess, after the dispute
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        assert app.query_one("#assign-to").value == "F-2"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.query_one("#triage", DataTable).row_count == 1, "only the dispute is left"
    with engine.connect() as c:
        rows = {m["subject"]: m for m in reports.messages(c)}
    assert (rows["Paiement"]["status"], rows["Paiement"]["invoices"]) == ("applied", ["F-2"])


async def test_a_person_says_what_a_message_is(engine: Engine, make_config: Callable[..., Config],
                                               tmp_path: Path) -> None:
    """k: the kind a person types is applied and kept as an example (`relance label`, from the UI)."""
    app = seeded_app(engine, make_config(), tmp_path)
    async with app.run_test(size=(140, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("k")
        box = app.query_one("#assign-to")
        box.value = "payment_claim"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.query_one("#triage", DataTable).row_count == 0, "a person has read it"
    with engine.connect() as c:
        label, kind, status = c.execute(sa.text("SELECT label, kind, status FROM inbound")).one()
        hold, state = c.execute(sa.text("SELECT hold_until, state FROM invoice WHERE number = 'F-1'")).one()
    assert (label, kind, status) == ("payment_claim", "payment_claim", "applied")
    assert state == "active" and hold is not None, "not a dispute after all: held for payment_claim_days"
