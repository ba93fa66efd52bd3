"""Manual overrides, the backtest and the KPIs, on a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import actions, ledger, reports, views
from bot.config import Config
from bot.errors import NotFoundError, RelanceError
from bot.mailer import MemoryMailer
from bot.models import Event, Outbound, Reminder, table
from bot.tick import plan_groups, tick
from tests.conftest import at, no_sleep

HEADER = "number,client,email,amount,currency,issue_date,due_date,language,paid\n"
ROWS = ("F-1,A,a@exemple.example,1000.00,EUR,2027-03-01,2027-03-31,fr,\n"
        "F-2,B,b@exemple.example,500.00,EUR,2027-03-01,2027-03-31,fr,\n")



@pytest.fixture
def world(engine: Engine, tmp_path: Path, make_config: Callable[..., Config]) -> Any:
    path = tmp_path / "l.csv"
    path.write_text(HEADER + ROWS)
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "l.csv")
    cfg = make_config(penalties={"ecb_rates": {"2027-H1": "2.00"}})
    mailer = MemoryMailer()

    def run(now: str) -> None:
        asyncio.run(tick(engine, cfg, mailer, at(now), datetime.now(UTC), sleep=no_sleep))

    def status(now: str) -> dict[str, dict[str, Any]]:
        with engine.connect() as c:
            return {r["number"]: r for r in reports.status_rows(c, cfg, at(now))}

    return type("World", (), {"engine": engine, "cfg": cfg, "mailer": mailer, "run": staticmethod(run),
                              "status": staticmethod(status)})


def sent_numbers(world: Any) -> list[str]:
    return [raw.split(b"X-Relance-Invoices: ")[1].split(b"\r\n")[0].decode() for _, _, raw in world.mailer.sent]


def test_pause_until_a_date_holds_then_the_ladder_resumes(world: Any) -> None:
    actions.pause(world.engine, "F-1", at("2027-04-01T10:00"), at("2027-04-20T00:00"), "client called", "test")
    assert world.status("2027-04-05T10:00")["F-1"]["state"] == "paused"
    world.run("2027-04-05T10:00")
    assert sent_numbers(world) == ["F-2"]
    st = world.status("2027-04-05T10:00")["F-1"]
    assert (st["next_action"], st["next_action_at"]) == ("reminder", at("2027-04-20T09:00").isoformat())
    world.run("2027-04-20T10:00")
    assert sent_numbers(world)[1:] == ["F-1", "F-2"], "F-1's first reminder; F-2's second (larger first)"


def test_pause_without_date_holds_until_resume(world: Any) -> None:
    actions.pause(world.engine, "F-1", at("2027-04-01T10:00"), None, "dispute by phone", "test")
    world.run("2027-05-01T10:00")
    assert "F-1" not in sent_numbers(world)
    assert world.status("2027-05-01T10:00")["F-1"]["next_action"] == "resume"
    actions.resume(world.engine, "F-1", at("2027-05-03T10:00"), "test")
    world.run("2027-05-03T10:30")
    assert sent_numbers(world).count("F-1") == 1, "resumed: one reminder, not a burst of the missed ones"


def test_partial_then_full_payment(world: Any) -> None:
    msg = actions.record_payment(world.engine, "F-1", at("2027-04-01T10:00"), Decimal("400.00"), "test")
    assert "600.00 still due" in msg
    assert world.status("2027-04-01T10:00")["F-1"]["amount_due"] == "600.00"
    with pytest.raises(RelanceError, match="more than the €600.00 due"):
        actions.record_payment(world.engine, "F-1", at("2027-04-01T10:00"), Decimal("700.00"), "test")
    actions.record_payment(world.engine, "F-1", at("2027-04-02T10:00"), None, "test")
    assert "F-1" not in world.status("2027-04-02T10:00")
    world.run("2027-04-05T10:00")
    assert sent_numbers(world) == ["F-2"]
    with pytest.raises(RelanceError, match="is paid"):
        actions.pause(world.engine, "F-1", at("2027-04-05T10:00"), None, "", "test")
    with world.engine.connect() as c:
        kinds = list(c.execute(sa.select(table(Event).c.kind, table(Event).c.actor)
                               .where(table(Event).c.kind.in_(("payment", "paid"))).order_by(table(Event).c.id)).all())
    assert kinds == [("payment", "test"), ("paid", "test")]


def test_unknown_invoice_is_named(world: Any) -> None:
    with pytest.raises(NotFoundError, match="'F-404'"):
        actions.resume(world.engine, "F-404", at("2027-04-01T10:00"), "test")


def test_simulate_replays_without_changing_anything(world: Any) -> None:
    with world.engine.connect() as c:
        before = c.execute(sa.select(sa.func.count()).select_from(table(Event))).scalar_one()
        sends = reports.simulate(c, world.cfg, date(2027, 4, 1), date(2027, 5, 31))
        after = c.execute(sa.select(sa.func.count()).select_from(table(Event))).scalar_one()
    assert before == after and world.mailer.sent == []
    got = [(s.at.date().isoformat(), s.number, s.stage) for s in sends]
    assert got == [
        ("2027-04-05", "F-1", "reminder"), ("2027-04-05", "F-2", "reminder"),
        ("2027-04-15", "F-1", "second_reminder"), ("2027-04-15", "F-2", "second_reminder"),
        ("2027-04-30", "F-1", "formal_notice"), ("2027-04-30", "F-2", "formal_notice"),
    ]


def test_simulate_matches_what_ticks_really_do(world: Any) -> None:
    """The backtest and the real scheduler agree day by day."""
    with world.engine.connect() as c:
        simulated = [(s.at.date(), s.number) for s in reports.simulate(c, world.cfg, date(2027, 4, 1),
                                                                          date(2027, 5, 31))]
    real = []
    day = date(2027, 4, 1)
    while day <= date(2027, 5, 31):
        n = len(world.mailer.sent)
        world.run(f"{day.isoformat()}T10:00")
        real += [(day, num) for num in sent_numbers(world)[n:]]
        day = date.fromordinal(day.toordinal() + 1)
    assert sorted(real) == sorted(simulated)


def test_kpis(world: Any) -> None:
    world.run("2027-04-05T10:00")  # both reminded
    actions.record_payment(world.engine, "F-2", at("2027-04-09T10:00"), None, "test")  # 4 days later
    world.run("2027-04-15T10:00")
    world.run("2027-04-30T10:00")  # F-1 reaches the formal notice
    actions.record_payment(world.engine, "F-1", at("2027-05-05T10:00"), None, "test")  # 30 days after
    with world.engine.connect() as c:
        k = reports.kpi(c, world.cfg, at("2027-05-10T10:00"))
        n_sent = c.execute(sa.select(sa.func.count()).select_from(table(Outbound))).scalar_one()
    assert n_sent == 4 and k["emails_sent"] == 4 and k["formal_notices_sent"] == 1
    assert k["recovery_rate_pct"] == "100.0"
    assert k["mean_days_to_pay_after_first_reminder"] == "17.0"
    assert k["recovered_per_stage"] == {"reminder": "500.00", "second_reminder": "0", "formal_notice": "1000.00"}
    assert k["amicable_conversion_pct"] == "50.0"
    assert k["cost_of_recovery"] == "0.58"  # 4 x 0.02 + 1 x 0.50
    assert k["open_receivables"] == "0"
    # F-2's 500 settled 31 days before (the 5th week back), F-1's 1,000 five days before (this week)
    assert k["weeks_from"] == "2027-02-16"
    assert k["settled_per_week"] == ["0.00"] * 7 + ["500.00", "0.00", "0.00", "0.00", "1000.00"]
    assert k["replies_per_week"] == [0] * 12


def test_a_credit_note_is_not_recovered_money(world: Any) -> None:
    """A dispute settled by a credit note for all that was due (cancel) settles the invoice but
    recovers nothing: the KPIs count money received, not money given up."""
    from bot import desk

    world.run("2027-04-05T10:00")  # both reminded
    actions.record_payment(world.engine, "F-2", at("2027-04-09T10:00"), None, "test")
    with world.engine.begin() as c:
        c.execute(sa.text("UPDATE invoice SET state = 'disputed' WHERE number = 'F-1'"))
    desk.settle_dispute(world.engine, "F-1", "cancel", at("2027-04-10T10:00"), "test", "wrong client")
    with world.engine.connect() as c:
        k = reports.kpi(c, world.cfg, at("2027-05-10T10:00"))
    assert k["recovery_rate_pct"] == "33.3"  # F-2's 500 of the 1,500 reminded
    assert k["recovered_per_stage"]["reminder"] == "500.00"
    assert k["open_receivables"] == "0"


def test_missing_rate_fails_the_notice_loudly_and_simulate_warns(engine: Engine, tmp_path: Path,
                                                                  make_config: Callable[..., Config]) -> None:
    """No rate for the half-year: the formal notice is not sent, the tick says why, simulate foresees it."""
    path = tmp_path / "l.csv"
    path.write_text(HEADER + ROWS)
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "l.csv")
    cfg = make_config()  # the example's table stops at 2025-H2
    with engine.connect() as c:
        sends = reports.simulate(c, cfg, date(2027, 4, 1), date(2027, 5, 31))
    assert {s.problem for s in sends if s.stage == "formal_notice"} == {
        'penalties.ecb_rates has no rate for 2027-H1: add "2027-H1" = "<rate>" to the table'}
    mailer = MemoryMailer()
    for now in ("2027-04-05T10:00", "2027-04-15T10:00"):  # the two reminders go out
        asyncio.run(tick(engine, cfg, mailer, at(now), datetime.now(UTC), sleep=no_sleep))
    assert len(mailer.sent) == 4
    report = asyncio.run(tick(engine, cfg, mailer, at("2027-04-30T10:00"), datetime.now(UTC), sleep=no_sleep))
    assert len(mailer.sent) == 4 and not report.ok
    assert len(report.failed) == 2 and "no rate for 2027-H1" in report.failed[0]
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(table(Reminder))).scalar_one() == 4, \
            "the failed notice's stage is freed"
    fixed = make_config(penalties={"ecb_rates": {"2027-H1": "2.00"}})
    report = asyncio.run(tick(engine, fixed, mailer, at("2027-05-03T10:00"), datetime.now(UTC), sleep=no_sleep))
    assert len(mailer.sent) == 6 and report.ok, "once the rate is there, the notice goes out the next pass"


def test_the_tick_reads_only_invoices_that_can_still_get_a_stage(world: Any) -> None:
    """An invoice past its last stage, or paid in full, is history: the scheduler's read leaves it
    out, and plans the same as from every invoice."""
    for day in ("2027-04-05", "2027-04-15", "2027-04-30"):  # F-1 and F-2 reach the formal notice
        world.run(f"{day}T10:00")
    with world.engine.begin() as c:
        c.execute(sa.text("INSERT INTO client (id, key, name, kind) VALUES (99, 'c', 'C', 'business')"))
        c.execute(sa.text("INSERT INTO contact (id, client_id, email, cc, failing) VALUES (99, 99, 'c@c.example',"
                          " '', false)"))
        c.execute(sa.text("INSERT INTO invoice (id, number, client_id, contact_id, amount_cents, paid_cents, currency,"
                          " issue_date, due_date, language, state, row_hash) VALUES (99, 'F-3', 99, 99, 10000, 0,"
                          " 'EUR', '2027-04-01', '2027-05-01', 'fr', 'active', '')"))
    actions.record_payment(world.engine, "F-2", at("2027-05-02T10:00"), Decimal("499.99"), "test")
    now = at("2027-05-20T10:00")
    with world.engine.connect() as c:
        everything = views.load(c, due_by=now.date())
        sendable = views.load(c, due_by=now.date(), stages=len(world.cfg.ladder))
    assert sorted(r.number for r in everything) == ["F-1", "F-2", "F-3"]
    assert [r.number for r in sendable] == ["F-3"]
    assert plan_groups(sendable, world.cfg, now) == plan_groups(everything, world.cfg, now)
    assert [p.group.numbers for p in plan_groups(sendable, world.cfg, now)] == [("F-3",)]
