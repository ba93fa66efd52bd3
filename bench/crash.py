"""Crash harness: `relance run` against loopback Dovecot and SMTP servers, killed with SIGKILL at
random moments while it sends reminders and reads replies, then started again; at the end, the
invariants Relance promises are checked:

- no reminder received twice (the same Message-ID, or the same invoices and subject);
- every reminder due went out once, or is recorded `uncertain` (killed while the server had the
  body: the next start counts it sent, never sends it again);
- every message of the mailbox stored once, and its effects applied once.

    python bench/crash.py [--kills 200] [--invoices 300] [--replies 300] [--seed 1] [--rate 600]

Prints the kills, duplicates, losses and the time each restart took to send again. The test suite
runs a reduced form (tests/test_crash.py). Needs Debian's dovecot-imapd, as root."""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from email import message_from_bytes
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from bot.sandbox import free_port  # noqa: E402
from tests.conftest import EXAMPLE, merge  # noqa: E402
from tests.servers import SmtpSink, dovecot_server  # noqa: E402
from tests.test_contract_like import toml_dump  # noqa: E402


@dataclass
class Outcome:
    kills: int = 0
    due: int = 0
    received: int = 0
    duplicates: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    uncertain: int = 0
    uncertain_unsent: int = 0  # recorded uncertain, and the server never got them: a reminder lost
    mailbox: int = 0
    stored: int = 0
    stored_twice: list[int] = field(default_factory=list)
    applied_twice: list[str] = field(default_factory=list)
    unprocessed: int = 0
    restarts_to_send: list[float] = field(default_factory=list)  # seconds from a start to its first send

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.missing or self.stored_twice or self.applied_twice or self.unprocessed
                    or self.stored != self.mailbox)

    def lines(self) -> list[str]:
        r = sorted(self.restarts_to_send)
        def p(q: float) -> float:
            return r[min(len(r) - 1, int(q * len(r)))] if r else float("nan")

        return [
            f"kills (SIGKILL)               {self.kills}",
            f"reminders due / received      {self.due} / {self.received}",
            f"recorded uncertain            {self.uncertain}, of which {self.uncertain_unsent} the server never got",
            f"received twice                {len(self.duplicates)} {self.duplicates[:5]}",
            f"due, never sent nor uncertain {len(self.missing)} {self.missing[:5]}",
            f"mailbox / stored              {self.mailbox} / {self.stored}",
            f"stored twice                  {len(self.stored_twice)}",
            f"effects applied twice         {len(self.applied_twice)} {self.applied_twice[:5]}",
            f"left unprocessed              {self.unprocessed}",
            f"restart to next send          p50 {p(0.5):.2f} s, p95 {p(0.95):.2f} s over {len(r)} restarts",
        ]


def _config(work: Path, smtp_port: int, imap_port: int, user: str, rate: int = 600) -> Path:
    doc = merge(EXAMPLE, {
        "database": {"url": f"sqlite:///{work / 'relance.db'}"},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "tls": "none", "username": "", "rate_per_minute": rate,
                 "retries": 1, "retry_backoff_seconds": 0.1, "timeout_seconds": 10},
        "imap": {"host": "127.0.0.1", "port": imap_port, "tls": "none", "username": user,
                 "password_env": "RELANCE_IMAP_PASSWORD", "folders": ["INBOX"], "idle_seconds": 5, "workers": 1},
        "schedule": {"window": ["00:00", "24:00"], "business_days_only": False, "holidays": "", "tick_minutes": 1},
    })
    path = work / "config.toml"
    path.write_text(toml_dump(doc))
    return path


def _ledger(n: int) -> str:
    """`n` invoices five days overdue (their first reminder is due), and `n` others of other clients,
    due next month, that the replies are about (so no reply holds a reminder the check expects)."""
    today = date.today()  # noqa: DTZ011 - the daemon runs on the real clock
    due, later = today - timedelta(days=5), today + timedelta(days=30)
    return "number,client,email,amount,currency,issue_date,due_date,language\n" + "".join(
        f"C-{i:05d},Client {i},c{i}@client.example,{100 + i}.00,EUR,{due - timedelta(days=30)},{due},fr\n"
        for i in range(n)) + "".join(
        f"C-{n + i:05d},Client {n + i},c{n + i}@client.example,{100 + i}.00,EUR,{today},{later},fr\n"
        for i in range(n))


class TimedSink(SmtpSink):
    """The SMTP sink, with when each message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        answer = await super().handle_DATA(server, session, envelope)
        self.times.append(time.monotonic())
        return answer


def _reply(i: int, invoices: int) -> bytes:
    n = invoices + i % invoices
    return (f"From: c{n}@client.example\r\nTo: relances@acme.example\r\nSubject: Facture C-{n:05d}\r\n"
            f"Message-ID: <crash-{i}@client.example>\r\nDate: Mon, 5 Apr 2027 10:00:00 +0200\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Bonjour, le virement pour la facture C-{n:05d} est parti ce matin. Cordialement\r\n").encode()


def run(kills: int, invoices: int, replies: int, seed: int = 1, log: bool = True, rate: int = 600) -> Outcome:
    rng = random.Random(seed)
    out = Outcome()
    sink, smtp_port = TimedSink(), free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    with dovecot_server() as dovecot, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = _config(work, smtp_port, dovecot.port, dovecot.user, rate)
        env = {**os.environ, "RELANCE_IMAP_PASSWORD": dovecot.password}
        relance = [sys.executable, "-m", "bot.cli", "--config", str(config)]
        subprocess.run([*relance, "init"], check=True, capture_output=True, env=env, cwd=ROOT)
        (work / "ledger.csv").write_text(_ledger(invoices))
        subprocess.run([*relance, "import", str(work / "ledger.csv")], check=True, capture_output=True, env=env,
                       cwd=ROOT)
        imap = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
        imap.login(dovecot.user, dovecot.password)
        given = 0
        for k in range(kills):
            # Mail keeps arriving between the kills, so syncs are caught mid-way too.
            for _ in range(replies // max(kills, 1) + (1 if k < replies % max(kills, 1) else 0)):
                imap.append("INBOX", _reply(given, invoices))
                given += 1
            before = len(sink.times)
            started = time.monotonic()
            proc = subprocess.Popen([*relance, "run"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 2.5))
            if len(sink.times) > before:  # from the start to its first message received
                out.restarts_to_send.append(sink.times[before] - started)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            out.kills += 1
        while given < replies:
            imap.append("INBOX", _reply(given, invoices))
            given += 1
        imap.logout()
        out.mailbox = given
        _finish(relance, env, work, invoices, given)
        _check(out, sink, work, invoices)
    smtp.stop()
    if log:
        print("\n".join(out.lines()))
    return out


def _finish(relance: list[str], env: dict[str, str], work: Path, invoices: int, mailbox: int) -> None:
    """A last run, left alone until every reminder is sent and every message processed."""
    engine = sa.create_engine(f"sqlite:///{work / 'relance.db'}")
    proc = subprocess.Popen([*relance, "run"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            with engine.connect() as c:
                done = c.execute(sa.text("SELECT count(*) FROM outbound WHERE status IN ('sent', 'uncertain')")
                                 ).scalar()
                stored = c.execute(sa.text("SELECT count(*) FROM inbound")).scalar()
                new = c.execute(sa.text("SELECT count(*) FROM inbound WHERE status IN ('new', 'applying')")).scalar()
            if done == invoices and stored == mailbox and new == 0:
                break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        engine.dispose()


def _check(out: Outcome, sink: SmtpSink, work: Path, invoices: int) -> None:
    out.due = invoices
    msgs = [message_from_bytes(raw) for _, _, raw in sink.received]
    out.received = len(msgs)
    mids = Counter(str(m["Message-ID"]) for m in msgs)
    keys = Counter((str(m["X-Relance-Invoices"]), str(m["Subject"])) for m in msgs)
    out.duplicates = [k for k, n in mids.items() if n > 1] + [f"{k[0]} {k[1]}" for k, n in keys.items() if n > 1]
    got = {str(m["X-Relance-Invoices"]) for m in msgs}
    engine = sa.create_engine(f"sqlite:///{work / 'relance.db'}")
    with engine.connect() as c:
        uncertain = set(c.execute(sa.text(
            "SELECT i.number FROM outbound o JOIN reminder r ON r.outbound_id = o.id JOIN invoice i "
            "ON i.id = r.invoice_id WHERE o.status = 'uncertain'")).scalars())
        out.uncertain = len(uncertain)
        out.uncertain_unsent = len(uncertain - got)
        numbers = [f"C-{i:05d}" for i in range(invoices)]  # the ones due
        out.missing = sorted(n for n in numbers if n not in got and n not in uncertain)
        out.stored = c.execute(sa.text("SELECT count(DISTINCT uid) FROM inbound")).scalar() or 0
        out.stored_twice = list(c.execute(sa.text(
            "SELECT uid FROM inbound GROUP BY folder, uid HAVING count(*) > 1")).scalars())
        out.applied_twice = [f"#{i} {k} {inv}" for i, k, inv in c.execute(sa.text(
            "SELECT inbound_id, kind, invoice_id FROM event WHERE inbound_id IS NOT NULL "
            "AND kind LIKE 'message_%' GROUP BY inbound_id, kind, invoice_id HAVING count(*) > 1"))]
        out.unprocessed = c.execute(sa.text(
            "SELECT count(*) FROM inbound WHERE status IN ('new', 'applying')")).scalar() or 0
    engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--invoices", type=int, default=300)
    ap.add_argument("--replies", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=int, default=600,
                    help="smtp.rate_per_minute; 0: as fast as the server takes them, so that kills land mid-chunk, "
                         "with several deliveries not yet recorded")
    args = ap.parse_args()
    started = time.monotonic()
    out = run(args.kills, args.invoices, args.replies, args.seed, rate=args.rate)
    print(f"{'ok' if out.ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    sys.exit(0 if out.ok else 1)


if __name__ == "__main__":
    main()
