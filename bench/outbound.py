"""Outbound benchmark: 100,000 open invoices, 10,000 reminders due in one tick.

Prints import rows/s, the scheduling pass over 100,000 invoices, the tick's send rate against a
bare aiosmtplib loop sending the same 10,000 messages to the same sink, and peak RSS.
Targets (SQLite): import >= 20,000 rows/s; scheduling <= 1 s; sends >= 0.8 x bare; RSS <= 300 MB.

Targets with PostgreSQL (default fsync, as a server runs): sends >= 0.7 x bare.

Usage: python bench/outbound.py [--invoices N] [--due N] [--database URL | --postgres]

--postgres starts a throwaway PostgreSQL cluster (Debian's postgresql, as root) for the run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
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


async def bare_loop(port: int, messages: list[tuple[str, list[str], bytes]]) -> float:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, use_tls=False)
    await smtp.connect()
    started = time.perf_counter()
    for sender, rcpts, raw in messages:
        await smtp.sendmail(sender, rcpts, raw)
    elapsed = time.perf_counter() - started
    await smtp.quit()
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--invoices", type=int, default=100_000)
    p.add_argument("--due", type=int, default=10_000)
    p.add_argument("--database", help="a database URL (default: SQLite in a temp dir)")
    p.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster, fsync on")
    p.add_argument("--flush-marks", action="store_true",
                   help="PostgreSQL: each message's mark waits for the disk (synchronous_commit on)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="relance-bench-"))
    port = free_port()
    with contextlib.ExitStack() as stack:
        if args.postgres:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.servers import postgres_cluster  # noqa: PLC0415 - only this option needs it

            args.database = stack.enter_context(postgres_cluster(fsync=True)) + "/postgres"
        run(args, work, port)


def run(args: argparse.Namespace, work: Path, port: int) -> None:
    Outbox.flush_marks = args.flush_marks
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
        started = time.perf_counter()
        report = asyncio.run(tick(engine, cfg, SmtpMailer(cfg.smtp, None), NOW, datetime.now(UTC),
                                  renderer=Renderer(cfg.company)))
        tick_s = time.perf_counter() - started
        require(len(report.sent) == args.due, repr((len(report.sent), report.failed[:3], report.aborted)))

        with engine.connect() as conn:
            ob = table(Outbound)
            sent = [(cfg.company.email, [to], raw) for to, raw in
                    conn.execute(sa.select(ob.c.to_addr, ob.c.raw).order_by(ob.c.id))]
        bare_s = asyncio.run(bare_loop(port, sent))
        received = stop_sink(sink)
        require(received == 2 * args.due, repr(received))

        deliver_s = report.seconds["deliver"]
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"database                      {engine.url.get_backend_name()}"
              f"{'   (marks flushed to disk)' if args.flush_marks else ''}")
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
        print(f"peak RSS                      {peak_mb:10.0f} MB (target <= 300)")
        engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
