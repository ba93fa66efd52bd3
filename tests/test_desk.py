"""The desk's decisions as the command line makes them (the UI calls the same functions): plans,
disputes, noise, ignored senders, undo and the lost-update check, on a real database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import actions, desk, plans, reports, triage, versions
from bot.cli import main
from bot.config import Config
from bot.errors import RelanceError, StaleError
from bot.reasons import plain_text
from rules.plan import Instalment
from tests.conftest import EXAMPLE, merge
from tests.test_tui import NOW, PLAN, deliver, seed


def test_a_missed_instalment_lets_the_ladder_resume(engine: Engine, make_config: Callable[..., Config],
                                                   tmp_path: Path) -> None:
    """Accepted plan: held until each instalment (+ grace); paid on time, the hold moves on; missed,
    the hold runs out and the next reminder is due on the balance."""
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    steps = (Instalment(Decimal("400.00"), NOW.date() + timedelta(days=10)),
             Instalment(Decimal("500.00"), NOW.date() + timedelta(days=40)))
    desk.accept_plan(engine, cfg, "F-2", steps, NOW, "cli:test", "agreed by phone")
    with engine.connect() as c:
        (row,) = reports.status_rows(c, cfg, NOW, ["F-2"])
    assert row["state"] == "paused" and row["next_action_at"] >= "2027-04-19", "held to 16 April + 3 days"
    actions.record_payment(engine, "F-2", NOW + timedelta(days=9), Decimal("400.00"), "bank")
    later = NOW + timedelta(days=45)  # the second instalment (16 May) was missed
    with engine.connect() as c:
        (row,) = reports.status_rows(c, cfg, later, ["F-2"])
    assert row["state"] == "active" and row["amount_due"] == "500.00"
    assert row["next_action"] == "reminder" and row["next_action_at"] <= later.isoformat()


@pytest.mark.parametrize(("text", "error"), [
    ("400 2027-04-01", "future"), ("400 2027-05-01, 400 2027-04-20", "in order"), ("100 2027-05-01", "add up"),
])
def test_a_plan_that_does_not_hold_is_refused(engine: Engine, make_config: Callable[..., Config], tmp_path: Path,
                                              text: str, error: str) -> None:
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    with pytest.raises(RelanceError, match=error):
        desk.accept_plan(engine, cfg, "F-2", plans.parse(text), NOW, "cli:test", "")


def test_settling_a_dispute_three_ways(engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE invoice SET state = 'disputed'"))
    desk.settle_dispute(engine, "F-1", "cancel", NOW, "cli:test", "wrong client")
    desk.settle_dispute(engine, "F-2", "credit", NOW, "cli:test", "one item damaged", Decimal("100.00"))
    with engine.connect() as c:
        rows = dict(c.execute(sa.text("SELECT number, state || ' ' || paid_cents FROM invoice")).all())
        kinds = [k for (k,) in c.execute(sa.text("SELECT kind FROM event WHERE actor = 'cli:test' ORDER BY id"))]
    assert rows == {"F-1": "paid 10000", "F-2": "active 10000"}
    assert kinds == ["credit_note", "credit_note", "resumed"], "a credit note, even one that settles, is no payment"
    with pytest.raises(RelanceError, match="not disputed"):
        desk.settle_dispute(engine, "F-2", "resume", NOW, "cli:test", "")


def test_undo_puts_back_what_a_decision_changed_and_nothing_else(engine: Engine, make_config: Callable[..., Config],
                                                                  tmp_path: Path) -> None:
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    done = desk.decide(engine, NOW, "cli:a", "pause", "holiday", desk.Scope(invoices=("F-2",)),
                       lambda: actions.pause(engine, "F-2", NOW, None, "holiday", "cli:a"))
    with pytest.raises(RelanceError, match="nothing to undo"):
        desk.undo(engine, NOW, "cli:b")
    assert "undone" in desk.undo(engine, NOW, "cli:a")
    with pytest.raises(RelanceError, match="already undone"):
        desk.undo(engine, NOW, "cli:a", done.decision)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT state FROM invoice WHERE number = 'F-2'")).scalar() == "active"


def test_an_undo_never_puts_back_what_someone_else_changed_while_the_decision_ran(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """The daemon records a payment on F-2 between the decision's first read and its last: the
    decision keeps who changed what meanwhile, and its undo is refused rather than taking the
    payment back."""
    seed(engine, make_config(), tmp_path)

    def pause_while_the_bank_pays() -> str:
        text = actions.pause(engine, "F-2", NOW, None, "holiday", "tui:alice")
        actions.record_payment(engine, "F-2", NOW, Decimal("30.00"), "relance")  # another connection, meanwhile
        return text

    desk.decide(engine, NOW, "tui:alice", "pause", "holiday", desk.Scope(invoices=("F-2",)), pause_while_the_bank_pays)
    with pytest.raises(RelanceError, match="relance changed the same invoices"):
        desk.undo(engine, NOW, "tui:alice")
    with engine.connect() as c:
        left = c.execute(sa.text("SELECT paid_cents, state FROM invoice WHERE number = 'F-2'")).one()
    assert left == (3000, "paused")


def test_the_version_check_refuses_a_stale_decision(engine: Engine, make_config: Callable[..., Config],
                                                    tmp_path: Path) -> None:
    seed(engine, make_config(), tmp_path)
    with engine.connect() as c:
        seen = versions.of(c, [2])[2]
    actions.pause(engine, "F-2", NOW, None, "phoned", "cli:colleague")
    with pytest.raises(StaleError, match="paused by cli:colleague"):
        actions.record_payment(engine, "F-2", NOW, None, "tui:me", seen)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT paid_cents FROM invoice WHERE number = 'F-2'")).scalar() == 0


def test_the_command_line_makes_the_same_decisions(engine: Engine, db_url: str, make_config: Callable[..., Config],
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """relance plan / dismiss / ignore / undo: the UI's decisions, from a shell."""
    from tests.test_contract_like import toml_dump

    cfg = make_config()
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "Plans", PLAN)
    (tmp_path / "config.toml").write_text(toml_dump(merge(EXAMPLE, {"database": {"url": db_url}})))
    base = ["--config", str(tmp_path / "config.toml")]
    now = ["--now", "2027-04-06T11:00:00+02:00"]
    assert main(["plan", *base, "F-2", "--accept", "400 2027-04-30, 500 2027-05-31", "--message", "2", *now]) == 0
    assert main(["dismiss", *base, "1", *now]) == 0
    with engine.connect() as c:
        assert triage.page(c, triage.Filters(), 0, 10) == []
    assert main(["undo", *base, *now]) == 0, "the dismissal"
    assert main(["undo", *base, *now]) == 0, "the plan"
    with engine.connect() as c:
        assert [i.key for i in triage.page(c, triage.Filters(), 0, 10)] == ["m2", "m1"]
    assert main(["ignore", *base, "a@client.example", *now]) == 1, "a client's address"
    assert "cannot be ignored" in capsys.readouterr().err
    assert main(["ignore", *base, "news@letter.example", *now]) == 0
    assert "ignored (0 message(s) dismissed)" in capsys.readouterr().out
    assert main(["plan", *base, "F-9", "--reject", *now]) == 1



def test_ageing_buckets_of_open_receivables() -> None:
    """kpi's ageing: what is still due, by days past due (paid invoices left out)."""
    from datetime import date
    from types import SimpleNamespace as Row

    from bot.reports import ageing

    today = date(2027, 4, 6)
    rows = [Row(state="active", amount=Decimal("100.00"), paid=Decimal("40.00"), due_date=today),
            Row(state="active", amount=Decimal("10.00"), paid=Decimal(0), due_date=date(2027, 4, 7)),
            Row(state="disputed", amount=Decimal("5.00"), paid=Decimal(0), due_date=date(2027, 3, 6)),  # 31 days
            Row(state="plan", amount=Decimal("7.00"), paid=Decimal(0), due_date=date(2027, 3, 5)),
            Row(state="active", amount=Decimal("1.00"), paid=Decimal(0), due_date=date(2027, 1, 5)),
            Row(state="paid", amount=Decimal("999.00"), paid=Decimal("999.00"), due_date=date(2026, 1, 1))]
    assert {k: str(v) for k, v in ageing(rows, today).items()} == {
        "not_due": "10.00", "0-30": "60.00", "31-60": "12.00", "61-90": "0.00", "90+": "1.00"}


def test_a_bulk_dismissal_leaves_alone_what_someone_else_decided(engine: Engine, make_config: Callable[..., Config],
                                                                 tmp_path: Path) -> None:
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "Plans", PLAN)
    actions.close_message(engine, 1, NOW, "tui:colleague")
    text = desk.dismiss(engine, [1, 2], NOW, "tui:me")
    assert text.startswith("1 message(s) dismissed;") and "#1 was decided meanwhile" in text
    with engine.connect() as c:
        reasons = {i: plain_text(r) for i, r in c.execute(sa.text("SELECT id, reason FROM inbound")).all()}
    assert reasons == {1: "decided by tui:colleague", 2: "decided by tui:me: noise"}
    with pytest.raises(StaleError):
        desk.dismiss(engine, [1], NOW, "tui:me")
