"""`relance status --health`: the daemon's parts write heartbeats; the report says what works, what
fails and since when, and exits 1 when a part has failed longer than the configured time."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from bot import health
from tests.conftest import at


def test_a_part_failing_too_long_makes_the_daemon_unhealthy(engine: Engine) -> None:
    t0 = at("2027-04-12T09:00")
    health.beat(engine, "imap", t0, "cannot reach IMAP server imap.example: timed out")
    health.beat(engine, "imap", t0 + timedelta(minutes=10), "cannot reach IMAP server imap.example: timed out")
    health.beat(engine, "scheduler", t0)
    with engine.connect() as c:
        early = health.report(c, t0 + timedelta(minutes=20), 30)
        late = health.report(c, t0 + timedelta(minutes=31), 30)
    assert early["healthy"], "failing for 20 minutes, 30 allowed"
    imap = late["components"]["imap"]
    assert not late["healthy"] and not imap["ok"] and imap["failing_since"].startswith("2027-04-12T07:00")
    assert "timed out" in imap["last_error"] and late["components"]["scheduler"]["ok"]
    health.beat(engine, "imap", t0 + timedelta(minutes=32))
    with engine.connect() as c:
        again = health.report(c, t0 + timedelta(minutes=33), 30)
    assert again["healthy"] and again["components"]["imap"]["failing_since"] is None
    assert again["errors_last_hour"] == ["imap"] and again["schema"]


def test_status_health_from_the_command_line(cli: Any) -> None:
    assert cli("init").returncode == 0
    r = cli("status", "--health", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["healthy"], r.stderr
    from bot import store

    engine = store.make_engine(f"sqlite:///{cli.work / 'relance.db'}")
    health.beat(engine, "smtp", at("2027-04-12T09:00"), "421 service not available")
    engine.dispose()
    r = cli("status", "--health", "--now", "2027-04-12T10:00:00+02:00")
    assert r.returncode == 1 and "NOT HEALTHY" in r.stdout and "421 service not available" in r.stdout, r.stdout
