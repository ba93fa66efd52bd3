"""An accepted plan's instalments, each reminded on the short ladder of `[plans] reminder_days`,
through the outbox to a real SMTP server (aiosmtpd on loopback), on SQLite and PostgreSQL; a
missed instalment resumes the ladder on the balance."""

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

from bot import actions, desk, instalments, replies
from bot.cli import main
from bot.config import Config
from bot.errors import ConfigError
from bot.mailer import SmtpMailer
from bot.tick import tick
from rules.plan import Instalment
from tests.conftest import EXAMPLE, at, merge, no_sleep
from tests.servers import SmtpSink
from tests.test_replies import rows
from tests.test_tui import NOW


@pytest.fixture
def with_plan(engine: Engine, desk_with_plan: tuple[Config, SmtpSink]) -> tuple[Config, SmtpSink]:
    """F-2 (900.00) on a plan accepted on 6 April: 400.00 by 30 April, 500.00 by 31 May."""
    cfg, sink = desk_with_plan
    desk.accept_plan(engine, cfg, "F-2", (Instalment(Decimal("400.00"), date(2027, 4, 30)),
                                          Instalment(Decimal("500.00"), date(2027, 5, 31))), NOW, "tui:me", "ok", 2)
    return cfg, sink


def run(engine: Engine, cfg: Config, when: str) -> Any:
    return asyncio.run(tick(engine, cfg, SmtpMailer(cfg.smtp, None), at(when), datetime.now(UTC), sleep=no_sleep))


def received(sink: SmtpSink) -> list[tuple[str, str]]:
    """(subject, text) of what the server received about F-2."""
    return [(str(m["Subject"]), m.get_body(("plain",)).get_content()) for m in sink.messages()  # type: ignore[union-attr]
            if "F-2" in str(m["X-Relance-Invoices"])]


def test_each_instalment_is_reminded_before_and_after_its_day_once(engine: Engine,
                                                                   with_plan: tuple[Config, SmtpSink]) -> None:
    """Three days before the first instalment, then the day after when unpaid, each once; a payment
    moves the reminders on to the next instalment; a reminder queued before the payment landed is
    cancelled at claim."""
    cfg, sink = with_plan
    run(engine, cfg, "2027-04-26T10:00")
    assert received(sink) == [], "not yet"
    run(engine, cfg, "2027-04-27T10:00")
    run(engine, cfg, "2027-04-27T15:00")
    (first,) = received(sink)
    assert first[0].startswith("Échéance 1/2 de votre échéancier : facture F-2")
    assert "400,00\xa0€, arrive le 30 avril 2027" in first[1]
    run(engine, cfg, "2027-05-03T10:00")  # the 1st was a Saturday: the next business day
    assert len(received(sink)) == 2
    assert "ne nous est pas parvenue" in received(sink)[1][1]
    run(engine, cfg, "2027-05-03T15:00")
    assert len(received(sink)) == 2, "each step once"
    actions.record_payment(engine, "F-2", at("2027-05-03T16:00"), Decimal("400.00"), "bank")
    run(engine, cfg, "2027-05-28T10:00")
    assert received(sink)[2][0].startswith("Échéance 2/2"), "the payment moved them on"
    with engine.connect() as c:
        kinds = [k for (k,) in c.execute(sa.text(
            "SELECT e.kind FROM event e JOIN invoice i ON i.id = e.invoice_id WHERE i.number = 'F-2' "
            "AND e.kind LIKE 'instalment%' ORDER BY e.id"))]
    assert kinds == ["instalment_queued", "instalment_sent"] * 3
    with engine.connect() as c:
        assert instalments.due(c, cfg, at("2027-06-01T10:00"))[0].step == 1
    actions.record_payment(engine, "F-2", at("2027-05-31T10:00"), Decimal("500.00"), "bank")
    with engine.connect() as c:
        assert instalments.due(c, cfg, at("2027-06-01T10:00")) == [], "all paid: nothing to remind"


def test_a_missed_instalment_stops_its_reminders_and_resumes_the_ladder(
        engine: Engine, with_plan: tuple[Config, SmtpSink]) -> None:
    """Unpaid past its grace: no more instalment reminders; the ladder's first stage goes out on the
    balance (the hold of the plan ran out)."""
    cfg, sink = with_plan
    run(engine, cfg, "2027-05-04T10:00")
    subjects = [s for s, _ in received(sink)]
    assert len(subjects) == 1 and subjects[0].startswith("Rappel : facture F-2"), subjects
    with engine.connect() as c:
        assert instalments.due(c, cfg, at("2027-05-04T10:00")) == []


def test_a_reminder_queued_for_an_instalment_paid_meanwhile_is_cancelled(
        engine: Engine, with_plan: tuple[Config, SmtpSink]) -> None:
    """Recorded, then the payment lands before the send: the outbox reads the plan again and cancels it."""
    cfg, sink = with_plan
    assert len(instalments.queue(engine, cfg, at("2027-04-27T10:00"))) == 1
    assert instalments.queue(engine, cfg, at("2027-04-27T10:05")) == [], "never twice"
    actions.record_payment(engine, "F-2", at("2027-04-27T11:00"), Decimal("400.00"), "bank")
    run(engine, cfg, "2027-04-27T12:00")
    assert received(sink) == []
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT status FROM outbound WHERE stage = 'instalment'")).scalar() == "cancelled"


@pytest.mark.parametrize("days", [[1, -3], [-90], [True], ["1"]])
def test_the_short_ladder_is_checked(make_config: Callable[..., Config], days: list[Any]) -> None:
    """Days in increasing order, whole numbers from -60 to 60: anything else names the key."""
    with pytest.raises(ConfigError, match="plans.reminder_days"):
        make_config(plans={"reminder_days": days})


def test_the_scan_of_the_plans_that_run_reads_the_kind_index(engine: Engine) -> None:
    """EXPLAIN of the plans scan (each tick): the events are searched by kind through the index on
    (kind, invoice_id), not walked in full (171,000 of them in bench/tui.py's store)."""
    with engine.connect() as c:
        sql = str(instalments.plans_query().compile(engine, compile_kwargs={"literal_binds": True}))
        if engine.dialect.name == "sqlite":
            plan = [str(r[3]) for r in c.execute(sa.text("EXPLAIN QUERY PLAN " + sql))]
            assert not [p for p in plan if p.startswith("SCAN event")], plan
            assert any("INDEX ix_event_kind_invoice_id (kind=?" in p for p in plan), plan
        else:  # an empty table is read in full whatever its indexes: ask whether the index can serve
            c.execute(sa.text("SET enable_seqscan = off"))
            plan = [str(r[0]) for r in c.execute(sa.text("EXPLAIN " + sql))]
            assert any("ix_event_kind_invoice_id" in p for p in plan), plan


def test_a_dry_run_lists_the_replies_and_instalment_reminders_a_pass_would_send(
        engine: Engine, db_url: str, with_plan: tuple[Config, SmtpSink], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """tick --dry-run lists, like the reminders, a person's reply waiting in the outbox (sent by
    any pass, whatever the hour) and the instalment reminder whose day has come (queued and sent
    inside the window only: on a Saturday it is listed for when the window opens); nothing is
    recorded."""
    from tests.test_contract_like import toml_dump

    monkeypatch.setenv("RELANCE_LANG", "en")
    cfg, sink = with_plan
    replies.queue(engine, cfg, 1, "answer_dispute", None, NOW, "cli:me")  # to a@client.example about F-1
    (tmp_path / "config.toml").write_text(toml_dump(merge(EXAMPLE, {
        "database": {"url": db_url}, "smtp": {"host": "127.0.0.1", "port": cfg.smtp.port, "tls": "none",
                                              "username": ""}})))
    before = [rows(engine, f"SELECT count(*) FROM {t}") for t in ("outbound", "event")]
    config = ["--config", str(tmp_path / "config.toml")]
    assert main(["tick", *config, "--dry-run", "--now", "2027-04-27T10:00:00+02:00"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "would send  F-1  reply  100.00  Client A <a@client.example>" in lines
    assert "would send  F-2  instalment  400.00  Client B <b@client.example>" in lines
    assert lines[-1] == "2 message(s) due (dry run: nothing sent, nothing recorded)"
    assert main(["tick", *config, "--dry-run", "--now", "2027-05-01T10:00:00+02:00"]) == 0  # a Saturday
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["would send  F-1  reply  100.00  Client A <a@client.example>",
                         "1 message(s) due (dry run: nothing sent, nothing recorded)"]
    assert lines[2].startswith("outside the sending window: it opens 2027-05-03 Mon 09:00")
    assert "would send  F-2  instalment  400.00  Client B <b@client.example>" in lines[3:]
    assert [rows(engine, f"SELECT count(*) FROM {t}") for t in ("outbound", "event")] == before
    assert sink.received == []
