"""The crash harness (bench/crash.py) in reduced form: `relance run` SIGKILLed at random moments
while it sends and reads mail, against Dovecot and an SMTP server on loopback."""

from __future__ import annotations

from bench.crash import run


def test_killed_at_random_it_sends_nothing_twice_and_loses_no_mail() -> None:
    out = run(kills=6, invoices=40, replies=40, seed=7, log=False)
    print("\n".join(out.lines()))
    assert out.duplicates == [], "no reminder received twice"
    assert out.missing == [], "every reminder due was sent, or recorded uncertain"
    assert out.uncertain <= out.kills, "at most one message in doubt per kill"
    assert (out.stored, out.stored_twice, out.unprocessed) == (out.mailbox, [], 0), "every message stored once"
    assert out.applied_twice == [], "every effect applied once"
