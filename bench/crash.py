"""Crash and fault harness: `relance run` against loopback Dovecot and SMTP servers, killed with
SIGKILL at random moments while it sends reminders and reads replies, and started again; then
(`--faults`) the servers it depends on taken away under it. At the end, the invariants Relance
promises are checked:

- no reminder received twice (the same Message-ID, or the same invoices and subject);
- every reminder due went out once, or is recorded `uncertain` (killed while the server had the
  body: the next start counts it sent, never sends it again);
- every message of the mailbox stored once, and its effects applied once.

    python bench/crash.py [--kills 200] [--invoices 300] [--replies 300] [--seed 1]
                          [--database sqlite|postgresql] [--instances 1] [--faults] [--outage 60] [--rate 600]

With `--database postgresql --instances 3`, three daemons share one PostgreSQL database (a
throwaway cluster), one mailbox and one SMTP sink; each kill takes one of them at random and
starts it again, and the harness times how long the watched folder stays unread after its
holder is killed (the instance holding its advisory lock, from `pg_locks`).

The faults (bench/faults.py) come after the kills, the daemons left running: the SMTP server
stopped mid-batch, the IMAP connections cut mid-IDLE and mid-FETCH (a TCP proxy between the
daemons and Dovecot), and, on PostgreSQL, the database stopped for `--outage` seconds. For each
it prints the recovery time, what the daemons logged meanwhile, and whether one exited.

Prints the kills, duplicates, losses and recovery times. The test suite runs reduced forms
(tests/test_crash.py). Needs Debian's dovecot-imapd (and postgresql), as root."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from bot.sandbox import free_port  # noqa: E402
from tests.conftest import EXAMPLE, merge  # noqa: E402
from tests.servers import Dovecot, Postgres, SmtpSink, TcpProxy, dovecot_server, postgres_server  # noqa: E402
from tests.test_contract_like import toml_dump  # noqa: E402


@dataclass
class Fault:
    """What one fault did: how long until the daemons worked again once it ended, and what they said."""

    name: str
    recovery: float | None = None  # seconds from the end of the fault to the first work done after it
    what: str = ""  # the work that shows recovery ("sent", "stored")
    log_lines: int = 0  # lines the daemons logged from the fault to their recovery
    tracebacks: int = 0
    stray: int = 0  # lines that do not begin with the time: tracebacks, messages of several lines
    said: list[str] = field(default_factory=list)  # what they logged, one of each kind
    exited: int = 0  # daemons that exited by themselves meanwhile (must be 0)

    def line(self) -> str:
        rec = f"{self.recovery:6.1f} s to {self.what}" if self.recovery is not None else "never recovered"
        return (f"fault {self.name:<24} {rec}; {self.log_lines} log line(s), {self.tracebacks} traceback(s), "
                f"{self.stray} line(s) continuing another, {self.exited} daemon(s) exited")


@dataclass
class Outcome:
    database: str = "sqlite"
    instances: int = 1
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
    takeovers: list[float] = field(default_factory=list)  # seconds from the holder's SIGKILL to the folder held again
    faults: list[Fault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.missing or self.stored_twice or self.applied_twice or self.unprocessed
                    or self.stored != self.mailbox
                    or any(f.recovery is None or f.exited or f.tracebacks or f.stray for f in self.faults))

    def lines(self) -> list[str]:
        out = [
            f"database / instances          {self.database} / {self.instances}",
            f"kills (SIGKILL)               {self.kills}",
            f"reminders due / received      {self.due} / {self.received}",
            f"recorded uncertain            {self.uncertain}, of which {self.uncertain_unsent} the server never got",
            f"received twice                {len(self.duplicates)} {self.duplicates[:5]}",
            f"due, never sent nor uncertain {len(self.missing)} {self.missing[:5]}",
            f"mailbox / stored              {self.mailbox} / {self.stored}",
            f"stored twice                  {len(self.stored_twice)}",
            f"effects applied twice         {len(self.applied_twice)} {self.applied_twice[:5]}",
            f"left unprocessed              {self.unprocessed}",
        ]
        if self.restarts_to_send:
            out.append(f"restart to next send          {_spread(self.restarts_to_send)}")
        if self.instances > 1:
            out.append(f"folder taken over after its holder's SIGKILL  {_spread(self.takeovers)}")
        for f in self.faults:
            out.append(f.line())
            out += [f"    {s}" for s in f.said]
        return out


def _spread(values: list[float]) -> str:
    r = sorted(values)
    if not r:
        return "(none measured)"
    def p(q: float) -> float:
        return r[min(len(r) - 1, int(q * len(r)))]

    return f"p50 {p(0.5):.2f} s, p95 {p(0.95):.2f} s, max {r[-1]:.2f} s over {len(r)}"


def _config(work: Path, url: str, smtp_port: int, imap_port: int, user: str, rate: int = 600) -> Path:
    doc = merge(EXAMPLE, {
        "database": {"url": url},
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


def _due_batch(prefix: str, n: int) -> tuple[str, list[str]]:
    """`n` more invoices of new clients whose first reminder is due: a batch to send during a fault."""
    due = date.today() - timedelta(days=5)  # noqa: DTZ011
    numbers = [f"{prefix}-{i:05d}" for i in range(n)]
    return "number,client,email,amount,currency,issue_date,due_date,language\n" + "".join(
        f"{num},Client {num},{num.lower()}@client.example,250.00,EUR,{due - timedelta(days=30)},{due},en\n"
        for num in numbers), numbers


class TimedSink(SmtpSink):
    """The SMTP sink, with when each message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        answer = await super().handle_DATA(server, session, envelope)
        self.times.append(time.monotonic())
        return answer


def _reply(i: int, invoices: int, pad: int = 0) -> bytes:
    n = invoices + i % invoices
    signature = "".join(f"-- {'x' * 70}\r\n" for _ in range(pad // 74))  # a long message: a FETCH that lasts
    return (f"From: c{n}@client.example\r\nTo: relances@acme.example\r\nSubject: Facture C-{n:05d}\r\n"
            f"Message-ID: <crash-{i}@client.example>\r\nDate: Mon, 5 Apr 2027 10:00:00 +0200\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Bonjour, le virement pour la facture C-{n:05d} est parti ce matin. Cordialement\r\n{signature}").encode()


class Rig:
    """The servers, the daemons and the mailbox of one run."""

    def __init__(self, work: Path, url: str, instances: int, dovecot: Dovecot, pg: Postgres | None,
                 rate: int = 600) -> None:
        self.work, self.url, self.pg, self.dovecot = work, url, pg, dovecot
        self.sink, self.smtp_port = TimedSink(), free_port()
        self.smtp: Controller | None = None
        self.smtp_start()
        self.proxy = TcpProxy(dovecot.port)  # the daemons reach Dovecot through it: it can be cut
        self.config = _config(work, url, self.smtp_port, self.proxy.port, dovecot.user, rate)
        self.env = {**os.environ, "RELANCE_IMAP_PASSWORD": dovecot.password}
        self.relance = [sys.executable, "-m", "bot.cli", "--config", str(self.config)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * instances
        self.logs = [work / f"daemon-{i}.log" for i in range(instances)]
        self._log_files: list[IO[bytes] | None] = [None] * instances
        self.due: list[str] = []  # the invoice numbers whose reminder is due
        self.due_first: list[str] = []  # those of the first ledger (the replies are about its other half)
        self.given = 0  # messages put in the mailbox
        self.exits = 0  # daemons found exited by themselves (and started again)
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        self.imap = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
        self.imap.login(dovecot.user, dovecot.password)
        self.holder_killed: tuple[int, float] | None = None
        self.takeovers: list[float] = []
        self._watching = threading.Event()

    # -- servers ---------------------------------------------------------------------------------

    def smtp_start(self) -> None:
        self.smtp = Controller(self.sink, hostname="127.0.0.1", port=self.smtp_port)
        self.smtp.start()

    def smtp_stop(self) -> None:
        if self.smtp is not None:
            self.smtp.stop()
            self.smtp = None

    def cli(self, *args: str) -> None:
        subprocess.run([*self.relance, *args], check=True, capture_output=True, env=self.env, cwd=ROOT)

    def add_due(self, prefix: str, n: int) -> None:
        text, numbers = _due_batch(prefix, n)
        path = self.work / f"{prefix}.csv"
        path.write_text(text)
        self.cli("import", str(path))
        self.due += numbers

    def append(self, n: int, pad: int = 0) -> None:
        for _ in range(n):
            self.imap.append("INBOX", _reply(self.given, len(self.due_first), pad))
            self.given += 1

    # -- daemons ---------------------------------------------------------------------------------

    def start(self, i: int) -> subprocess.Popen[bytes]:
        if self._log_files[i] is None:
            self._log_files[i] = self.logs[i].open("ab")
        proc = subprocess.Popen([*self.relance, "run"], env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=self._log_files[i])
        self.procs[i] = proc
        return proc

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        if self.pg is not None and self.holder() == proc.pid:
            self.holder_killed = (proc.pid, time.monotonic())
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def stop_all(self) -> list[int | None]:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            if proc is not None:
                try:
                    codes.append(proc.wait(60))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    codes.append(proc.wait())
        return codes

    def restart_all(self) -> None:
        """Stopped gracefully and started again: each begins a scheduling pass at once."""
        self.stop_all()
        for i in range(len(self.procs)):
            self.start(i)

    def exited(self) -> int:
        """Daemons that have exited by themselves: counted (in `exits`), and started again."""
        n = 0
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is not None:
                n += 1
                self.start(i)
        self.exits += n
        return n

    # -- what the store says ---------------------------------------------------------------------

    def count(self, sql: str) -> int | None:
        """A count from the store; None while it cannot be read (the database stopped)."""
        try:
            with self.engine.connect() as c:
                return int(c.execute(sa.text(sql)).scalar() or 0)
        except sa.exc.OperationalError:
            return None

    def stored(self) -> int | None:
        return self.count("SELECT count(*) FROM inbound")

    def holder(self) -> int | None:
        """The pid of the daemon holding the watched folder's advisory lock (its connection's
        application_name is `relance host:pid`)."""
        try:
            with self.engine.connect() as c:
                name = c.execute(sa.text(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted LIMIT 1")).scalar()
        except sa.exc.OperationalError:
            return None
        pid = str(name or "").rpartition(":")[2]
        return int(pid) if pid.isdigit() else None

    @contextlib.contextmanager
    def watching_takeovers(self) -> Iterator[None]:
        """Time each takeover: from the SIGKILL of the folder's holder to another holding it."""
        def watch() -> None:
            while not self._watching.wait(0.1):
                killed = self.holder_killed
                if killed is None:
                    continue
                now = self.holder()
                if now is not None and now != killed[0]:
                    self.takeovers.append(time.monotonic() - killed[1])
                    self.holder_killed = None

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            yield
        finally:
            self._watching.set()
            t.join()

    def wait(self, predicate: Any, timeout: float, step: float = 0.1) -> float | None:
        """Seconds until `predicate()` holds, or None after `timeout`. A daemon that exits meanwhile
        is counted and started again."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            self.exited()
            if predicate():
                return time.monotonic() - started
            time.sleep(step)
        return None

    def log_marks(self) -> list[int]:
        return [p.stat().st_size if p.exists() else 0 for p in self.logs]

    def said_since(self, marks: list[int]) -> list[str]:
        lines: list[str] = []
        for p, at in zip(self.logs, marks, strict=True):
            with p.open("rb") as f:
                f.seek(at)
                lines += f.read().decode("utf-8", "replace").splitlines()
        return lines

    def close(self) -> None:
        self.stop_all()
        for f in self._log_files:
            if f is not None:
                f.close()
        with contextlib.suppress(Exception):
            self.imap.logout()
        self.proxy.close()
        self.smtp_stop()
        self.engine.dispose()


@contextlib.contextmanager
def _database(kind: str, work: Path) -> Iterator[tuple[str, Postgres | None]]:
    if kind == "sqlite":
        yield f"sqlite:///{work / 'relance.db'}", None
        return
    with postgres_server() as pg:
        admin = sa.create_engine(f"{pg.url}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text('CREATE DATABASE "relance"'))
        admin.dispose()
        yield f"{pg.url}/relance", pg


def run(kills: int, invoices: int, replies: int, seed: int = 1, log: bool = True, database: str = "sqlite",
        instances: int = 1, faults: bool = False, outage: float = 60.0, rate: int = 600) -> Outcome:
    rng = random.Random(seed)
    out = Outcome(database=database, instances=instances)
    with dovecot_server() as dovecot, tempfile.TemporaryDirectory() as tmp, _database(database, Path(tmp)) as (
            url, pg):
        work = Path(tmp)
        rig = Rig(work, url, instances, dovecot, pg, rate)
        try:
            rig.cli("init")
            (work / "ledger.csv").write_text(_ledger(invoices))
            rig.cli("import", str(work / "ledger.csv"))
            rig.due_first = [f"C-{i:05d}" for i in range(invoices)]
            rig.due = list(rig.due_first)
            _kill_at_random(rig, out, rng, kills, replies)
            if faults:
                from bench.faults import all_faults  # noqa: PLC0415

                out.faults = all_faults(rig, outage, log)
            rig.append(max(replies - rig.given, 0))
            out.mailbox = rig.given
            _finish(rig)
            codes = rig.stop_all()
            if any(code not in (0, None) for code in codes):
                print(f"daemon exit codes at the end: {codes}", flush=True)
            _check(out, rig)
        finally:
            rig.close()
    out.takeovers = rig.takeovers
    if log:
        print("\n".join(out.lines()), flush=True)
    return out


def _kill_at_random(rig: Rig, out: Outcome, rng: random.Random, kills: int, replies: int) -> None:
    """Kill one daemon at random `kills` times, starting it again each time; mail keeps arriving
    between the kills, so syncs are caught mid-way too."""
    n = len(rig.procs)
    for i in range(n):
        rig.start(i)
    started, before = time.monotonic(), len(rig.sink.times)
    with rig.watching_takeovers() if n > 1 else contextlib.nullcontext():
        for k in range(kills):
            rig.append(replies // max(kills, 1) + (1 if k < replies % max(kills, 1) else 0))
            time.sleep(rng.uniform(0.3, 2.5))
            if n == 1 and len(rig.sink.times) > before:  # from the start to its first message received
                out.restarts_to_send.append(rig.sink.times[before] - started)
            victim = rng.randrange(n)
            rig.kill(victim)
            out.kills += 1
            started, before = time.monotonic(), len(rig.sink.times)
            rig.start(victim)
        if n > 1 and kills:  # and once more the holder of the folder, so that a takeover is timed
            rig.wait(lambda: rig.holder_killed is None and rig.holder() in [p.pid for p in rig.procs if p], 60)
            victim = next((i for i, p in enumerate(rig.procs) if p is not None and p.pid == rig.holder()), 0)
            rig.kill(victim)
            out.kills += 1
            rig.start(victim)
            rig.wait(lambda: rig.holder_killed is None, 60)


def _finish(rig: Rig) -> None:
    """The daemons left alone until every reminder is sent and every message processed."""
    rig.exited()
    due = len(rig.due)

    def done() -> bool:
        return (rig.count("SELECT count(*) FROM outbound WHERE status IN ('sent', 'uncertain')") == due
                and rig.stored() == rig.given
                and rig.count("SELECT count(*) FROM inbound WHERE status IN ('new', 'applying')") == 0)

    rig.wait(done, 300, 0.5)


def _check(out: Outcome, rig: Rig) -> None:
    out.due = len(rig.due)
    msgs = [message_from_bytes(raw) for _, _, raw in rig.sink.received]
    out.received = len(msgs)
    mids = Counter(str(m["Message-ID"]) for m in msgs)
    keys = Counter((str(m["X-Relance-Invoices"]), str(m["Subject"])) for m in msgs)
    out.duplicates = [k for k, n in mids.items() if n > 1] + [f"{k[0]} {k[1]}" for k, n in keys.items() if n > 1]
    got = {str(m["X-Relance-Invoices"]) for m in msgs}
    with rig.engine.connect() as c:
        uncertain = set(c.execute(sa.text(
            "SELECT i.number FROM outbound o JOIN reminder r ON r.outbound_id = o.id JOIN invoice i "
            "ON i.id = r.invoice_id WHERE o.status = 'uncertain'")).scalars())
        out.uncertain = len(uncertain)
        out.uncertain_unsent = len(uncertain - got)
        out.missing = sorted(n for n in rig.due if n not in got and n not in uncertain)
        out.stored = c.execute(sa.text("SELECT count(DISTINCT uid) FROM inbound")).scalar() or 0
        out.stored_twice = list(c.execute(sa.text(
            "SELECT uid FROM inbound GROUP BY folder, uid HAVING count(*) > 1")).scalars())
        out.applied_twice = [f"#{i} {k} {inv}" for i, k, inv in c.execute(sa.text(
            "SELECT inbound_id, kind, invoice_id FROM event WHERE inbound_id IS NOT NULL "
            "AND kind LIKE 'message_%' GROUP BY inbound_id, kind, invoice_id HAVING count(*) > 1"))]
        out.unprocessed = c.execute(sa.text(
            "SELECT count(*) FROM inbound WHERE status IN ('new', 'applying')")).scalar() or 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--invoices", type=int, default=300)
    ap.add_argument("--replies", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--instances", type=int, default=1, help="daemons on one database (several: postgresql)")
    ap.add_argument("--faults", action="store_true", help="then SMTP, IMAP and database faults (bench/faults.py)")
    ap.add_argument("--outage", type=float, default=60.0, help="seconds each server stays away in a fault")
    ap.add_argument("--rate", type=int, default=600,
                    help="smtp.rate_per_minute; 0: as fast as the server takes them, so that kills land mid-chunk, "
                         "with several deliveries not yet recorded")
    args = ap.parse_args()
    if args.instances > 1 and args.database == "sqlite":
        ap.error("several instances share the work on PostgreSQL only (--database postgresql)")
    started = time.monotonic()
    print(f"load average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}",
          flush=True)
    out = run(args.kills, args.invoices, args.replies, args.seed, database=args.database, instances=args.instances,
              faults=args.faults, outage=args.outage, rate=args.rate)
    print(f"load average at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"{'ok' if out.ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    sys.exit(0 if out.ok else 1)


if __name__ == "__main__":
    main()
