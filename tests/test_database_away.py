"""The database going away under a running daemon (what bench/crash.py --faults found): the loops
meet SQLAlchemy's error whatever statement met it, say once what they wait for, try again within
seconds, and settle what the interrupted pass left half-way."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import ledger, logs
from bot.config import Config
from bot.daemon import next_try_seconds
from bot.driver import DriverConnection
from bot.errors import MailboxError
from bot.models import Event, Outbound, table
from bot.outbox import Outbox
from bot.render import Renderer
from bot.store import TRANSIENT_DB
from bot.tick import _plan_due
from bot.watcher import DATABASE_BACKOFF, MAX_BACKOFF, Watcher
from tests.conftest import at

NOW = at("2027-04-06T10:00")
out_t = table(Outbound)


def test_a_connection_lost_mid_transaction_is_the_error_the_loops_wait_on(engine: Engine) -> None:
    """The send loop's own connection (bot/driver.py) raised psycopg's error, which no loop caught:
    the daemon ended. It is now SQLAlchemy's, and the dead connection leaves the pool."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL: a connection the server ends")
    driver = DriverConnection(engine)
    backend = driver.pooled.driver_connection.info.backend_pid  # type: ignore[union-attr]
    with engine.connect() as c:
        c.execute(sa.select(sa.func.pg_terminate_backend(backend)))
    with pytest.raises(TRANSIENT_DB):
        driver.transaction([(sa.select(sa.literal(1)), {})])
    driver.close()
    with engine.connect() as c:  # the pool hands out a live connection
        assert c.execute(sa.select(sa.literal(1))).scalar() == 1


@pytest.mark.parametrize(("tick", "failures", "seconds"), [
    (15, 1, 5), (15, 2, 10), (15, 5, 80), (15, 9, 900), (1, 1, 5), (1, 4, 40), (1, 5, 60), (1, 200, 60),
])
def test_the_scheduler_tries_again_within_seconds_when_the_database_did_not_answer(
        tick: int, failures: int, seconds: float) -> None:
    """It used to wait a whole tick (15 min by default) after the database came back."""
    assert next_try_seconds(tick, failures) == seconds


@pytest.mark.parametrize(("error", "most", "said"), [
    (sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused\n\tIs the server running?")),
     DATABASE_BACKOFF, "mail: waiting for the database (connection refused); retrying in 10 s"),
    (MailboxError("connection lost when leaving IDLE"), MAX_BACKOFF,
     "mail: connection lost when leaving IDLE; retrying in 300 s"),
])
def test_the_watcher_waits_for_the_database_at_most_ten_seconds_at_a_time(
        engine: Engine, make_config: Callable[..., Config], caplog: pytest.LogCaptureFixture,
        error: Exception, most: float, said: str) -> None:
    stop = threading.Event()
    stop.set()  # no waiting here
    watcher = Watcher(engine, make_config(), stop)
    with caplog.at_level(logging.INFO, logger="relance"):
        assert watcher._failed(error, None, 1000.0, "") == most
    assert [r.getMessage() for r in caplog.records] == [said]


def test_a_pass_the_database_left_half_way_is_settled_by_the_next(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> None:
    """Its claims were the instance's own, so `resolve_stale` left them for 15 minutes (LEASE):
    nothing was sent meanwhile. The daemon's next pass settles them at once: claimed and
    preparing go back, the one `sending` is uncertain (the server may have it), another
    instance's claim is left alone."""
    cfg = make_config(schedule={"business_days_only": False, "holidays": ""})
    path = tmp_path / "l.csv"
    path.write_text("number,client,email,amount,currency,issue_date,due_date\n" + "".join(
        f"F-{n},Client {n},c{n}@client.example,100.00,EUR,2027-02-01,2027-03-01\n" for n in range(4)))
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "l.csv")
    mine = Outbox(engine, cfg, Renderer.from_config(cfg), NOW, datetime.now(UTC), instance="here:1")
    ids = mine.queue([p.group for p in _plan_due(engine, cfg, NOW)])
    assert len(ids) == 4
    left = {ids[0]: ("claimed", "here:1"), ids[1]: ("preparing", "here:1"), ids[2]: ("sending", "here:1"),
            ids[3]: ("claimed", "there:2")}
    with engine.begin() as c:
        for oid, (status, who) in left.items():
            c.execute(sa.update(out_t).where(out_t.c.id == oid).values(status=status, claimed_by=who,
                                                                        claimed_at=datetime.now(UTC)))
    assert mine.resolve_stale() == [], "a live instance's claims wait for LEASE"
    uncertain = mine.resolve_own()
    with engine.connect() as c:
        got = dict(c.execute(sa.select(out_t.c.id, out_t.c.status).where(out_t.c.id.in_(ids))).all())
        mid = c.execute(sa.select(out_t.c.message_id).where(out_t.c.id == ids[2])).scalar()
        events = c.execute(sa.select(sa.func.count()).where(table(Event).c.kind == "delivery_uncertain")).scalar()
    assert got == {ids[0]: "prepared", ids[1]: "pending", ids[2]: "uncertain", ids[3]: "claimed"}
    assert uncertain == [mid] and events == 1


def test_the_pools_traceback_for_a_lost_connection_is_not_logged(capsys: pytest.CaptureFixture[str]) -> None:
    """SQLAlchemy's pool logs a traceback when it cannot roll back a connection the server dropped
    (it discards it anyway): one per connection, after the line that says the database is away."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("text")
        pool = logging.getLogger("sqlalchemy.pool.impl.QueuePool")
        for error in (sa.exc.OperationalError(None, None, Exception("the connection is lost")), ValueError("a bug")):
            pool.error("Exception during reset or similar", exc_info=(type(error), error, None))
    finally:
        root.handlers[:], root.level = handlers, level
    err = capsys.readouterr().err
    assert err.count("Exception during reset or similar") == 1 and "ValueError: a bug" in err
    assert "the connection is lost" not in err
