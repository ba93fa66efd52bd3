"""Reminders rendered ahead of their sending (SQLite and PostgreSQL): what changes between the
rendering and the sending is seen by the claim, a large batch is rendered in a worker process, and
a crash leaves at most one message in doubt."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import actions, ledger
from bot.config import Config
from bot.mailer import MemoryMailer
from bot.models import Outbound, Reminder, table
from bot.outbox import Outbox
from bot.render import Renderer
from bot.tick import TickReport, deliver, plan_groups, tick
from bot.views import load
from tests.conftest import at

HEADER = "number,client,email,amount,currency,issue_date,due_date\n"
NOW = at("2027-04-05T10:00")


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
def config(engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> Config:
    """Five invoices whose first reminder is due at NOW, F-0 the largest."""
    path = tmp_path / "ledger.csv"
    path.write_text(HEADER + "".join(f"F-{i},Client {i},c{i}@client.example,{900 - i}.00,EUR,2027-03-01,2027-03-31\n"
                                     for i in range(5)), encoding="utf-8")
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "ledger.csv")
    cfg: Config = make_config(smtp={"rate_per_minute": 0})
    return cfg


def _outbox(engine: Engine, config: Config, now: datetime = NOW, instance: str | None = None) -> Outbox:
    return Outbox(engine, config, Renderer(config.company), now, datetime.now(UTC), instance=instance)


def _prepare_all(engine: Engine, config: Config, now: datetime = NOW) -> list[int]:
    outbox = _outbox(engine, config, now)
    with engine.connect() as c:
        ids = outbox.queue([p.group for p in plan_groups(load(c), config, now)])
    outbox.store_prepared(outbox.prepare(outbox.take(50)))
    return ids


def _statuses(engine: Engine) -> dict[str, int]:
    out = table(Outbound)
    with engine.connect() as c:
        return dict(c.execute(sa.select(out.c.status, sa.func.count()).group_by(out.c.status)).all())  # type: ignore[arg-type]


def _text(data: bytes) -> str:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_a_payment_between_rendering_and_claim_cancels_the_reminder(engine: Engine, config: Config) -> None:
    """The claim re-checks the invoice: paid since it was rendered, the message is cancelled, not sent."""
    _prepare_all(engine, config)
    actions.record_payment(engine, "F-0", NOW, None, "bank feed")
    outbox = _outbox(engine, config)
    claimed = outbox.claim_prepared(50)
    assert [p.numbers for p in claimed] == [("F-1",), ("F-2",), ("F-3",), ("F-4",)]
    assert outbox.cancelled == 1 and _statuses(engine) == {"cancelled": 1, "claimed": 4}
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(table(Reminder))).scalar_one() == 4, \
            "the stage is freed: it goes out if the invoice is due again"


def test_a_part_payment_after_rendering_is_rendered_again_with_the_amount_due(engine: Engine, config: Config) -> None:
    """A letter states the amount due: a part payment since it was rendered renders it again."""
    _prepare_all(engine, config)
    actions.record_payment(engine, "F-0", NOW, Decimal("400.00"), "bank feed")
    (first, *_) = _outbox(engine, config).claim_prepared(50)
    assert first.numbers == ("F-0",) and first.paid == Decimal("400.00") and "500,00" in _text(first.data)


def test_a_message_rendered_yesterday_is_rendered_again(engine: Engine, config: Config) -> None:
    """Its date and the interest to date are those of the day it goes."""
    _prepare_all(engine, config)
    later = at("2027-04-06T09:00")
    claimed = _outbox(engine, config, later).claim_prepared(50)
    assert len(claimed) == 5
    assert {message_from_bytes(p.data)["Date"] for p in claimed} == {"Tue, 06 Apr 2027 09:00:00 +0200"}


def test_a_dead_instance_leaves_one_message_in_doubt_and_the_rest_is_sent_once(
        engine: Engine, config: Config) -> None:
    """Killed after claiming a chunk, while the server had its first message: that one is
    uncertain; the others of its chunk, and those it was rendering, are sent by the next pass."""
    dead = _outbox(engine, config, instance=f"{socket.gethostname()}:999999999")
    with engine.connect() as c:
        dead.queue([p.group for p in plan_groups(load(c), config, NOW)])
    dead.store_prepared(dead.prepare(dead.take(3)))
    chunk = dead.claim_prepared(50)
    assert len(chunk) == 3 and dead.mark_sending(chunk[0])
    dead.take(2)  # ... and it was rendering the last two
    dead.close()
    mailer = MemoryMailer()
    report = asyncio.run(tick(engine, config, mailer, at("2027-04-05T10:30"), datetime.now(UTC), sleep=_no_sleep))
    assert len(report.uncertain) == 1 and len(report.sent) == 4
    sent = [message_from_bytes(raw)["X-Relance-Invoices"] for _, _, raw in mailer.sent]
    assert sorted(sent) == ["F-1", "F-2", "F-3", "F-4"]
    assert _statuses(engine) == {"uncertain": 1, "sent": 4}


def _events(engine: Engine, kind: str) -> list[str]:
    with engine.connect() as c:
        return sorted(c.execute(sa.text("SELECT i.number FROM event e JOIN invoice i ON i.id = e.invoice_id "
                                        "WHERE e.kind = :k"), {"k": kind}).scalars())


def test_a_dead_batch_delivered_all_but_its_last_mark(engine: Engine, config: Config) -> None:
    """Killed after two deliveries not yet recorded and a third marked: the two are recorded sent
    (with their events), the third is in doubt, the other two are sent by the next pass; nothing
    goes twice."""
    dead = _outbox(engine, config, instance=f"{socket.gethostname()}:999999999")
    with engine.connect() as c:
        dead.queue([p.group for p in plan_groups(load(c), config, NOW)])
    dead.store_prepared(dead.prepare(dead.take(5)))
    chunk = dead.claim_prepared(50)
    for p in chunk[:2]:
        assert dead.mark_sending(p)
        dead.delivered(p, [])
    assert dead.mark_sending(chunk[2])
    dead.close()
    assert _statuses(engine) == {"sending": 3, "claimed": 2}, "deliveries are recorded together, later"
    mailer = MemoryMailer()
    report = asyncio.run(tick(engine, config, mailer, at("2027-04-05T10:30"), datetime.now(UTC), sleep=_no_sleep))
    assert len(report.uncertain) == 1 and "F-2" not in str(report.sent)
    assert sorted(message_from_bytes(raw)["X-Relance-Invoices"] for _, _, raw in mailer.sent) == ["F-3", "F-4"]
    assert _statuses(engine) == {"sent": 4, "uncertain": 1}
    assert _events(engine, "reminder_sent") == ["F-0", "F-1", "F-3", "F-4"]
    assert _events(engine, "delivery_uncertain") == ["F-2"]


def test_two_dead_batches_each_leave_their_last_mark_in_doubt(engine: Engine, config: Config) -> None:
    """The order of the marks says something within one pass only: one message left `sending` by
    each of two passes of the same process is in doubt, both."""
    dead = f"{socket.gethostname()}:999999999"
    with engine.connect() as c:
        _outbox(engine, config, instance=dead).queue([p.group for p in plan_groups(load(c), config, NOW)])
    for start in (0, 1):
        one = Outbox(engine, config, Renderer(config.company), NOW, datetime(2027, 4, 5, 8, start, tzinfo=UTC),
                     instance=dead)
        one.store_prepared(one.prepare(one.take(1)))
        (p,) = one.claim_prepared(1)
        assert one.mark_sending(p)
        one.close()
    later = Outbox(engine, config, Renderer(config.company), NOW, datetime(2027, 4, 5, 8, 2, tzinfo=UTC))
    assert len(later.resolve_stale()) == 2
    assert _statuses(engine) == {"uncertain": 2, "pending": 3}


def test_a_pass_longer_than_the_lease_keeps_its_messages(engine: Engine, config: Config) -> None:
    """An instance on another host sends for longer than LEASE (a large batch, a low rate limit):
    what it takes, claims and marks is dated by its clock then, so another instance neither gives
    its claims back nor calls the message it is sending in doubt; once it stops, they are settled
    as a dead one's."""
    start = datetime(2027, 4, 5, 8, 0, tzinfo=UTC)
    alive = [start]
    long = Outbox(engine, config, Renderer(config.company), NOW, start, instance="elsewhere:1",
                  wall_clock=lambda: alive[0])
    with engine.connect() as c:
        long.queue([p.group for p in plan_groups(load(c), config, NOW)])
    long.store_prepared(long.prepare(long.take(5)))
    (first,) = long.claim_prepared(1)
    assert long.mark_sending(first)
    long.delivered(first)
    alive[0] = start + timedelta(minutes=20)  # twenty minutes into the pass, a chunk
    assert len(long.claim_prepared(1)) == 1
    alive[0] = start + timedelta(minutes=22)  # and the next, its first message being sent
    (second,) = long.claim_prepared(1)
    assert long.mark_sending(second)
    for minute in (21, 23):
        other = Outbox(engine, config, Renderer(config.company), NOW, start + timedelta(minutes=minute),
                       instance="here:2")
        assert other.resolve_stale() == []
        assert _statuses(engine) == {"sent": 1, "sending": 1, "claimed": 1, "prepared": 2}, minute
    later = Outbox(engine, config, Renderer(config.company), NOW, start + timedelta(minutes=38), instance="here:2")
    assert len(later.resolve_stale()) == 1  # it stopped 16 minutes ago
    assert _statuses(engine) == {"sent": 1, "uncertain": 1, "prepared": 3}
    long.close()


def test_a_claim_starts_its_own_lease(engine: Engine, config: Config) -> None:
    """A lease left by an earlier claimant (whose clock may run ahead) does not keep a later,
    dead claimant's messages held."""
    start = datetime(2027, 4, 5, 8, 0, tzinfo=UTC)
    dead = Outbox(engine, config, Renderer(config.company), NOW, start, instance="elsewhere:1",
                  wall_clock=lambda: start)
    with engine.connect() as c:
        dead.queue([p.group for p in plan_groups(load(c), config, NOW)])
    with engine.begin() as c:  # dated by another host whose clock was a day ahead, then given back
        c.execute(sa.update(table(Outbound)).values(lease_at=start + timedelta(days=1)))
    dead.store_prepared(dead.prepare(dead.take(5)))
    (p,) = dead.claim_prepared(1)
    assert dead.mark_sending(p)
    dead.close()
    later = Outbox(engine, config, Renderer(config.company), NOW, start + timedelta(minutes=16), instance="here:2")
    assert len(later.resolve_stale()) == 1
    assert _statuses(engine) == {"uncertain": 1, "prepared": 4}


def test_a_failure_is_recorded_with_the_deliveries_before_it(engine: Engine, config: Config) -> None:
    """A refusal is recorded at once, and the messages delivered before it with it: a crash then
    leaves nothing `sending`."""
    outbox = _outbox(engine, config)
    _prepare_all(engine, config)
    first, second, *_ = outbox.claim_prepared(50)
    assert outbox.mark_sending(first)
    outbox.delivered(first, [])
    assert outbox.mark_sending(second)
    outbox.mark_refused(second.outbound_id, "550 5.1.1 no such mailbox")
    outbox.close()
    assert _statuses(engine) == {"sent": 1, "failed": 1, "claimed": 3}
    assert _events(engine, "reminder_sent") == ["F-0"]


def test_stopping_gives_back_the_chunk_claimed_ahead(engine: Engine, make_config: Callable[..., Config],
                                                    config: Config) -> None:
    """Two at a time (a rate limit), the next pair claimed while one is sent (in a thread on
    PostgreSQL): stopped after three, nothing is left claimed, and the next pass sends the rest."""
    paced: Config = make_config(smtp={"rate_per_minute": 120})
    stop = asyncio.Event()

    class Stopping(MemoryMailer):
        async def send(self, sender: str, recipients: list[str], data: bytes,
                       ready: Callable[[], Awaitable[None]] | None = None) -> list[str]:
            refused = await super().send(sender, recipients, data, ready)
            if len(self.sent) == 3:
                stop.set()
            return refused

    mailer = Stopping()
    report = asyncio.run(tick(engine, paced, mailer, NOW, datetime.now(UTC), sleep=_no_sleep, stop=stop))
    assert len(report.sent) == 3 and report.aborted.startswith("stopped on request")
    assert set(_statuses(engine)) <= {"sent", "prepared", "pending"} and _statuses(engine)["sent"] == 3
    later = MemoryMailer()
    asyncio.run(tick(engine, paced, later, NOW, datetime.now(UTC), sleep=_no_sleep))
    everything = [message_from_bytes(raw)["X-Relance-Invoices"] for _, _, raw in mailer.sent + later.sent]
    assert everything == ["F-0", "F-1", "F-2", "F-3", "F-4"] and _statuses(engine) == {"sent": 5}


def test_a_large_batch_is_rendered_in_a_worker_process(engine: Engine, config: Config) -> None:
    """The same messages, once each, in priority order, rendered by a worker process."""
    outbox = _outbox(engine, config)
    with engine.connect() as c:
        outbox.queue([p.group for p in plan_groups(load(c), config, NOW)])
    report = TickReport()
    mailer = MemoryMailer()

    async def run() -> None:
        async with mailer:
            await deliver(outbox, mailer, config, report, _no_sleep, parallel_from=1)

    asyncio.run(run())
    sent = [message_from_bytes(raw)["X-Relance-Invoices"] for _, _, raw in mailer.sent]
    assert sent == ["F-0", "F-1", "F-2", "F-3", "F-4"] and _statuses(engine) == {"sent": 5}
    assert report.rendered_in_worker == 5


def test_a_worker_process_that_dies_leaves_its_chunk_to_this_process(engine: Engine, config: Config) -> None:
    """Killed (the OOM killer, a limit), the rendering process costs time, not messages."""
    import os
    import signal

    from bot.prepare import Preparer

    outbox = _outbox(engine, config)
    with engine.connect() as c:
        outbox.queue([p.group for p in plan_groups(load(c), config, NOW)])

    async def run() -> int:
        with Preparer(outbox, 5, chunk=2, parallel_from=1) as preparer:
            assert preparer.pool is not None
            preparer.pool.submit(os.getpid).result()  # started
            for pid in list(preparer.pool._processes):  # the worker it started, killed
                os.kill(pid, signal.SIGKILL)
            while await preparer.more():
                preparer.feed()
            return preparer.rendered_in_worker

    assert asyncio.run(run()) == 0
    assert _statuses(engine) == {"prepared": 5}


def test_a_large_batch_is_queued_a_chunk_at_a_time_in_one_transaction(engine: Engine, config: Config,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The messages, reminders and events of QUEUE_CHUNK groups at most are built and written
    together (what a batch of 100,000 holds in memory), in one transaction for the whole batch."""
    from bot import outbox as outbox_module

    monkeypatch.setattr(outbox_module, "QUEUE_CHUNK", 2)
    chunks: list[int] = []
    connections: set[int] = set()
    write = Outbox._queue

    def spy(self: Outbox, s: sa.Connection, groups: list[object]) -> list[int]:
        chunks.append(len(groups))
        connections.add(id(s))
        return write(self, s, groups)  # type: ignore[arg-type]

    monkeypatch.setattr(Outbox, "_queue", spy)
    with engine.connect() as c:
        groups = [p.group for p in plan_groups(load(c), config, NOW)]
    ids = _outbox(engine, config).queue(groups)
    assert len(ids) == 5 and chunks == [2, 2, 1] and len(connections) == 1
    with engine.connect() as c:
        rem = table(Reminder)
        assert c.execute(sa.select(sa.func.count()).select_from(rem)).scalar_one() == 5
