"""The crash and fault harness (bench/crash.py, bench/faults.py) in reduced form: `relance run`
SIGKILLed at random moments while it sends and reads mail, against Dovecot and an SMTP server on
loopback, on SQLite and three instances on PostgreSQL; then the servers taken away under it."""

from __future__ import annotations

import pytest

from bench.crash import Outcome, run


def _nothing_twice_nothing_lost(out: Outcome) -> None:
    assert out.duplicates == [], "no reminder received twice"
    assert out.missing == [], "every reminder due was sent, or recorded uncertain"
    assert out.uncertain <= out.kills, "at most one message in doubt per kill"
    assert (out.stored, out.stored_twice, out.unprocessed) == (out.mailbox, [], 0), "every message stored once"
    assert out.applied_twice == [], "every effect applied once"


def test_killed_at_random_it_sends_nothing_twice_and_loses_no_mail() -> None:
    out = run(kills=4, invoices=40, replies=40, seed=7, log=False)
    print("\n".join(out.lines()))
    _nothing_twice_nothing_lost(out)


@pytest.mark.postgres
def test_three_instances_on_postgresql_killed_at_random_send_nothing_twice_and_lose_no_mail() -> None:
    """Three `relance run` on one PostgreSQL database, one mailbox, one SMTP sink; one of them
    SIGKILLed at random and started again, each time; the watched folder's holder taken over."""
    out = run(kills=5, invoices=40, replies=40, seed=3, log=False, database="postgresql", instances=3)
    print("\n".join(out.lines()))
    _nothing_twice_nothing_lost(out)
    assert all(t < 30 for t in out.takeovers), "a folder whose holder died is read again within 30 s"


@pytest.mark.postgres
def test_servers_taken_away_under_running_daemons_lose_nothing_and_they_resume_alone() -> None:
    """Two daemons on PostgreSQL: the SMTP server stopped mid-batch, the IMAP connections cut
    mid-IDLE and mid-FETCH, the database stopped; each comes back and the daemons, never
    restarted, go on: one line a failure in their logs, no traceback, nothing lost or sent twice."""
    out = run(kills=0, invoices=20, replies=20, seed=5, log=False, database="postgresql", instances=2, faults=True,
              outage=4)
    print("\n".join(out.lines()))
    assert [f.name for f in out.faults] == ["SMTP gone mid-batch", "IMAP cut mid-IDLE", "IMAP cut mid-FETCH",
                                            "database away"]
    for f in out.faults:
        assert f.recovery is not None, f"{f.name}: the daemons resumed"
        assert (f.exited, f.tracebacks, f.stray) == (0, 0, 0), f"{f.name}: {f.said}"
    assert out.duplicates == [] and out.missing == [], "nothing sent twice, nothing lost"
    assert (out.stored, out.stored_twice, out.unprocessed, out.applied_twice) == (out.mailbox, [], 0, [])
