"""Faults the outbox meets at the server (aiosmtpd on loopback, SQLite and PostgreSQL): a 421 or a
dropped connection is about the server, so the batch stops at once, keeps the rest pending and
says so in one line; the daemon backs off."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import ledger
from bot.config import Config
from bot.daemon import next_pass_seconds
from bot.mailer import SmtpMailer
from bot.models import Outbound, table
from bot.tick import TickReport, tick
from tests.conftest import at, no_sleep
from tests.servers import SmtpSink

HEADER = "number,client,email,amount,currency,issue_date,due_date\n"


def _run(engine: Engine, config: Config, now: str) -> TickReport:
    return asyncio.run(tick(engine, config, SmtpMailer(config.smtp, None), at(now), datetime.now(UTC),
                            sleep=no_sleep))


def _pending(engine: Engine) -> int:
    """Queued and not sent: pending, or rendered already (prepared)."""
    out = table(Outbound)
    with engine.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).where(out.c.status.in_(("pending", "prepared")))).scalar_one())


def _ten_due(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "ledger.csv"
    path.write_text(HEADER + "".join(f"F-{i},Client {i},c{i}@client.example,{100 + i}.00,EUR,2027-03-01,2027-03-31\n"
                                     for i in range(10)), encoding="utf-8")
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "ledger.csv")


@pytest.mark.parametrize("fault", ["421 on MAIL", "421 on RCPT", "connection dropped"])
def test_an_unavailable_server_stops_the_batch_and_keeps_the_rest_pending(
        engine: Engine, smtp: tuple[SmtpSink, int], make_config: Callable[..., Config], tmp_path: Path,
        fault: str) -> None:
    sink, port = smtp
    config = make_config(smtp={"host": "127.0.0.1", "port": port, "tls": "none", "username": "",
                               "rate_per_minute": 0, "retries": 2, "retry_backoff_seconds": "0.01"})
    _ten_due(engine, tmp_path)
    seen: list[str] = []

    async def mail(server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        seen.append(address)
        if fault == "connection dropped":
            server.transport.close()
            return "250 OK"
        if fault == "421 on MAIL":
            return "421 4.3.2 Service shutting down, try later"
        envelope.mail_from = address
        return "250 OK"

    async def rcpt(server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return "421 4.7.0 Too many connections"

    sink.handle_MAIL = mail  # type: ignore[attr-defined]
    if fault == "421 on RCPT":
        sink.handle_RCPT = rcpt  # type: ignore[method-assign]
    report = _run(engine, config, "2027-04-05T10:00")
    assert report.sent == [] and report.failed == [] and report.uncertain == []
    assert report.deferred == [], "one line for the batch, not one per message"
    assert report.server_unavailable and "10 message(s) left pending" in report.aborted, report.aborted
    assert len(seen) == 1, f"{len(seen)} MAIL commands: the batch went on against an unavailable server"
    assert _pending(engine) == 10

    del sink.handle_MAIL  # type: ignore[attr-defined]
    if fault == "421 on RCPT":
        del sink.handle_RCPT  # type: ignore[attr-defined]
    report = _run(engine, config, "2027-04-05T10:15")
    assert len(report.sent) == 10 and len(sink.received) == 10 and _pending(engine) == 0


@pytest.mark.parametrize(("unavailable", "seconds"),
                         [(0, 900), (1, 30), (2, 60), (3, 120), (6, 960), (8, 3840), (9, 7200), (40, 7200)])
def test_the_daemon_tries_again_soon_then_backs_off_while_the_server_is_unavailable(unavailable: int,
                                                                                      seconds: float) -> None:
    assert next_pass_seconds(15, unavailable) == seconds


def test_nothing_waits_for_the_rate_limiter_marked_sending(
        engine: Engine, smtp: tuple[SmtpSink, int], make_config: Callable[..., Config], tmp_path: Path) -> None:
    """Killed while it waits for the rate limiter, the outbox must leave the next message queued
    (claimed or prepared, which a restart gives back; not `sending`, which a restart records
    uncertain though the server never got it) and the
    last one recorded sent (bench/crash.py found 22 of 23 uncertain messages unsent)."""
    from bot.outbox import Outbox
    from bot.render import Renderer
    from bot.tick import deliver, plan_groups
    from bot.views import load

    sink, port = smtp
    config = make_config(smtp={"host": "127.0.0.1", "port": port, "tls": "none", "username": "",
                               "rate_per_minute": 60})
    _ten_due(engine, tmp_path)
    now = at("2027-04-05T10:00")
    with engine.connect() as c:
        groups = [p.group for p in plan_groups(load(c), config, now)][:3]
    outbox = Outbox(engine, config, Renderer(config.company), now, datetime.now(UTC))
    outbox.queue(groups)
    seen: list[dict[str, int]] = []
    out = table(Outbound)

    async def limiter_sleep(_: float) -> None:  # the moment a kill would find
        with engine.connect() as c:
            seen.append(dict(c.execute(sa.select(out.c.status, sa.func.count()).group_by(out.c.status)).all()))

    async def run() -> None:
        async with SmtpMailer(config.smtp, None) as mailer:
            await deliver(outbox, mailer, config, TickReport(), limiter_sleep)

    asyncio.run(run())
    assert len(sink.received) == 3 and len(seen) == 2
    assert seen == [{"sent": 1, "claimed": 1, "prepared": 1}, {"sent": 2, "claimed": 1}], seen
