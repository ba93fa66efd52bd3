"""The triage UI, driven as a person would (Textual's run_test and Pilot), with its effects on the
store: each action's change, its event (who and why) and its undo."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Select, Sparkline, Static, TabbedContent, TextArea
from textual.worker import WorkerCancelled

from bot import actions, desk, inbound, ledger, reports, triage
from bot.config import Config
from bot.mailbox import MemorySource
from bot.reasons import render
from tui.app import RelanceApp
from tui.reply import ReplyEditor
from tui.screens import Help, ItemScreen, Prompt

NOW = datetime(2027, 4, 6, 9, tzinfo=UTC)
PLAN = (b"From: b@client.example\r\nSubject: Facture F-2\r\nMessage-ID: <p2@client.example>\r\n"
        b"Date: Tue, 06 Apr 2027 08:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Bonjour, nous proposons de r\xc3\xa9gler la facture F-2 en deux fois : 400 \xe2\x82\xac le 30/04/2027 "
        b"et 500 \xe2\x82\xac le 31/05/2027.\r\n")
NEWS = (b"From: news@letter.example\r\nSubject: Our newsletter\r\nMessage-ID: <n%d@letter.example>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nThe best offers of the month, number %d.\r\n")


def seed(engine: Engine, cfg: Config, tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("number,client,email,amount,currency,issue_date,due_date\n"
                                    "F-1,Client A,a@client.example,100.00,EUR,2027-03-01,2027-03-31\n"
                                    "F-2,Client B,b@client.example,900.00,EUR,2027-03-01,2027-03-31\n")
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), NOW, "l.csv")
    raw = (b"From: a@client.example\r\nSubject: Facture F-1\r\nMessage-ID: <d1@client.example>\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nNous contestons cette facture.\r\n")
    deliver(engine, cfg, "INBOX", raw)


def deliver(engine: Engine, cfg: Config, folder: str, *raws: bytes) -> None:
    """Messages arriving in a folder of their own (UIDs are positions in the memory source)."""
    inbound.store_new(engine, MemorySource({folder: list(raws)}), folder, NOW, inbound.SyncReport())
    inbound.process(engine, cfg, NOW)


def seeded_app(engine: Engine, cfg: Config, tmp_path: Path, **kw: Any) -> RelanceApp:
    """The UI on a store with two invoices and one client's dispute waiting in triage."""
    seed(engine, cfg, tmp_path)
    return RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test", **kw)


def with_plan(engine: Engine, cfg: Config, tmp_path: Path, **kw: Any) -> RelanceApp:
    """The seeded store, with client B's plan proposal for F-2 waiting too (m2, first: most at stake)."""
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "Plans", PLAN)
    return RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test", **kw)


@asynccontextmanager
async def running(app: RelanceApp, size: tuple[int, int] = (140, 40)) -> AsyncIterator[Pilot[None]]:
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        yield pilot


async def settle(pilot: Pilot[None]) -> None:
    """Until the workers are done and what they posted is on screen (a read that a newer one of its
    kind replaced is cancelled: that is done too)."""
    for _ in range(3):
        try:
            await pilot.app.workers.wait_for_complete()
        except WorkerCancelled:
            await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def answer(pilot: Pilot[None], key: str, text: str | None = None) -> str:
    """Press `key`, read the prompt's prefilled answer, replace it with `text` (when given), Enter."""
    await pilot.press(key)
    await settle(pilot)
    assert isinstance(pilot.app.screen, Prompt), f"{key} asks"
    box = pilot.app.screen.query_one(Input)
    prefilled = box.value
    if text is not None:
        box.value = text
    await pilot.press("enter")
    await settle(pilot)
    return prefilled


def row(engine: Engine, sql: str) -> Any:
    with engine.connect() as c:
        return c.execute(sa.text(sql)).one()


def events(engine: Engine, actor: str = "tui:test") -> list[tuple[str, str]]:
    with engine.connect() as c:
        return [(k, r) for k, r in c.execute(sa.text("SELECT kind, reason FROM event WHERE actor = :a ORDER BY id"),
                                             {"a": actor})]


def cursor_key(app: RelanceApp, table: str = "#queue") -> str:
    t = app.query_one(table, DataTable)
    return str(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)


async def test_focus_starts_on_the_queue_and_now_is_honoured(engine: Engine, make_config: Callable[..., Config],
                                                             tmp_path: Path) -> None:
    """The table has the keys at once (not the tab strip); days late count from `--now`, not the clock."""
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        assert app.focused is app.query_one("#queue", DataTable)
        assert app.query_one("#queue", DataTable).get_row("m1")[4] == "6", "2027-03-31 to --now 2027-04-06"
        await pilot.press("down")  # a key reaches the table, not the tabs
        assert app.query_one(TabbedContent).active == "queue-pane"


async def test_resume_acts_on_the_row_under_the_cursor_and_undo_reverts_it(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """r on the dispute resumes F-1 (the invoice of that row), with who and why; u puts it back."""
    cfg = make_config()
    app = with_plan(engine, cfg, tmp_path)
    async with running(app) as pilot:
        assert list(app.items) == ["m2", "m1"], "the plan on 900.00 first: the most at stake"
        await pilot.press("down")
        await pilot.press("r")
        await settle(pilot)
        assert cursor_key(app) == "m1", "the cursor stays on the item acted on"
        assert "F-1 resumed" in str(app.query_one("#done").render())
        assert row(engine, "SELECT state, held_by FROM invoice WHERE number = 'F-1'") == ("active", None)
        assert [k for k, _ in events(engine)] == ["resumed", "decision"]
        await pilot.press("u")
        await settle(pilot)
        held = row(engine, "SELECT state, held_by FROM invoice WHERE number = 'F-1'")
    assert held[0] == "active" and held[1] is not None, "held for a person again, as before"
    assert [k for k, _ in events(engine)] == ["resumed", "decision", "undone"]


async def test_a_confirmed_reading_can_be_undone(engine: Engine, make_config: Callable[..., Config],
                                                 tmp_path: Path) -> None:
    """c then u: the plan the reading applied is undone. The effects of a person's decision are
    recorded as theirs, not the bot's: the undo does not take them for someone else's change."""
    cfg = make_config()
    app = with_plan(engine, cfg, tmp_path)
    async with running(app) as pilot:
        assert cursor_key(app) == "m2"
        await pilot.press("c")
        await settle(pilot)
        assert row(engine, "SELECT state FROM invoice WHERE number = 'F-2'") == ("plan",)
        await pilot.press("u")
        await settle(pilot)
        said = str(app.query_one("#done").render())
        assert "nothing undone" not in said, said
    assert row(engine, "SELECT status FROM inbound WHERE id = 2") == ("triage",)
    assert ("message_payment_plan", "tui:test") in [(k, a) for k, a in actors(engine) if k != "decision"]


async def test_the_date_asked_after_a_refused_confirm_is_for_the_message_confirmed(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """c on a promise with no date, the cursor moved on while the decision ran: the prompt that
    asks the date names the message c was pressed on, and labels it, not the row under the cursor."""
    app = with_plan(engine, make_config(), tmp_path)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE inbound SET kind = 'promise_to_pay'"))
    slowed(monkeypatch, desk, "decide", 0.3)
    async with running(app) as pilot:
        assert cursor_key(app) == "m2"
        await pilot.press("c")
        await pilot.press("down")
        await settle(pilot)
        assert isinstance(app.screen, Prompt) and app.screen.question.startswith("#2 ")
        app.screen.query_one(Input).value = "promise_to_pay 2027-04-20"
        await pilot.press("enter")
        await settle(pilot)
    assert row(engine, "SELECT label, status FROM inbound WHERE id = 2") == ("promise_to_pay", "applied")
    assert row(engine, "SELECT label, status FROM inbound WHERE id = 1") == (None, "triage")


async def test_a_run_of_decisions_reads_no_page_back(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two confirms in a row, the second pressed while the first runs: each row gives way to its
    invoice, and neither makes the poll read the page again (their own events are no one else's)."""
    app = with_plan(engine, make_config(), tmp_path, poll_seconds=0.2)
    pages: list[int] = []
    real = triage.page
    monkeypatch.setattr(triage, "page", lambda *a, **k: (pages.append(1), real(*a, **k))[1])
    slowed(monkeypatch, desk, "decide", 0.2)
    async with running(app) as pilot:
        pages.clear()
        await pilot.press("c")
        await pilot.press("down")
        await pilot.press("c")
        await settle(pilot)
        await pilot.pause(1.0)
        assert list(app.items) == ["iF-2", "iF-1"], "the plan and the dispute confirmed wait as invoices"
        assert pages == []


async def test_resume_clears_a_failing_address_only_where_the_invoice_waited_on_it(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """r on a row waiting for its address: the address works again, and the client's other invoice
    on it leaves the queue too. A paused invoice resumed says nothing of its address."""
    app = seeded_app(engine, make_config(), tmp_path)
    (tmp_path / "l4.csv").write_text("number,client,email,amount,currency,issue_date,due_date\n"
                                     "F-4,Client B,b@client.example,50.00,EUR,2027-03-01,2027-03-31\n")
    ledger.import_rows(engine, ledger.read(tmp_path / "l4.csv", "fr"), NOW, "l4.csv")
    actions.pause(engine, "F-4", NOW, None, "client asked", "cli:anne")
    failing = "UPDATE contact SET failing = true, failure_reason = '550' WHERE email = 'b@client.example'"
    with engine.begin() as c:
        c.execute(sa.text(failing))
    actions.resume(engine, "F-4", NOW, "cli:anne")
    assert row(engine, "SELECT failing FROM contact WHERE email = 'b@client.example'") == (True,)
    async with running(app) as pilot:
        assert {"iF-2", "iF-4"} <= set(app.items)
        app.query_one("#queue", DataTable).move_cursor(row=list(app.items).index("iF-2"))
        await pilot.press("r")
        await settle(pilot)
        assert set(app.items) == {"m1"}
    assert row(engine, "SELECT failing FROM contact WHERE email = 'b@client.example'") == (False,)


def slowed(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, seconds: float) -> None:
    """`module.name` taking `seconds` longer (a worker's read or a decision, as on a slow store)."""
    real = getattr(module, name)

    def slow(*a: Any, **k: Any) -> Any:
        time.sleep(seconds)
        return real(*a, **k)

    monkeypatch.setattr(module, name, slow)


def actors(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as c:
        return [(k, a) for k, a in c.execute(sa.text("SELECT kind, actor FROM event ORDER BY id"))]


@pytest.mark.parametrize("actor", ["relance", "tui:test"])
async def test_a_change_made_just_before_a_decision_still_shows(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path, actor: str) -> None:
    """The daemon (or the same person in another terminal: the same actor) pays 10 on F-1 after the
    screen was read, and the person dismisses another item before the poll saw it: the decision
    does not mark the screen as up to date, and the poll shows it."""
    cfg = make_config()
    app = with_plan(engine, cfg, tmp_path, poll_seconds=0.3)
    async with running(app) as pilot:
        app.next_auto_read = time.monotonic() + 1.0  # the poll waits: the decision comes first
        with engine.begin() as c:
            c.execute(sa.text("UPDATE invoice SET paid_cents = 1000 WHERE number = 'F-1'"))
            c.execute(sa.text("INSERT INTO event (invoice_id, kind, at, actor, reason, data) "
                              "SELECT id, 'payment', :at, :actor, '', '{}' FROM invoice WHERE number = 'F-1'"),
                      {"at": NOW, "actor": actor})
        assert cursor_key(app) == "m2"
        await pilot.press("d")
        await settle(pilot)
        assert app.items["m1"].stake == Decimal("100.00"), "not read yet"
        for _ in range(30):
            await pilot.pause(0.2)
            if app.items["m1"].stake != Decimal("100.00"):
                break
        assert app.items["m1"].stake == Decimal("90.00")


async def test_mark_paid_asks_the_amount_prefilled_with_what_is_due(engine: Engine, make_config: Callable[..., Config],
                                                                     tmp_path: Path) -> None:
    """m prompts with the amount due; a smaller amount is a partial payment; undo takes it back."""
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("2")
        await settle(pilot)
        assert cursor_key(app, "#invoices") == "F-2"
        assert await answer(pilot, "m", "250,00") == "900.00"
        assert cursor_key(app, "#invoices") == "F-2"
        assert row(engine, "SELECT paid_cents, state FROM invoice WHERE number = 'F-2'") == (25000, "active")
        assert app.query_one("#invoices", DataTable).get_row("F-2")[1] == "€650.00", "the row read again"
        await pilot.press("u")
        await settle(pilot)
    assert row(engine, "SELECT paid_cents FROM invoice WHERE number = 'F-2'") == (0,)
    assert [k for k, _ in events(engine)] == ["payment", "decision", "undone"]


async def test_a_decision_read_in_a_worker_applies_to_the_row_the_key_was_pressed_on(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """m reads what is due in a worker before it asks; the cursor moves meanwhile: the payment is
    for the row m was pressed on, and that row is the one read again."""
    app = with_plan(engine, make_config(), tmp_path)
    slowed(monkeypatch, reports, "status_rows", 0.3)
    async with running(app) as pilot:
        assert cursor_key(app) == "m2"
        await pilot.press("m")
        await pilot.press("down")
        await settle(pilot)
        assert isinstance(app.screen, Prompt) and cursor_key(app) == "m1"
        app.screen.query_one(Input).value = "400"
        await pilot.press("enter")
        await settle(pilot)
        assert app.items["m2"].stake == Decimal("500.00"), "the row m was pressed on, read again"
    assert row(engine, "SELECT paid_cents FROM invoice WHERE number = 'F-2'") == (40000,)


async def test_escape_leaves_a_prompt_and_changes_nothing(engine: Engine, make_config: Callable[..., Config],
                                                          tmp_path: Path) -> None:
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("m")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, Prompt)
    assert events(engine) == []


async def test_accept_a_plan_with_the_instalments_read_in_the_reply(engine: Engine, make_config: Callable[..., Config],
                                                                    tmp_path: Path) -> None:
    """y: the instalments the client proposed are prefilled; once accepted the invoice waits for each
    in turn, a payment moves the hold on, and the message leaves the queue."""
    cfg = make_config()
    app = with_plan(engine, cfg, tmp_path)
    async with running(app) as pilot:
        assert cursor_key(app) == "m2"
        assert await answer(pilot, "y") == "400.00 2027-04-30, 500.00 2027-05-31"
        assert isinstance(app.screen, ReplyEditor), "the acceptance offers its reply"
        assert "400,00\xa0€ au plus tard le 30 avril 2027" in app.screen.query_one(TextArea).text
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "plan of 2 instalment(s) accepted" in str(app.query_one("#done").render())
        assert row(engine, "SELECT status, to_addr FROM outbound") == ("pending", "b@client.example")
        assert "m2" not in app.items and cursor_key(app) == "m1", "decided: the cursor is on the next one"
    state, hold, held_by = row(engine, "SELECT state, hold_until, held_by FROM invoice WHERE number = 'F-2'")
    assert (state, held_by, str(hold)[:10]) == ("active", None, "2027-05-03"), "30 April + 3 days of grace"
    actions.record_payment(engine, "F-2", NOW, Decimal("400.00"), "bank")
    assert str(row(engine, "SELECT hold_until FROM invoice WHERE number = 'F-2'")[0])[:10] == "2027-06-03"
    assert row(engine, "SELECT status FROM inbound WHERE id = 2") == ("applied",)


async def test_reject_a_plan_and_undo(engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """n, why, then Ctrl+W in the reply editor: declined without a reply; u puts the proposal back."""
    cfg = make_config()
    app = with_plan(engine, cfg, tmp_path)
    async with running(app) as pilot:
        await answer(pilot, "n", "we need the whole amount")
        assert isinstance(app.screen, ReplyEditor), "a declined plan offers its reply"
        await pilot.press("ctrl+w")
        await settle(pilot)
        assert row(engine, "SELECT state FROM invoice WHERE number = 'F-2'") == ("active",)
        assert row(engine, "SELECT count(*) FROM outbound") == (0,), "without a reply"
        assert ("plan_ended", "we need the whole amount") in events(engine)
        await pilot.press("u")
        await settle(pilot)
        assert "m2" in app.items, "undone: the proposal waits again"
    assert row(engine, "SELECT state FROM invoice WHERE number = 'F-2'") == ("plan",)


async def test_confirmed_dispute_never_leaves_a_dead_end(engine: Engine, make_config: Callable[..., Config],
                                                         tmp_path: Path) -> None:
    """c confirms the dispute: the message is decided but the disputed invoice stays in the queue
    until the dispute is settled (s: a credit note of 30, the rest chased)."""
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("c")
        await settle(pilot)
        assert row(engine, "SELECT state FROM invoice WHERE number = 'F-1'") == ("disputed",)
        line = str(app.query_one("#done").render())
        assert "labelled dispute" in line and '{"code"' not in line, "words, not a stored code"
        assert "ladder goes on" not in line, "F-1 stays disputed"
        assert list(app.items) == ["iF-1"], "the disputed invoice waits for a person, with no key pressed"
        assert await answer(pilot, "s", "1 030,00 goodwill gesture") == "resume "
        assert "more than the €100.00 due on F-1" in str(app.query_one("#done").render()), "1030.00, read whole"
        assert row(engine, "SELECT state FROM invoice WHERE number = 'F-1'") == ("disputed",)
        assert await answer(pilot, "s", "30,00 goodwill gesture") == "resume "
        assert list(app.items) == []
    assert row(engine, "SELECT state, paid_cents FROM invoice WHERE number = 'F-1'") == ("active", 3000)
    kinds = [k for k, _ in events(engine)]
    assert kinds[-3:] == ["credit_note", "resumed", "decision"]


async def test_new_address_after_a_bounce(engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """e on a bounced invoice: the new address, the contact cleared, the invoice resumed; undo."""
    app = seeded_app(engine, make_config(), tmp_path)
    with engine.begin() as c:  # the client's address failed (as a bounce leaves it)
        c.execute(sa.text("UPDATE invoice SET state = 'bounced' WHERE number = 'F-2'"))
        c.execute(sa.text("UPDATE contact SET failing = true WHERE email = 'b@client.example'"))
    async with running(app) as pilot:
        assert "iF-2" in app.items
        app.query_one("#queue", DataTable).move_cursor(row=list(app.items).index("iF-2"))
        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, Prompt) and "(was b@client.example)" in app.screen.question, \
            "the address it replaces, read in a worker: the invoices tab was never opened"
        await pilot.press("escape")
        await answer(pilot, "e", "compta@clientb.example")
        assert "iF-2" not in app.items
        assert row(engine, "SELECT i.state, c.email FROM invoice i JOIN contact c ON c.id = i.contact_id "
                           "WHERE i.number = 'F-2'") == ("active", "compta@clientb.example")
        await pilot.press("u")
        await settle(pilot)
    assert row(engine, "SELECT i.state, c.email, c.failing FROM invoice i JOIN contact c ON c.id = i.contact_id "
                       "WHERE i.number = 'F-2'") == ("bounced", "b@client.example", True)


async def test_an_invoice_whose_address_or_data_fails_waits_in_the_queue(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """Nothing waits forgotten: an active invoice whose address fails, or whose last reminder failed
    on its data, gets no reminder until a person acts, so it is in the queue with why (the server's
    words kept), and leaves it once fixed (a new address; resume after the data is fixed)."""
    app = seeded_app(engine, make_config(), tmp_path)
    (tmp_path / "l3.csv").write_text("number,client,email,amount,currency,issue_date,due_date\n"
                                     "F-3,Client C,c@client.example,300.00,EUR,2027-03-01,2027-03-31\n"
                                     "F-4,Client B,b@client.example,50.00,EUR,2027-03-01,2027-03-31\n")
    ledger.import_rows(engine, ledger.read(tmp_path / "l3.csv", "fr"), NOW, "l3.csv")
    with engine.begin() as c:
        c.execute(sa.text("UPDATE contact SET failing = true, failure_reason = '550 5.1.1 no such user' "
                          "WHERE email = 'b@client.example'"))
        c.execute(sa.text("UPDATE invoice SET data_error = 'Subject: control character' WHERE number = 'F-3'"))
    with engine.connect() as c:
        assert triage.counts(c) == {"dispute": 1, "bounce": 2, "fix_data": 1}
        assert [i.key for i in triage.page(c, triage.Filters(kind="fix_data"), 0, 10)] == ["iF-3"]
    async with running(app) as pilot:
        assert set(app.items) == {"m1", "iF-2", "iF-3", "iF-4"}
        why = {k: triage_reason(app, k) for k in ("iF-2", "iF-3")}
        assert why["iF-2"] == "b@client.example fails (550 5.1.1 no such user): give a new address"
        assert why["iF-3"].startswith("its last reminder could not be sent (Subject: control character)")
        app.query_one("#queue", DataTable).move_cursor(row=list(app.items).index("iF-2"))
        await answer(pilot, "e", "compta@clientb.example")
        assert "iF-4" not in app.items, "the client's other invoice on the address moved too, and left"
        app.query_one("#queue", DataTable).move_cursor(row=list(app.items).index("iF-3"))
        await pilot.press("r")
        await settle(pilot)
        assert set(app.items) == {"m1"}
    assert row(engine, "SELECT data_error, state FROM invoice WHERE number = 'F-3'") == (None, "active")
    with engine.connect() as c:
        assert triage.counts(c) == {"dispute": 1}


def triage_reason(app: RelanceApp, key: str) -> str:
    return render(app.items[key].reason)


async def test_pause_until_a_date_with_a_reason(engine: Engine, make_config: Callable[..., Config],
                                                tmp_path: Path) -> None:
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await answer(pilot, "p", "2027-04-20")
        assert "says why" in str(app.query_one("#done").render()), "no reason: refused"
        await answer(pilot, "p", "2099-04-20 later")
        assert "more than a year ahead" in str(app.query_one("#done").render())
        assert events(engine) == []
        prefilled = await answer(pilot, "p", "2027-04-20 client on holiday, called")
        assert prefilled.startswith("2027-04-16"), "today + pause.payment_claim_days"
        assert "F-2 paused until 20 Apr 2027" in str(app.query_one("#done").render())
    hold = row(engine, "SELECT hold_until FROM invoice WHERE number = 'F-2'")[0]
    assert str(hold)[:10] == "2027-04-19", "midnight in Paris is 22:00 UTC the day before"
    assert ("paused", "client on holiday, called") in events(engine)


async def test_dismiss_noise_in_bulk_and_ignore_a_sender(engine: Engine, make_config: Callable[..., Config],
                                                         tmp_path: Path) -> None:
    """space selects, d dismisses the selection; i ignores a sender: its mail waits no more, now or later."""
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "News", *(NEWS % (i, i) for i in range(3)))
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test")
    async with running(app) as pilot:
        assert len(app.items) == 4
        table = app.query_one("#queue", DataTable)
        table.move_cursor(row=list(app.items).index("m2"))
        await pilot.press("space", "space")
        assert app.selected == {"m2", "m3"}
        await pilot.press("d")
        await settle(pilot)
        assert set(app.items) == {"m1", "m4"}
        table.move_cursor(row=list(app.items).index("m4"))
        await pilot.press("i")
        await settle(pilot)
        assert set(app.items) == {"m1"}
    deliver(engine, cfg, "News2", NEWS % (9, 9))
    with engine.connect() as c:
        waiting = [m["from"] for m in reports.messages(c, triage_only=True)]
    assert "news@letter.example" not in waiting, "its next mail is filed, not put in triage"
    with engine.connect() as c:
        from bot import triage
        assert [i.key for i in triage.page(c, triage.Filters(), 0, 10)] == ["m1"], "and it never shows"


async def test_a_clients_address_cannot_be_ignored_and_its_mail_always_shows(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """i on a client's dispute is refused, saying why (its mail is read whatever the list says); a
    message waiting from an address on the list (listed before it was a client's) still shows."""
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("i")
        await settle(pilot)
        assert "m1" in app.items and "cannot be ignored" in str(app.query_one("#done").render())
    assert row(engine, "SELECT count(*) FROM ignored_sender") == (0,)
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO ignored_sender (address, at, actor, reason) "
                          "VALUES ('a@client.example', :at, 'cli:anne', '')"), {"at": NOW})
    with engine.connect() as c:
        assert "m1" in [i.key for i in triage.page(c, triage.Filters(), 0, 10)]
        assert triage.totals(c, triage.Filters())[1].get("dispute") == 1


async def test_correct_the_kind(engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """k: the kind a person types is applied and kept as an example (`relance label`, from the UI)."""
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        assert await answer(pilot, "k", "payment_claim") == "dispute"
        assert app.items == {}, "a person has read it"
    label, kind, status = row(engine, "SELECT label, kind, status FROM inbound")
    hold, state = row(engine, "SELECT hold_until, state FROM invoice WHERE number = 'F-1'")
    assert (label, kind, status) == ("payment_claim", "payment_claim", "applied")
    assert state == "active" and hold is not None, "not a dispute after all: held for payment_claim_days"


async def test_confirming_a_promise_with_no_date_asks_for_it(engine: Engine, make_config: Callable[..., Config],
                                                             tmp_path: Path) -> None:
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    with engine.begin() as c:  # the bot read the dispute as a promise, with no date
        c.execute(sa.text("UPDATE inbound SET kind = 'promise_to_pay'"))
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test")
    async with running(app) as pilot:
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, Prompt), "the date is asked"
        said = str(app.query_one("#done").render())
        assert "no date to come" in said and "--until" not in said, "the prompt asks it, not a command-line flag"
        assert app.screen.query_one(Input).value == "promise to pay "
        app.screen.query_one(Input).value = "promise_to_pay 2027-04-20"
        await pilot.press("enter")
        await settle(pilot)
    assert row(engine, "SELECT label, status FROM inbound") == ("promise_to_pay", "applied")
    assert str(row(engine, "SELECT hold_until FROM invoice WHERE number = 'F-1'")[0])[:10] == "2027-04-22"


async def test_assign_a_message_to_its_suggested_invoice(engine: Engine, make_config: Callable[..., Config],
                                                         tmp_path: Path) -> None:
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    raw = (b"From: b@client.example\r\nSubject: Paiement\r\nMessage-ID: <g2@client.example>\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nVirement effectu\xc3\xa9 ce matin.\r\n")
    deliver(engine, cfg, "Paiements", raw)
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test")
    async with running(app) as pilot:
        app.query_one("#queue", DataTable).move_cursor(row=list(app.items).index("m2"))
        assert await answer(pilot, "a") == "F-2"
        assert list(app.items) == ["m1"], "only the dispute is left"
    with engine.connect() as c:
        rows = {m["subject"]: m for m in reports.messages(c)}
    assert (rows["Paiement"]["status"], rows["Paiement"]["invoices"]) == ("applied", ["F-2"])


async def test_the_assign_picker_finds_an_invoice_by_its_client(engine: Engine, make_config: Callable[..., Config],
                                                                tmp_path: Path) -> None:
    """a, then part of a client's name: the matching open invoices are listed; Tab takes the first."""
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "Misc", NEWS % (1, 1))
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test")
    async with running(app) as pilot:
        app.query_one("#queue", DataTable).move_cursor(row=list(app.items).index("m2"))
        await pilot.press("a")
        await settle(pilot)
        app.screen.query_one(Input).value = ""
        await pilot.press(*"client b")
        await settle(pilot)
        assert "F-2  Client B · €900.00" in str(app.screen.query_one("#choices").render())
        await pilot.press("tab")
        assert app.screen.query_one(Input).value == "F-2, "
        await pilot.press("enter")
        await settle(pilot)
    with engine.connect() as c:
        rows = {m["subject"]: m for m in reports.messages(c)}
    assert rows["Our newsletter"]["invoices"] == ["F-2"]


async def test_the_loser_of_a_concurrent_change_is_told(engine: Engine, make_config: Callable[..., Config],
                                                        tmp_path: Path) -> None:
    """Someone else pauses F-2 after the screen read it: m is refused, nothing is lost, the row is read again."""
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("2")
        await settle(pilot)
        actions.pause(engine, "F-2", NOW, None, "phoned", "tui:colleague")
        await answer(pilot, "m")
        assert "changed meanwhile (paused by tui:colleague)" in str(app.query_one("#done").render())
        await settle(pilot)
        assert app.query_one("#invoices", DataTable).get_row("F-2")[3] == "paused", "read again"
    assert row(engine, "SELECT paid_cents, state FROM invoice WHERE number = 'F-2'") == (0, "paused")
    assert events(engine) == []


async def test_the_item_screen_acts_on_what_it_shows(engine: Engine, make_config: Callable[..., Config],
                                                     tmp_path: Path) -> None:
    """On the item screen, an action applies to the invoice it shows, with the version it was read
    with: another person's payment since (the queue's poll has read it) refuses the resume, and the
    screen is read again; a decision made there shows its effect there. Opened from the invoices,
    the same keys act on the invoice."""
    from tui.screens import ItemScreen

    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("enter")  # the dispute on F-1
        await settle(pilot)
        assert isinstance(app.screen, ItemScreen)
        actions.record_payment(engine, "F-1", NOW, Decimal("60.00"), "tui:colleague")
        app.refresh_all()  # what the poll does when the store moved: the queue's version of F-1 is the new one
        await settle(pilot)
        assert app.items["m1"].versions["F-1"] != app.screen.invoices[0]["version"]
        await pilot.press("r")
        await settle(pilot)
        assert "changed meanwhile" in str(app.screen.query_one("#done").render())
        assert app.screen.invoices[0]["paid"] == "60.00", "read again"
        await pilot.press("r")  # now on what it shows
        await settle(pilot)
        assert "· by tui:test" in str(app.screen.query_one("#done").render())
        assert app.screen.invoices[0]["state"] == "active", "the screen shows the decision's effect"
        await pilot.press("escape", "2")
        await settle(pilot)
        app.query_one("#invoices", DataTable).move_cursor(row=list(app.invoices).index("F-2"))
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ItemScreen) and app.screen.key == "iF-2"
        assert await answer(pilot, "m", "100,00") == "900.00"
    assert row(engine, "SELECT paid_cents FROM invoice WHERE number = 'F-2'") == (10000,)


async def test_undo_stays_within_the_session(engine: Engine, make_config: Callable[..., Config],
                                             tmp_path: Path) -> None:
    """u undoes this session's decisions, latest first: yesterday's pause, made in another session,
    is not taken back by a key pressed today (`relance undo ID` does that, knowingly)."""
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("2")
        await settle(pilot)
        app.query_one("#invoices", DataTable).move_cursor(row=list(app.invoices).index("F-2"))
        await answer(pilot, "p", "2027-04-20 on holiday")
    again = RelanceApp(engine, make_config(), clock=lambda: NOW, actor="tui:test")
    async with running(again) as pilot:
        await pilot.press("u")
        await settle(pilot)
        assert "nothing to undo in this session" in str(again.query_one("#done").render())
    assert row(engine, "SELECT count(*) FROM event WHERE kind = 'undone'") == (0,)


async def test_undo_is_refused_when_the_row_changed_since(engine: Engine, make_config: Callable[..., Config],
                                                          tmp_path: Path) -> None:
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await answer(pilot, "m", "100.00")
        actions.record_payment(engine, "F-2", NOW, Decimal("50.00"), "bank")
        await pilot.press("u")
        await settle(pilot)
        assert "not undone" in str(app.query_one("#done").render())
    assert row(engine, "SELECT paid_cents FROM invoice WHERE number = 'F-2'") == (15000,)


async def test_a_daemon_change_shows_without_a_key(engine: Engine, make_config: Callable[..., Config],
                                                   tmp_path: Path) -> None:
    cfg = make_config()
    app = seeded_app(engine, cfg, tmp_path, poll_seconds=0.1)
    async with running(app) as pilot:
        assert list(app.items) == ["m1"]
        deliver(engine, cfg, "Plans", PLAN)  # the daemon's sync, in the background
        for _ in range(50):
            await pilot.pause(0.1)
            if "m2" in app.items:
                break
        assert list(app.items) == ["m2", "m1"]
        assert cursor_key(app) == "m1", "the cursor stays on the item it was on"


async def test_while_the_daemon_writes_the_screen_reads_again_a_tenth_of_the_time(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """A change seen by the poll is read at once; the next one waits ten times what those reads took
    (here they are said to take 0.5 s: 5 s), so a daemon that writes all the time does not keep the
    CPU from the person's keys. Nothing is lost: it shows once that time is over."""
    cfg = make_config()
    app = seeded_app(engine, cfg, tmp_path, poll_seconds=0.2)
    async with running(app) as pilot:
        app.took["queue"] = 0.5  # what the last read took
        deliver(engine, cfg, "Plans", PLAN)
        for _ in range(40):
            await pilot.pause(0.1)
            if "m2" in app.items:
                break
        assert "m2" in app.items, "the first change shows within the poll"
        assert app.next_auto_read - time.monotonic() > 4
        with engine.begin() as c:  # the daemon goes on: another change
            c.execute(sa.text("UPDATE invoice SET paid_cents = 1000 WHERE number = 'F-1'"))
            c.execute(sa.text("INSERT INTO event (invoice_id, kind, at, actor, reason, data) "
                              "SELECT id, 'payment', :at, 'relance', '', '{}' FROM invoice WHERE number = 'F-1'"),
                      {"at": NOW})
        await pilot.pause(0.5)
        await settle(pilot)
        assert app.items["m1"].stake == Decimal("100.00"), "not read again yet"
        app.next_auto_read = 0.0  # the time is over
        for _ in range(40):
            await pilot.pause(0.05)
            if app.items["m1"].stake != Decimal("100.00"):
                break
        assert app.items["m1"].stake == Decimal("90.00")


def test_the_timeline_puts_what_has_no_date_last(engine: Engine, make_config: Callable[..., Config],
                                                tmp_path: Path) -> None:
    """A reply whose date is not known (no Date header it could read) ends the timeline rather
    than heading it with a blank time."""
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE inbound SET received_at = NULL"))
    with engine.connect() as c:
        timeline = triage.invoice(c, cfg, "F-1", NOW)["timeline"]
    assert [w for _, w, *_ in timeline][-1] == "reply" and timeline[0][0], "dated entries first"


async def test_item_view_shows_the_reply_the_reading_and_the_timeline(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ItemScreen)
        text = str(app.screen.query_one("#message").render())
        assert "Nous contestons cette facture." in text and "reading: dispute" in text
        assert "nous contestons cette facture." in text.split("evidence:")[1], "the sentence, not the features"
        timeline = str(app.screen.query_one("#invoice").render())
        assert "F-1" in timeline and "imported" in timeline and "until a person decides" in timeline
        await pilot.press("o")
        assert "Message-ID: <d1@client.example>" in str(app.screen.query_one("#message").render())
        await pilot.press("r")  # the action keys work on the item shown
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, ItemScreen)
    assert row(engine, "SELECT held_by FROM invoice WHERE number = 'F-1'") == (None,)


async def test_a_reminder_opens_as_it_was_sent(engine: Engine, make_config: Callable[..., Config],
                                               tmp_path: Path) -> None:
    """From the invoices: Enter, then v shows the reminder the client received (headers and text)."""
    import asyncio

    from bot.mailer import MemoryMailer
    from bot.tick import tick

    cfg = make_config()
    seed(engine, cfg, tmp_path)
    mailer = MemoryMailer()
    await asyncio.to_thread(lambda: asyncio.run(tick(engine, cfg, mailer, NOW, NOW)))
    assert mailer.sent, "F-2's first reminder went out"
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test")
    async with running(app) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ItemScreen)
        assert "reminder" in str(app.screen.query_one("#invoice").render())
        await pilot.press("v")
        shown = str(app.screen.query_one("#message").render())
    assert "Reminder as sent 1/1" in shown and "F-2" in shown and "Message-ID: <" in shown


async def test_attachments_listed_and_a_text_one_shown(engine: Engine, make_config: Callable[..., Config],
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enter lists the attachments; w saves the next one where only the user can read it, and shows it
    when it is text."""
    import tempfile

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    raw = (b"From: b@client.example\r\nSubject: Facture F-2\r\nMessage-ID: <a2@client.example>\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
           b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nVoir le relev\xc3\xa9 joint.\r\n"
           b"--XX\r\nContent-Type: text/plain; name=releve.txt\r\nContent-Disposition: attachment; "
           b"filename=releve.txt\r\n\r\nVirement 900,00 EUR du 2027-04-02\r\n--XX--\r\n")
    deliver(engine, cfg, "Docs", raw)
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test")
    async with running(app) as pilot:
        app.query_one("#queue", DataTable).move_cursor(row=list(app.items).index("m2"))
        await pilot.press("enter")
        await settle(pilot)
        assert "1. releve.txt (text/plain" in str(app.screen.query_one("#message").render())
        await pilot.press("w")
        await settle(pilot)
        assert "Virement 900,00 EUR du 2027-04-02" in str(app.screen.query_one("#message").render())
    (saved,) = (tmp_path / "tmp").glob("relance-*/releve.txt")
    assert saved.stat().st_mode & 0o077 == 0 and saved.parent.stat().st_mode & 0o077 == 0, "private"


async def test_small_terminal_collapses_columns_and_help_lists_every_key(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app, size=(80, 24)) as pilot:
        columns = [str(c.key.value) for c in app.query_one("#queue", DataTable).ordered_columns]
        assert columns[:2] == ["stake", "kind"] and "why" not in columns
        assert sum(c.get_render_width(app.query_one("#queue", DataTable))
                   for c in app.query_one("#queue", DataTable).ordered_columns) <= 80
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, Help)
        keys = str(app.screen.query_one("#keys").render())
        for description in ("Accept plan", "Settle dispute", "New address", "Ignore sender", "Undo", "Search"):
            assert description in keys


async def test_search_narrows_the_queue(engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    cfg = make_config()
    app = with_plan(engine, cfg, tmp_path)
    async with running(app) as pilot:
        await pilot.press("slash", "F", "-", "1")  # the queue follows as the number is typed
        await settle(pilot)
        assert isinstance(app.screen, Prompt) and list(app.items) == ["m1"]
        await pilot.press("enter")
        await settle(pilot)
        assert list(app.items) == ["m1"]
        await answer(pilot, "slash", "")
        assert list(app.items) == ["m2", "m1"]
        await answer(pilot, "f", "kind=payment_plan")
        assert list(app.items) == ["m2"]
        await answer(pilot, "f", "kind=dispute client=Client A")  # a value runs to the next key: spaces and all
        assert list(app.items) == ["m1"] and app.filters.client == "Client A"
        await answer(pilot, "f", "colour=red")
        assert "expected key=value" in str(app.query_one("#done").render()) and list(app.items) == ["m1"]


@pytest.mark.parametrize(("lang", "typed", "expected"), [
    ("fr", "type=échéancier client=Dupont et Fils lang=fr", {"kind": "payment_plan", "client": "Dupont et Fils",
                                                              "lang": "fr"}),
    ("en", "kind=payment plan box=INBOX", {"kind": "payment_plan", "box": "INBOX"}),
    ("en", "", {}),
])
def test_filters_as_a_person_types_them(monkeypatch: pytest.MonkeyPatch, lang: str, typed: str,
                                        expected: dict[str, str]) -> None:
    from tui.app import filters_typed

    monkeypatch.setenv("RELANCE_LANG", lang)
    assert filters_typed(typed) == expected


@pytest.mark.parametrize("typed", ["kind=invoice", "lang=de", "client Dupont", "colour=red"])
def test_a_filter_that_cannot_be_read_is_refused(typed: str) -> None:
    from bot.errors import RelanceError
    from tui.app import filters_typed

    with pytest.raises(RelanceError):
        filters_typed(typed)


async def test_french_follows_the_config(engine: Engine, make_config: Callable[..., Config], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELANCE_LANG", "fr")
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app):
        cells = app.query_one("#queue", DataTable).get_row("m1")
        assert cells[:2] == ["100,00\u00a0€", "contestation"]
        assert "Annuler" in [b.description for b in app._bindings.key_to_bindings["u"]]


async def test_the_kpis_scroll_at_80x24_and_read_in_french(engine: Engine, make_config: Callable[..., Config],
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The KPIs are longer than an 80x24 pane: the keys scroll them to the last section; in French,
    figures and ageing buckets read in French (no `not_due`, no decimal point)."""
    from textual.containers import VerticalScroll

    monkeypatch.setenv("RELANCE_LANG", "fr")
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app, size=(80, 24)) as pilot:
        await pilot.press("3")
        await settle(pilot)
        pane = app.query_one("#kpi-scroll", VerticalScroll)
        assert pane.max_scroll_y > 0 and pane.has_focus
        await pilot.press("end")
        await settle(pilot)
        assert pane.scroll_y == pane.max_scroll_y
        text = str(app.query_one("#kpis").render())
    assert "pas encore échues" in text and "not_due" not in text
    assert "DSO (jours)" in text and "90,0" not in text and "90.0" not in text


async def test_kpis_as_numbers_and_bars(engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("3")
        await settle(pilot)
        text = str(app.query_one("#kpis").render())
        replies = str(app.query_one("#replies_per_week-title", Static).render())
        spark = app.query_one("#replies_per_week", Sparkline)
        assert list(spark.data or []) == [0] * 11 + [1], "the client's dispute, this week"
        assert "replies per week, 12 weeks from 13 Jan 2027: 1 in all, 1 the last week" in replies
        assert len(app.query_one("#settled_per_week", Sparkline).data or []) == 12
    assert "open receivables: €1,000.00" in text
    assert "0-30" in text and "█" in text, "ageing as a small bar chart"


def test_relance_tui_is_registered_without_bot_importing_textual() -> None:
    """`relance tui` is found through the `relance.commands` entry points (bot never imports the UI)."""
    from importlib.metadata import entry_points

    from tui.app import run

    (ep,) = entry_points(group="relance.commands", name="tui")
    assert ep.load() is run


@pytest.mark.parametrize(("lang", "from_config", "expected"), [
    ("fr", True, "Deuxième relance"), ("en", True, "Second reminder"),  # label_fr / label_en of the example
    ("fr", False, "deuxième relance"), ("en", False, "second reminder"),  # no label: the name, readable
])
def test_stage_names_come_from_the_config(make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch,
                                          lang: str, from_config: bool, expected: str) -> None:
    from bot.i18n import stage, stage_labels

    monkeypatch.setenv("RELANCE_LANG", lang)
    labels = stage_labels(make_config().stages) if from_config else {}
    assert stage("second_reminder", labels) == expected


async def test_decline_a_plan_with_a_reply_then_undo_cancels_the_reply(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """n, why, the decline template prefilled in the client's language, edited, Ctrl+S: the plan is
    declined and the reply waits in the outbox, both one decision with who and why; u cancels the
    reply (not sent yet) and puts the proposal back."""
    cfg = make_config()
    app = with_plan(engine, cfg, tmp_path)
    async with running(app) as pilot:
        await answer(pilot, "n", "too long")
        area = app.screen.query_one(TextArea)
        assert "Nous avons bien reçu votre proposition" in area.text, "French: the client's language"
        assert "400,00\xa0€ le 30 avril 2027" in area.text, "the instalments proposed"
        area.load_text("Bonjour,\n\nNous ne pouvons pas accepter : merci de régler sous huitaine.\n")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "b@client.example" in str(app.query_one("#done").render())
        assert row(engine, "SELECT state FROM invoice WHERE number = 'F-2'") == ("active",)
        assert row(engine, "SELECT status, to_addr FROM outbound") == ("pending", "b@client.example")
        sent = message_from_bytes(bytes(row(engine, "SELECT raw FROM outbound")[0]), policy=policy.default)
        assert (sent["In-Reply-To"], sent["Subject"]) == ("<p2@client.example>", "Re: Facture F-2")
        assert "sous huitaine" in sent.get_content(), "the text as edited"
        assert ("reply_queued", "too long") in events(engine)
        await pilot.press("u")
        await settle(pilot)
        assert "m2" in app.items, "undone: the proposal waits again"
    assert row(engine, "SELECT state FROM invoice WHERE number = 'F-2'") == ("plan",)
    assert row(engine, "SELECT status FROM outbound") == ("cancelled",), "never sent"
    assert [k for k, _ in events(engine)].count("reply_cancelled") == 1


async def test_reply_key_from_a_template_and_a_sent_reply_cannot_be_undone(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """R on the dispute: the dispute answer prefilled; another template chosen rewrites the text;
    typed letters go in the text (not to the keys); Ctrl+S queues it. Once the outbox has sent it,
    u is refused and the line says it cannot be undone."""
    from bot.outbox import Outbox
    from bot.render import Renderer

    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("R")
        await settle(pilot)
        assert isinstance(app.screen, ReplyEditor)
        area = app.screen.query_one(TextArea)
        assert "votre message au sujet de la facture F-1" in area.text, "answer_dispute for a dispute"
        app.screen.query_one(Select).value = "ack_claim"
        await settle(pilot)
        assert "Merci de nous avoir indiqué" in area.text
        area.move_cursor(area.document.end)
        await pilot.press("q", "u", "i")
        assert area.text.endswith("qui"), "keys typed in the editor are text"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert row(engine, "SELECT status FROM outbound") == ("pending",)
        assert row(engine, "SELECT kind, actor FROM event WHERE kind = 'reply_queued'") == ("reply_queued", "tui:test")
        ob = Outbox(engine, app.config, Renderer.from_config(app.config), NOW, NOW)
        claimed = ob.claim(int(row(engine, "SELECT id FROM outbound")[0]))
        assert claimed is not None
        ob.settle((claimed, []))
        await pilot.press("u")
        await settle(pilot)
        assert "cannot be undone" in str(app.query_one("#done").render())
        await pilot.press("enter")
        await settle(pilot)
        assert "reply sent" in str(app.screen.query_one("#invoice").render()), "in the invoice's timeline"
        await pilot.press("v")
        await settle(pilot)
        shown = str(app.screen.query_one("#message").render())
        assert "Subject: Re: Facture F-1" in shown and "qui" in shown, "v: the reply as the client received it"
    assert row(engine, "SELECT status FROM outbound") == ("sent",)
    assert row(engine, "SELECT count(*) FROM event WHERE kind = 'reply_cancelled'") == (0,)


async def test_the_reply_is_edited_in_the_persons_editor(engine: Engine, make_config: Callable[..., Config],
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl+E hands the text to $VISUAL; what the editor leaves is what is queued."""
    import shlex
    import sys

    script = "import sys; p = sys.argv[1]; open(p, 'a', encoding='utf-8').write('PS: appel prévu lundi.\\n')"
    monkeypatch.setenv("VISUAL", shlex.join([sys.executable, "-c", script]))
    app = seeded_app(engine, make_config(), tmp_path)
    async with running(app) as pilot:
        await pilot.press("R")
        await settle(pilot)
        await pilot.press("ctrl+e")
        await settle(pilot)
        assert app.screen.query_one(TextArea).text.endswith("PS: appel prévu lundi.\n")
        await pilot.press("ctrl+s")
        await settle(pilot)
    sent = message_from_bytes(bytes(row(engine, "SELECT raw FROM outbound")[0]), policy=policy.default)
    assert sent.get_content().endswith("PS: appel prévu lundi.\n")
    assert sent["To"] == "a@client.example"


async def test_the_why_the_screen_writes_is_data_each_reader_reads_in_their_language(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """r, then a payment of 50, with the UI in French: the whys are stored as codes, not French
    prose, so a colleague reading in English reads them in English; amounts in the reader's format."""
    monkeypatch.setenv("RELANCE_LANG", "fr")
    cfg = make_config()
    app = with_plan(engine, cfg, tmp_path)
    async with running(app) as pilot:
        await pilot.press("down")
        await pilot.press("r")
        await settle(pilot)
        await answer(pilot, "m", "50")
    stored = [why for kind, why in events(engine) if kind in ("decision", "payment")]
    assert all(why.startswith('{"code"') for why in stored), stored
    said = {lang: [(monkeypatch.setenv("RELANCE_LANG", lang), render(why))[1] for why in stored]
            for lang in ("fr", "en")}
    assert said["fr"][:1] == ["reprise"] and said["en"][:1] == ["resumed"], said
    assert "50,00\u00a0€ enregistré(s)" in said["fr"] and "€50.00 recorded" in said["en"], said


async def test_the_counts_follow_a_decision_once_the_person_pauses(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """After a decision the row changes at once; the counts (a query over the whole queue) are read
    again after a pause with no decision, and then say what the store says."""
    cfg = make_config()
    app = with_plan(engine, cfg, tmp_path, count_after_seconds=0)
    async with running(app) as pilot:
        assert str(app.query_one("#where").render()) == "1–2 of 2"
        await pilot.press("down", "d")  # the dispute, dismissed as noise: it leaves the queue
        await settle(pilot)
        assert list(app.items) == ["m2"]
        assert str(app.query_one("#counts").render()) == "payment plan proposed 1"
        assert str(app.query_one("#where").render()) == "1–1 of 1"


async def test_a_click_after_a_row_left_selects_the_row_under_the_pointer(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """The tables keep each cell's rendering across changes (tui/table.py); when a row above leaves,
    the rows below move up and a click must read the row it lands on, not the one that was there."""
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "News", *(NEWS % (i, i) for i in range(3)))
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test", count_after_seconds=0)
    async with running(app) as pilot:
        table = app.query_one("#queue", DataTable)
        assert next(iter(app.items)) == "m1" and len(app.items) == 4
        await pilot.press("d")  # the dispute, on the first row, dismissed: the others move up
        await settle(pilot)
        left = list(app.items)
        assert len(left) == 3 and "m1" not in left
        await pilot.click(table, offset=(20, 2))  # the second row under the header
        await settle(pilot)
        assert cursor_key(app) == left[1]



async def test_a_row_leaving_renders_again_only_the_lines_that_changed(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a decision takes a row out, the rows below move up showing what they showed: their
    lines are kept (tui/table.py), only the header and the row the cursor lands on are rendered
    from their cells again (DataTable rendered every visible line again, 10 ms of a decision)."""
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "News", *(NEWS % (i, i) for i in range(12)))
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test", count_after_seconds=0)
    rendered: list[object] = []
    render_row = DataTable._render_line_in_row

    def counted(table: DataTable[Any], row_key: Any, *args: Any, **kwargs: Any) -> Any:
        if table.id == "queue":
            rendered.append(row_key.value)
        return render_row(table, row_key, *args, **kwargs)

    monkeypatch.setattr(DataTable, "_render_line_in_row", counted)
    async with running(app) as pilot:
        assert len(app.items) == 13
        rendered.clear()
        await pilot.press("d")  # the dispute, on the first row, dismissed: twelve rows move up
        await settle(pilot)
        assert len(app.items) == 12
        assert rendered == [None, cursor_key(app)]  # the header (its key's value is None), the cursor's row

async def test_the_reader_loads_once_the_first_page_is_shown(engine: Engine, make_config: Callable[..., Config],
                                                             tmp_path: Path) -> None:
    """What the first decision would load (the classifier, dateparser's locales: most of a second)
    is read in a worker once the queue is on screen, not on the person's first key; nothing is
    stored by it."""
    from bot import understand

    app = seeded_app(engine, make_config(), tmp_path)
    understand._date_parser.cache_clear()
    understand._read_date.cache_clear()
    events_before = events(engine)
    async with running(app):
        assert understand._date_parser.cache_info().currsize == 1, "the reader has read a made-up reply"
    assert events(engine) == events_before


async def test_what_the_start_loaded_is_out_of_the_collectors_full_passes_while_the_app_runs(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """Once the start's work is done (the first page, the reader), what it loaded is frozen out of
    the garbage collector's full passes (each walked it all, 90 ms in the middle of a key press on
    a big store); when the app ends it is given back, so that a session's cycles are freed."""
    import gc

    app = seeded_app(engine, make_config(), tmp_path)
    assert gc.get_freeze_count() == 0
    async with running(app):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


async def test_an_app_ended_before_its_reader_loaded_freezes_nothing(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader still loading when the app ends: nothing is frozen when it is done (it would be
    for the life of the process: the next app's session, the next test)."""
    import asyncio
    import gc
    import threading

    from bot import decisions

    loaded = threading.Event()

    def slow_warm_up(*args: Any) -> None:
        loaded.wait(5)

    monkeypatch.setattr(decisions, "warm_up", slow_warm_up)
    app = seeded_app(engine, make_config(), tmp_path)
    async with app.run_test(size=(140, 40)) as pilot:
        while not app.warmed:  # the first page and the counts are in: the reader is loading
            await pilot.pause(0.01)
    loaded.set()
    for _ in range(50):  # the worker ends, and says so to an app that has ended
        await asyncio.sleep(0.01)
    assert gc.get_freeze_count() == 0


def _four_a_page(engine: Engine, cfg: Config, tmp_path: Path) -> RelanceApp:
    """Six items waiting (the seeded ones and five newsletters), four to a page."""
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "News", *(NEWS % (i, i) for i in range(5)))
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test", count_after_seconds=0)
    app.page_size = 4
    return app


def _queue_keys(engine: Engine, n: int) -> list[str]:
    """The first `n` items of the queue, as the store orders them."""
    with engine.connect() as conn:
        return [i.key for i in triage.page(conn, triage.Filters(), 0, n)]


async def test_a_message_leaving_a_full_page_is_replaced_by_the_next_one(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """A decision on a full page brings in the item after the page: the page keeps its length, the
    screen its layout, and the item is not missed until the next page is read."""
    app = _four_a_page(engine, make_config(), tmp_path)
    whole = _queue_keys(engine, 10)
    assert len(whole) == 6
    async with running(app) as pilot:
        table = app.query_one("#queue", DataTable)
        assert list(app.items) == whole[:4] and table.row_count == 4
        height = table.virtual_size.height
        await pilot.press("d")  # the first row dismissed: the fifth item comes in at the end
        await settle(pilot)
        assert list(app.items) == whole[1:5] and table.row_count == 4
        assert [str(k.value) for k in table.rows] == whole[1:5]
        assert table.virtual_size.height == height


async def test_a_run_of_decisions_past_the_spares_reads_the_page_again_once_the_person_pauses(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """The page is read with as many items again after it: a decision brings the next one in with
    no query. Once a run of decisions has used them up, the page shrinks, and is read again (with
    new spares) when the person pauses, not in the middle of the run."""
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "News", *(NEWS % (i, i) for i in range(12)))
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test", count_after_seconds=60)
    app.page_size = 4
    whole = _queue_keys(engine, 20)
    assert len(whole) == 13
    async with running(app) as pilot:
        assert list(app.items) == whole[:4] and [i.key for i in app.spares] == whole[4:8]
        for n in range(1, 5):
            await pilot.press("d")
            await settle(pilot)
            assert list(app.items) == whole[n:n + 4]
        await pilot.press("d")  # no spare left: the page is one short
        await settle(pilot)
        assert list(app.items) == whole[5:8] and not app.spares
        app._paused()  # the person paused (here, before the minute the test set)
        await settle(pilot)
        assert list(app.items) == whole[5:9] and [i.key for i in app.spares] == whole[9:13]


def test_the_reason_shows_on_a_wide_screen_cut_to_what_is_left() -> None:
    from tui.app import INVOICE_COLUMNS, QUEUE_COLUMNS, fits

    wide = fits(QUEUE_COLUMNS, 160)
    assert wide[-1][0] == "why" and 20 <= wide[-1][2] < 60, "WHY takes what is left"
    assert sum(c[2] + 2 for c in wide) + 4 <= 160
    assert "why" not in [c[0] for c in fits(QUEUE_COLUMNS, 80)]
    assert fits(INVOICE_COLUMNS, 160)[-1] == ("next", "NEXT", 28), "a stage and its date, whole"
