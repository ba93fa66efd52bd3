"""Outbound benchmark: 100,000 open invoices, 10,000 reminders due in one tick.

Prints import rows/s, the scheduling pass over 100,000 invoices, the tick's send rate against a
bare aiosmtplib loop sending the same 10,000 messages to the same sink, the CPU a message of the
sending process, of its rendering worker and of the bare loop (CPU time is disturbed less than
wall time by other work on the machine: the load average is printed with them), and peak RSS:
of this process over the whole run (the import and the every-invoice pass included), and of the
tick alone, this process and its rendering worker.
Targets (SQLite): import >= 20,000 rows/s; scheduling <= 1 s; sends >= 0.8 x bare; RSS <= 300 MB.

Targets with PostgreSQL (default fsync, as a server runs): sends >= 0.7 x bare.

Usage: python bench/outbound.py [--invoices N] [--due N] [--database URL | --postgres]

--postgres starts a throwaway PostgreSQL cluster (Debian's postgresql, as root) for the run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosmtplib
import sqlalchemy as sa

from bot import ledger, store, views
from bot.config import from_dict
from bot.mailer import SmtpMailer
from bot.models import Outbound, table
from bot.outbox import Outbox
from bot.render import Renderer
from bot.tick import plan_groups, tick

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2027, 4, 13, 10, 0, tzinfo=PARIS)  # a Tuesday, inside the window


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require(ok: bool, what: str) -> None:
    """A check that holds with python -O too: the figures mean nothing if it fails."""
    if not ok:
        raise SystemExit(f"benchmark invalid: {what}")


def write_ledger(path: Path, n: int, due: int) -> None:
    rng = random.Random(42)
    lines = ["number,client,email,amount,currency,issue_date,due_date,language,client_kind"]
    for i in range(n):
        # `due` invoices are 5 to 9 days past due (first reminder due); the rest are due later.
        due_date = NOW.date() - timedelta(days=rng.randint(5, 9)) if i < due else \
            NOW.date() + timedelta(days=rng.randint(1, 60))
        issue = due_date - timedelta(days=30)
        client = i % (n // 3 or 1)
        lines.append(f"F-{i:07d},Client {client} SARL,compta{client}@client{client % 997}.example,"
                     f"{rng.randint(100, 5_000_000) / 100:.2f},EUR,{issue},{due_date},"
                     f"{'fr' if i % 3 else 'en'},{'consumer' if i % 10 == 0 else 'business'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def start_sink(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("smtp_sink.py")), str(port)],
                            stdout=subprocess.PIPE, text=True)
    if proc.stdout is None or proc.stdout.readline().strip() != "ready":
        raise SystemExit("the SMTP sink did not start")
    return proc


def stop_sink(proc: subprocess.Popen[str]) -> int:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return int(out.strip() or 0)


async def bare_loop(port: int, engine: sa.Engine, sender: str) -> tuple[float, float]:
    """The tick's messages again, as the tick sent them, by aiosmtplib alone: its seconds and its
    CPU seconds, sends only (the messages are read a page at a time between them, not all held)."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, use_tls=False)
    await smtp.connect()
    elapsed = cpu = 0.0
    ob = table(Outbound)
    last = 0
    while True:
        with engine.connect() as conn:
            page = conn.execute(sa.select(ob.c.id, ob.c.to_addr, ob.c.raw).where(ob.c.id > last)
                                .order_by(ob.c.id).limit(1000)).all()
        if not page:
            break
        last = page[-1].id
        started, started_cpu = time.perf_counter(), time.process_time()
        for _, to, raw in page:
            await smtp.sendmail(sender, [to], raw)
        elapsed += time.perf_counter() - started
        cpu += time.process_time() - started_cpu
    await smtp.quit()
    return elapsed, cpu


def peak_rss_mb() -> float:
    """This process's peak resident set since the last `reset_peak_rss` (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Linux: the peak resident set starts again from what is resident now."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class ChildrenPeak:
    """The peak resident set (VmHWM) of each process this one starts meanwhile but `skip`: the
    rendering worker and multiprocessing's resource tracker, read from /proc every 20 ms while
    they live. (getrusage's children figure would count the sending process's pages the worker
    shared between its fork and its exec.)"""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.mine = Path("/proc/self/cmdline").read_bytes()
        self.peaks: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ChildrenPeak:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()

    def _watch(self) -> None:
        while not self.done.wait(0.02):
            for pid in self._children():
                with contextlib.suppress(OSError, ValueError, KeyError):  # KeyError: a process exiting
                    if Path(f"/proc/{pid}/cmdline").read_bytes() == self.mine:
                        continue  # forked, not yet exec'd: what it shows is this process's memory
                    status = Path(f"/proc/{pid}/status").read_text()
                    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                    mb = int(fields["VmHWM"].split()[0]) / 1024
                    self.peaks[pid] = (fields["Name"].strip(), max(mb, self.peaks.get(pid, ("", 0.0))[1]))

    def _children(self) -> set[int]:
        out: set[int] = set()
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):
                out.update(int(p) for p in (task / "children").read_text().split())
        return out - {self.skip}

    @property
    def total_mb(self) -> float:
        return sum(mb for _, mb in self.peaks.values())


def cpu_of(pids: list[int]) -> float:
    """CPU seconds the processes `pids` used so far, with their children that ended (a PostgreSQL
    server's backends are counted by the postmaster once they exit)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def server_pids(postmaster: int | None) -> list[int]:
    """A PostgreSQL server's processes on this machine: its postmaster and what it started."""
    if postmaster is None:
        return []
    out = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                out.append(int(stat.parent.name))
    return out


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--invoices", type=int, default=100_000)
    p.add_argument("--due", type=int, default=10_000)
    p.add_argument("--database", help="a database URL (default: SQLite in a temp dir)")
    p.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster, fsync on")
    p.add_argument("--async-marks", action="store_true",
                   help="PostgreSQL: each message's mark does not wait for the disk (synchronous_commit off: "
                        "faster, but a crash of the server may send a message again)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="relance-bench-"))
    port = free_port()
    postmaster = None
    with contextlib.ExitStack() as stack:
        if args.postgres:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.servers import postgres_server  # noqa: PLC0415 - only this option needs it

            server = stack.enter_context(postgres_server(fsync=True))
            args.database = server.url + "/postgres"
            postmaster = int((Path(server.base) / "data" / "postmaster.pid").read_text().split()[0])
        run(args, work, port, postmaster)


def run(args: argparse.Namespace, work: Path, port: int, postmaster: int | None = None) -> None:
    """`postmaster`: the PostgreSQL server's, when it runs on this machine (its CPU is counted)."""
    Outbox.flush_marks = not args.async_marks
    try:
        url = args.database or f"sqlite:///{work / 'bench.db'}"
        cfg = from_dict({"database": {"url": url},
                         "smtp": {"host": "127.0.0.1", "port": port, "tls": "none", "username": "",
                                  "rate_per_minute": 0, "retries": 0},
                         "penalties": {"ecb_rates": {"2027-H1": "2.00"}}}, "<bench>")
        engine = store.make_engine(url)
        store.migrate(engine)
        csv = work / "ledger.csv"
        write_ledger(csv, args.invoices, args.due)

        started = time.perf_counter()
        rows = ledger.read(csv, "fr")
        result = ledger.import_rows(engine, rows, NOW, csv.name)
        import_s = time.perf_counter() - started
        del rows
        require(result.created == args.invoices, f'{result.created} invoices created')

        # The tick's pass: invoices whose first stage can be due, read through the (state, due_date) index.
        started = time.perf_counter()
        with engine.connect() as conn:
            loaded = views.load(conn, due_by=NOW.date() - timedelta(days=cfg.ladder[0].delay_days))
        planned = plan_groups(loaded, cfg, NOW)
        plan_s = time.perf_counter() - started
        require(len(planned) == args.due, repr(len(planned)))
        # Every invoice through the rules, as `status` does to show each one's next action.
        started = time.perf_counter()
        with engine.connect() as conn:
            everything = views.load(conn)
        require(len(plan_groups(everything, cfg, NOW)) == args.due, 'full pass plans the same reminders')
        full_s = time.perf_counter() - started
        del loaded, planned, everything

        sink = start_sink(port)
        whole_peak_mb = peak_rss_mb()
        reset_peak_rss()
        load_before = load()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        sink_cpu, db_cpu = cpu_of([sink.pid]), cpu_of(server_pids(postmaster))
        started, started_cpu = time.perf_counter(), time.process_time()
        with ChildrenPeak(skip=sink.pid) as started_here:
            report = asyncio.run(tick(engine, cfg, SmtpMailer(cfg.smtp, None), NOW, datetime.now(UTC),
                                      renderer=Renderer(cfg.company)))
        tick_s, tick_cpu = time.perf_counter() - started, time.process_time() - started_cpu
        tick_peak_mb = peak_rss_mb()
        worker = resource.getrusage(resource.RUSAGE_CHILDREN)  # the rendering worker, joined (the sink runs on)
        worker_cpu = worker.ru_utime + worker.ru_stime - children.ru_utime - children.ru_stime
        require(len(report.sent) == args.due, repr((len(report.sent), report.failed[:3], report.aborted)))
        sink_cpu, db_cpu = cpu_of([sink.pid]) - sink_cpu, cpu_of(server_pids(postmaster)) - db_cpu

        bare_sink_cpu, bare_db_cpu = cpu_of([sink.pid]), cpu_of(server_pids(postmaster))
        bare_s, bare_cpu = asyncio.run(bare_loop(port, engine, cfg.company.email))
        bare_sink_cpu = cpu_of([sink.pid]) - bare_sink_cpu
        bare_db_cpu = cpu_of(server_pids(postmaster)) - bare_db_cpu
        load_after = load()
        received = stop_sink(sink)
        require(received == 2 * args.due, repr(received))

        deliver_s = report.seconds["deliver"]
        peak_mb = max(whole_peak_mb, peak_rss_mb())
        ms = 1000 / args.due
        print(f"database                      {engine.url.get_backend_name()}"
              f"{'   (marks not waiting for the disk)' if args.async_marks else ''}")
        print(f"invoices                      {args.invoices:,}   reminders due {args.due:,}")
        print(f"import                        {import_s:6.2f} s   {args.invoices / import_s:10,.0f} rows/s"
              f"   (target >= 20,000)")
        print(f"scheduling pass (tick)        {plan_s:6.2f} s   over {args.invoices:,} invoices (target <= 1 s)")
        print(f"rules over every invoice      {full_s:6.2f} s   ({args.invoices:,} plans, as `status` needs)")
        print(f"tick, whole                   {tick_s:6.2f} s   plan {report.seconds['plan']:.2f} s, "
              f"queue {report.seconds['queue']:.2f} s, deliver {deliver_s:.2f} s")
        print(f"tick send rate (deliver)      {args.due / deliver_s:10,.0f} msg/s")
        print(f"tick send rate (whole tick)   {args.due / tick_s:10,.0f} msg/s")
        print(f"bare aiosmtplib loop          {args.due / bare_s:10,.0f} msg/s")
        target = "0.7" if engine.dialect.name == "postgresql" else "0.8"
        print(f"rendered in a worker process  {report.rendered_in_worker:10,} of {args.due:,}")
        print(f"ratio deliver / bare          {bare_s / deliver_s:10.2f}   (target >= {target})")
        print(f"ratio whole tick / bare       {bare_s / tick_s:10.2f}")
        print(f"CPU a message, tick           {tick_cpu * ms:10.3f} ms this process, {worker_cpu * ms:.3f} ms its "
              f"rendering worker; bare loop {bare_cpu * ms:.3f} ms")
        # On a machine with few CPUs the SMTP server and the database share them with the sending:
        # every process's CPU, and the least time a tick could take if it used every CPU all along.
        every = tick_cpu + worker_cpu + sink_cpu + db_cpu
        db = f", PostgreSQL {db_cpu * ms:.3f}" if postmaster else ""
        print(f"CPU a message, every process  {every * ms:10.3f} ms in the tick (this process {tick_cpu * ms:.3f}, "
              f"rendering worker {worker_cpu * ms:.3f}, SMTP sink {sink_cpu * ms:.3f}{db}); bare loop "
              f"{(bare_cpu + bare_sink_cpu + bare_db_cpu) * ms:.3f} ms (itself {bare_cpu * ms:.3f}, SMTP sink "
              f"{bare_sink_cpu * ms:.3f}{f', PostgreSQL {bare_db_cpu * ms:.3f}' if postmaster else ''})")
        cpus = os.cpu_count() or 1
        print(f"tick if CPU-bound on {cpus} CPUs  {every / cpus:6.2f} s   (every process's CPU / {cpus}; it took "
              f"{tick_s:.2f} s): whole tick / bare at most {bare_s / (every / cpus):.2f} on this machine"
              f"{'' if postmaster or args.database is None else ' (the database not counted)'}")
        print(f"peak RSS, whole run           {peak_mb:10.0f} MB (this process: import, every-invoice pass, tick)")
        others = ", ".join(f"{name} {mb:.0f} MB" for name, mb in sorted(started_here.peaks.values()))
        print(f"peak RSS, tick                {tick_peak_mb:10.0f} MB this process + {started_here.total_mb:.0f} MB "
              f"the {len(started_here.peaks)} it started ({others or 'none'}) = "
              f"{tick_peak_mb + started_here.total_mb:.0f} MB (target <= 300)")
        print(f"{load_before} before the tick, {load_after} after the bare loop ({os.cpu_count()} CPUs)")
        engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
