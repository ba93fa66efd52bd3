"""`[daemon] metrics_port`: the Prometheus text page. Its figures come from the store (so every
instance says the same), read against SQLite and PostgreSQL; the daemon serves it on loopback,
read with a real HTTP GET."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from bot import health, inbound, ledger
from bot.config import Config
from bot.mailbox import MemorySource
from bot.mailer import SmtpMailer
from bot.metrics import CONTENT_TYPE, render
from bot.sandbox import free_port
from bot.store import make_engine
from bot.tick import tick
from tests.conftest import at, no_sleep
from tests.servers import SmtpSink
from tests.test_daemon import daemon, wait_for
from tests.test_inbound_instances import claim


def samples(page: str) -> dict[str, float]:
    """`name{labels}` -> value, for each sample line of a page (checking the lines' shape)."""
    out = {}
    for line in page.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP \w+ .+|TYPE \w+ (counter|gauge))", line), line
            continue
        name, _, value = line.rpartition(" ")
        assert re.fullmatch(r'\w+(\{\w+="[^"]*"(,\w+="[^"]*")*\})?', name), line
        out[name] = float(value)
    return out


def test_the_figures_come_from_the_store(engine: Engine, smtp: tuple[SmtpSink, int],
                                         make_config: Callable[..., Config], tmp_path: Path) -> None:
    """Six reminders due: four sent, one refused for good (bounced), one deferred by a 451;
    a claim read from the mailbox; a failed pass of this process."""
    sink, port = smtp
    cfg = make_config(smtp={"host": "127.0.0.1", "port": port, "tls": "none", "username": "", "rate_per_minute": 0,
                            "retries": 0})
    path = tmp_path / "l.csv"
    path.write_text("number,client,email,amount,currency,issue_date,due_date\n" + "".join(
        f"F-{n},Client {n},c{n}@client.example,{100 + n}.00,EUR,2027-02-01,2027-03-01\n" for n in range(1, 7)))
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "l.csv")
    sink.refuse["c1@client.example"] = "550 5.1.1 no such user"
    sink.fail_data.append("451 4.3.0 try again later")
    now = at("2027-04-06T10:00")
    asyncio.run(tick(engine, cfg, SmtpMailer(cfg.smtp, None), now, datetime.now(UTC), sleep=no_sleep))
    inbound.sync(engine, MemorySource({"INBOX": [claim(6)]}), cfg, now, inbound.SyncReport(), threading.Event())
    errors = health.errors["imap"]
    health.beat(engine, "imap", datetime.now(UTC), "connection lost")

    got = samples(render(engine))
    assert got['relance_reminders_sent_total{stage="reminder"}'] == 4  # six due: one bounced, one deferred
    assert got['relance_reminders_bounced_total{stage="reminder"}'] == 1
    assert got['relance_reminders_deferred{stage="reminder"}'] == 1
    assert got["relance_reminders_waiting"] == 1
    assert got['relance_replies_total{kind="payment_claim"}'] == 1
    assert got["relance_messages_waiting"] == 0 and got["relance_triage_backlog"] == 0
    assert got["relance_database_up"] == 1
    assert got["relance_last_send_timestamp_seconds"] > 0
    assert got['relance_component_failing{component="imap"}'] == 1
    assert got['relance_process_errors_total{component="imap"}'] == errors + 1


def test_a_database_that_does_not_answer_is_a_figure_not_an_error() -> None:
    engine = make_engine(f"postgresql+psycopg://relance@127.0.0.1:{free_port()}/none")  # nothing listens
    got = samples(render(engine))
    assert got["relance_database_up"] == 0
    assert 'relance_process_errors_total{component="scheduler"}' in got
    assert not any(name.startswith("relance_reminders") for name in got)


def test_relance_run_serves_the_page_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    with daemon(tmp_path, 0, metrics_port=port) as run:
        wait_for(lambda: len(run.sink.received) == 5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"] == CONTENT_TYPE
            got = samples(r.read().decode())
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        assert e.value.code == 404
        e.value.close()
    assert run.proc.returncode == 0, run.err
    assert got['relance_reminders_sent_total{stage="reminder"}'] == 5
    assert got["relance_database_up"] == 1 and got["relance_reminders_waiting"] == 0
    assert f"metrics: http://127.0.0.1:{port}/metrics" in run.err


def test_a_metrics_port_in_use_stops_the_daemon_at_start_with_the_reason(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with daemon(tmp_path, 0, metrics_port=port) as run:
            run.proc.wait(60)
    assert run.proc.returncode == 1
    assert f"daemon.metrics_port = {port}: cannot listen on 127.0.0.1:{port}: Address already in use" in run.err
    assert "Traceback" not in run.err
