"""Two instances on one store (SQLite and PostgreSQL): the one that loses the race for a message
stays quiet and counts only what it cancelled itself."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import ledger
from bot.config import Config
from bot.mailer import MemoryMailer
from bot.models import Outbound, table
from bot.outbox import Outbox
from bot.render import Renderer
from bot.tick import TickReport, deliver, plan_groups
from bot.views import load
from tests.conftest import at

HEADER = "number,client,email,amount,currency,issue_date,due_date\n"
NOW = at("2027-04-05T10:00")


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
def two(engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> tuple[Outbox, Outbox, Config]:
    config = make_config(smtp={"rate_per_minute": 0})
    path = tmp_path / "ledger.csv"
    path.write_text(HEADER + "".join(f"F-{i},Client {i},c{i}@client.example,100.00,EUR,2027-03-01,2027-03-31\n"
                                     for i in range(5)), encoding="utf-8")
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "ledger.csv")
    renderer = Renderer(config.company)
    return (Outbox(engine, config, renderer, NOW, datetime.now(UTC), instance="host-a:1"),
            Outbox(engine, config, renderer, NOW, datetime.now(UTC), instance="host-b:2"), config)


def test_queueing_what_another_instance_queued_is_quiet(engine: Engine, two: tuple[Outbox, Outbox, Config],
                                                        capfd: pytest.CaptureFixture[str],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """No driver noise (psycopg logs `error ignored terminating <Pipeline>` when a batch insert
    fails in pipeline mode: with no logging set up, Python prints it on stderr)."""
    a, b, config = two
    with engine.connect() as c:
        groups = [p.group for p in plan_groups(load(c), config, NOW)]
    assert len(a.queue(groups)) == 5
    assert b.queue(groups) == [], "the unique reminder key refuses the second instance's"
    out, err = capfd.readouterr()
    assert err == "" and out == "", err
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_messages_claimed_by_another_instance_are_not_counted_cancelled(
        engine: Engine, two: tuple[Outbox, Outbox, Config], capfd: pytest.CaptureFixture[str]) -> None:
    """What another instance is rendering or has claimed is left to it: not sent here, not counted
    cancelled here."""
    a, b, config = two
    with engine.connect() as c:
        ids = a.queue([p.group for p in plan_groups(load(c), config, NOW)])
    rendering = a.take(2)
    a.store_prepared(a.prepare(a.take(1)))
    assert len(a.claim_prepared(50)) == 1

    report = TickReport()
    mailer = MemoryMailer()
    asyncio.run(deliver(b, mailer, config, report, _no_sleep))
    assert len(report.sent) == 2 and report.cancelled == 0, report
    assert rendering == ids[:2] and len(mailer.sent) == 2
    _, err = capfd.readouterr()
    assert err == "", err


def test_instances_claim_chunks_without_waiting_on_each_other(
        engine: Engine, two: tuple[Outbox, Outbox, Config]) -> None:
    """PostgreSQL: while one instance's claim holds its rows, another claims the next ones at once
    (SELECT ... FOR UPDATE SKIP LOCKED), rather than queuing behind it or taking the same."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite: one writer at a time, one daemon per file")
    a, b, config = two
    with engine.connect() as c:
        ids = a.queue([p.group for p in plan_groups(load(c), config, NOW)])
    a.store_prepared(a.prepare(a.take(5)))
    out = table(Outbound)
    got: list[list[int]] = []
    with engine.connect() as c, c.begin():  # an instance in the middle of claiming the first two
        c.execute(sa.select(out.c.id).where(out.c.status == "prepared").order_by(out.c.id).limit(2)
                  .with_for_update())
        worker = threading.Thread(target=lambda: got.append([p.outbound_id for p in b.claim_prepared(50)]))
        worker.start()
        worker.join(10)
        waited = worker.is_alive()
    worker.join()
    assert not waited, "the second claim waited for the first"
    assert got == [ids[2:]]


def test_an_instance_that_loses_the_queueing_race_records_the_rest_at_once(
        engine: Engine, two: tuple[Outbox, Outbox, Config]) -> None:
    """Instances started together plan the same reminders: the one that comes second records
    those left in one more transaction, not one transaction per reminder."""
    a, b, config = two
    with engine.connect() as c:
        groups = [p.group for p in plan_groups(load(c), config, NOW)]
    assert len(a.queue(groups[:3])) == 3
    transactions: list[str] = []
    sa.event.listen(engine, "commit", lambda _: transactions.append("commit"))
    sa.event.listen(engine, "rollback", lambda _: transactions.append("rollback"))
    assert len(b.queue(groups)) == 2
    assert transactions.count("commit") == 1 and transactions.count("rollback") <= 2, transactions
