"""The faults of the harness (`python bench/crash.py --faults`): the servers a running daemon
depends on, taken away under it, and given back. For each, how long after the fault ended the
daemons worked again (with no restart), what they logged meanwhile, and whether one exited; the
harness then checks that nothing was lost and nothing sent or applied twice.

- SMTP gone mid-batch: the SMTP server stopped while the daemons send a batch, started again
  `outage` seconds later.
- IMAP cut mid-IDLE: every connection between the daemons and Dovecot cut (a TCP proxy) while
  they wait in IDLE; a message put in the mailbox right after.
- IMAP cut mid-FETCH: the same, while they fetch a large batch of messages.
- database away (PostgreSQL): the server stopped (immediate shutdown) while the daemons send and
  mail arrives, started again `outage` seconds later."""

from __future__ import annotations

import re
import time

from bench.crash import Fault, Rig

BATCH = 150  # reminders of a batch sent during a fault (15 s at 600 a minute, per instance)


def all_faults(rig: Rig, outage: float, log: bool = True) -> list[Fault]:
    out = []
    for fault in (smtp_gone, imap_cut_idle, imap_cut_fetch, database_gone):
        if fault is database_gone and rig.pg is None:
            continue
        f = fault(rig, outage)
        if log:
            print("\n".join([f.line(), *(f"    {s}" for s in f.said)]), flush=True)
        out.append(f)
    return out


def _sent_all(rig: Rig) -> None:
    """Wait until what was due before is sent: the next batch is the fault's alone."""
    rig.wait(lambda: rig.count("SELECT count(*) FROM outbound WHERE status IN ('sent', 'uncertain')")
             == len(rig.due), 600, 0.5)


def _batch_under_way(rig: Rig, prefix: str) -> int:
    """A batch of BATCH reminders queued, the daemons started again (a pass begins at each start),
    and back once ten of them are sent; returns the messages the sink had before the batch."""
    _sent_all(rig)
    before = len(rig.sink.times)
    rig.add_due(prefix, BATCH)
    rig.restart_all()
    sent = f"SELECT count(*) FROM outbound WHERE status = 'sent' AND to_addr LIKE '{prefix.lower()}-%'"
    if rig.wait(lambda: (rig.count(sent) or 0) >= 10, 120, 0.01) is None:
        raise RuntimeError(f"the {prefix} batch did not start: {rig.count(sent)} sent")
    return before


def smtp_gone(rig: Rig, outage: float) -> Fault:
    f = Fault("SMTP gone mid-batch", what="first reminder sent")
    before = _batch_under_way(rig, "S")
    marks, exits = rig.log_marks(), rig.exits
    rig.smtp_stop()
    time.sleep(outage)
    sent = len(rig.sink.times)
    rig.smtp_start()
    f.recovery = rig.wait(lambda: len(rig.sink.times) > sent, 900)
    f.said.append(f"{sent - before} of {BATCH} sent before the server went, the rest after")
    _observe(rig, f, marks, exits)
    return f


def imap_cut_idle(rig: Rig, _outage: float) -> Fault:
    f = Fault("IMAP cut mid-IDLE", what="the message stored")
    rig.wait(lambda: rig.stored() == rig.given, 300)
    time.sleep(3)  # every watcher back in IDLE
    marks, exits = rig.log_marks(), rig.exits
    cut = rig.proxy.cut()
    rig.append(1)
    f.recovery = rig.wait(lambda: rig.stored() == rig.given, 600)
    f.said.append(f"{cut} connection(s) cut")
    _observe(rig, f, marks, exits)
    return f


def imap_cut_fetch(rig: Rig, _outage: float) -> Fault:
    f = Fault("IMAP cut mid-FETCH", what="all 150 stored")
    rig.wait(lambda: rig.stored() == rig.given, 300)
    start, relayed = rig.given, rig.proxy.bytes
    marks, exits = rig.log_marks(), rig.exits
    rig.append(150, pad=40_000)  # 6 MB to fetch
    rig.wait(lambda: rig.proxy.bytes - relayed > 1_500_000, 120, 0.005)
    stored = (rig.stored() or 0) - start
    cut = rig.proxy.cut()
    f.recovery = rig.wait(lambda: rig.stored() == rig.given, 600)
    f.said.append(f"{cut} connection(s) cut after {(rig.proxy.bytes - relayed) // 1000} kB fetched, "
                  f"{stored} of 150 stored")
    _observe(rig, f, marks, exits)
    return f


def database_gone(rig: Rig, outage: float) -> Fault:
    f = Fault("database away", what="first reminder sent")
    assert rig.pg is not None
    before = _batch_under_way(rig, "B")
    marks, exits = rig.log_marks(), rig.exits
    rig.pg.stop()
    stopped = time.monotonic()
    rig.append(10)  # mail keeps arriving
    time.sleep(max(0.0, outage - (time.monotonic() - stopped)))
    sent = len(rig.sink.times)
    rig.pg.start()
    back = time.monotonic()
    first: dict[str, float] = {}

    def recovered() -> bool:
        for what, done in (("sent", lambda: len(rig.sink.times) > sent), ("stored", lambda: rig.stored() == rig.given)):
            if what not in first and done():
                first[what] = time.monotonic() - back
        return len(first) == 2

    rig.wait(recovered, 900)
    f.recovery = first.get("sent")
    f.said.append(f"{sent - before} of {BATCH} sent before the database went; the 10 messages that arrived "
                  f"meanwhile all stored {first.get('stored', float('nan')):.1f} s after it came back")
    _observe(rig, f, marks, exits)
    return f


_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \S+ ")  # "2027-04-06 09:00:00,000 "


def _observe(rig: Rig, f: Fault, marks: list[int], exits: int) -> None:
    """What the daemons logged since `marks`, and how many times one of them exited since `exits`."""
    rig.exited()
    f.exited = rig.exits - exits
    lines = [line for line in rig.said_since(marks)
             if not _STAMP.sub("", line).startswith(("INFO sent ", "INFO mail "))]  # not the work itself
    f.log_lines = len(lines)
    f.tracebacks = sum(1 for line in lines if line.startswith("Traceback"))
    f.stray = sum(1 for line in lines if not _STAMP.match(line))  # a message of several lines
    seen: set[str] = set()
    for line in lines:
        text = _STAMP.sub("", line)
        key = re.sub(r"\d+", "N", text)[:60]
        if key not in seen and len(f.said) < 12:
            seen.add(key)
            f.said.append(f"said: {text[:220]}")
