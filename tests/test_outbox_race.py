"""Two instances on one store (SQLite and PostgreSQL): the one that loses the race for a message
stays quiet and counts only what it cancelled itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from bot import ledger
from bot.config import Config
from bot.mailer import MemoryMailer
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
    a, b, config = two
    with engine.connect() as c:
        ids = a.queue([p.group for p in plan_groups(load(c), config, NOW)])

    class Racing(MemoryMailer):
        """While b sends its first message (its chunk already rendered), a claims three more."""

        async def send(self, sender: str, recipients: list[str], data: bytes) -> list[str]:
            if not self.sent:
                for i in ids[1:4]:
                    assert a.claim(i) is not None
            return await super().send(sender, recipients, data)

    report = TickReport()
    asyncio.run(deliver(b, Racing(), ids, config, report, _no_sleep))
    assert len(report.sent) == 2 and report.cancelled == 0, report
    _, err = capfd.readouterr()
    assert err == "", err
