"""Several instances against one: `relance tick` run by 1, then by 3 processes at once, on one
PostgreSQL database (a throwaway cluster, fsync on) and one SMTP sink (aiosmtpd on loopback, in
its own process). Each run starts from the same fresh ledger; the instances split the due
reminders (claimed in chunks with SELECT ... FOR UPDATE SKIP LOCKED) and none is sent twice.

Prints, per run: reminders sent, wall time from the start of the processes to the end of the
last, throughput, how the messages were split between the instances; then the ratio of the
throughputs (target >= 2x), and the machine's CPU count, which bounds it: each instance renders in
a worker process, and the sink, the database and the instances share the same cores.

Usage: python bench/instances.py [--invoices N] [--due N] [--instances 3] [--runs 1]
Needs Debian's postgresql, as root."""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from bench.outbound import NOW, free_port, start_sink, stop_sink  # noqa: E402
from tests.conftest import EXAMPLE, merge  # noqa: E402
from tests.servers import postgres_cluster  # noqa: E402
from tests.test_contract_like import toml_dump  # noqa: E402


def write_ledger(path: Path, n: int, due: int) -> None:
    """`due` invoices whose first reminder is due at NOW, each of its own client; the rest later."""
    rng = random.Random(7)
    lines = ["number,client,email,amount,currency,issue_date,due_date,language"]
    for i in range(n):
        due_date = NOW.date() - timedelta(days=rng.randint(5, 9)) if i < due else \
            NOW.date() + timedelta(days=rng.randint(1, 60))
        lines.append(f"F-{i:07d},Client {i} SARL,compta{i}@client{i % 997}.example,"
                     f"{rng.randint(100, 5_000_000) / 100:.2f},EUR,{due_date - timedelta(days=30)},{due_date},"
                     f"{'fr' if i % 3 else 'en'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def config(work: Path, url: str, port: int) -> Path:
    doc = merge(EXAMPLE, {
        "database": {"url": url},
        "smtp": {"host": "127.0.0.1", "port": port, "tls": "none", "username": "", "rate_per_minute": 0,
                 "retries": 0},
        "imap": {"folders": []},
        "penalties": {"ecb_rates": {"2027-H1": "2.00"}},
    })
    path = work / f"config-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(toml_dump(doc))
    return path


def run(base: str, work: Path, port: int, instances: int, invoices: int, due: int) -> float:
    """One run on a fresh database; returns the throughput (messages a second)."""
    name = "bench_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}"
    cfg = config(work, url, port)
    relance = [sys.executable, "-m", "bot.cli", "--config", str(cfg)]
    subprocess.run([*relance, "init"], check=True, capture_output=True, cwd=ROOT)
    ledger = work / "ledger.csv"
    write_ledger(ledger, invoices, due)
    subprocess.run([*relance, "import", str(ledger)], check=True, capture_output=True, cwd=ROOT)
    now = NOW.isoformat()
    started = time.perf_counter()
    procs = [subprocess.Popen([*relance, "tick", "--now", now], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(instances)]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - started
    failed = [e.strip().splitlines()[-1] for p, e in zip(procs, errors, strict=True) if p.returncode]
    engine = sa.create_engine(url)
    with engine.connect() as c:
        statuses = dict(c.execute(sa.text("SELECT status, count(*) FROM outbound GROUP BY status")).all())
        per_invoice = c.execute(sa.text(
            "SELECT count(*) FROM (SELECT r.invoice_id FROM reminder r JOIN outbound o ON o.id = r.outbound_id "
            "WHERE o.status = 'sent' GROUP BY r.invoice_id HAVING count(*) > 1) twice")).scalar()
        # Who sent what: the instance named in the last claim of each message (host:pid).
        split = Counter(c.execute(sa.text("SELECT claimed_by FROM outbound WHERE status = 'sent'")).scalars())
    engine.dispose()
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
    sent = int(statuses.get("sent", 0))
    if failed or sent != due or per_invoice:
        raise SystemExit(f"benchmark invalid: {instances} instance(s): {statuses}, {per_invoice} sent twice, "
                         f"errors {failed}")
    rate = sent / elapsed
    shares = ", ".join(str(n) for n in sorted(split.values(), reverse=True))
    print(f"{instances} instance(s)   {sent:,} sent in {elapsed:6.2f} s   {rate:8,.0f} msg/s   "
          f"split {shares}   sent twice {per_invoice}", flush=True)
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--invoices", type=int, default=20_000)
    p.add_argument("--due", type=int, default=10_000)
    p.add_argument("--instances", type=int, default=3)
    p.add_argument("--runs", type=int, default=1, help="runs of each (1 then N instances, alternately)")
    args = p.parse_args()
    port = free_port()
    sink = start_sink(port)
    try:
        with postgres_cluster(fsync=True) as base, tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.runs):
                one = run(base, Path(tmp), port, 1, args.invoices, args.due)
                many = run(base, Path(tmp), port, args.instances, args.invoices, args.due)
                print(f"ratio {args.instances} / 1        {many / one:6.2f}   "
                      f"(target >= 2; {os.cpu_count()} CPU(s) here)", flush=True)
    finally:
        stop_sink(sink)


if __name__ == "__main__":
    main()
