"""Cost against the size of the ledger: N invoices (N/10 due at NOW, the rest due in the next two
months), each command run as a user runs it, `relance ...` in a process of its own, on a fresh
database per size.

Prints, per size and command: wall time, rows a second (invoices of the ledger, or messages for
`tick`), the process's CPU time and its peak RSS (getrusage of that child alone), with the
machine's load average when it ended. Target: peak RSS <= 300 MB at 1,000,000 invoices for each
command.

Commands: import (the CSV), status (the table, to /dev/null), status --json, tick --dry-run, kpi
--json, tick (sends the due reminders to an SMTP sink on loopback, in its own process; only up
to --send-up-to invoices, 1,000,000 by default), status again (with a stage reached on N/10).

Usage: python bench/scale.py [--sizes 10000,100000,1000000] [--postgres] [--send-up-to N]

--postgres starts a throwaway PostgreSQL cluster (Debian's postgresql, as root, fsync on)."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.instances import config  # noqa: E402 - the same config: a sink on loopback, no IMAP
from bench.outbound import NOW, free_port, start_sink, stop_sink  # noqa: E402

TARGET_MB = 300


def write_ledger(path: Path, n: int, due: int) -> None:
    """As bench/outbound.py's ledger (a client for three invoices, one in ten a consumer), written
    a line at a time: the benchmark's own memory does not matter, the file's size does not either."""
    rng = random.Random(42)
    clients = n // 3 or 1
    with path.open("w", encoding="utf-8") as f:
        f.write("number,client,email,amount,currency,issue_date,due_date,language,client_kind\n")
        for i in range(n):
            due_date = NOW.date() - timedelta(days=rng.randint(5, 9)) if i < due else \
                NOW.date() + timedelta(days=rng.randint(1, 60))
            client = i % clients
            f.write(f"F-{i:07d},Client {client} SARL,compta{client}@client{client % 997}.example,"
                    f"{rng.randint(100, 5_000_000) / 100:.2f},EUR,{due_date - timedelta(days=30)},{due_date},"
                    f"{'fr' if i % 3 else 'en'},{'consumer' if i % 10 == 0 else 'business'}\n")


def measure(argv: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, float, float, str]:
    """Run `relance argv` to its end: wall seconds, CPU seconds and peak RSS (MB) of that process
    alone, and what it wrote on stderr."""
    env = {**os.environ, "RELANCE_LANG": "en"}
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", *argv], cwd=ROOT, stdout=stdout, stderr=err,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode:
        raise SystemExit(f"benchmark invalid: relance {' '.join(argv)} exited {proc.returncode}: {stderr[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stderr


def report(size: int, what: str, wall: float, cpu: float, rss: float, rows: int, unit: str = "rows") -> bool:
    load = os.getloadavg()[0]
    ok = rss <= TARGET_MB or size < 1_000_000
    print(f"{size:>9,}  {what:<16} {wall:8.2f} s  {rows / wall:10,.0f} {unit}/s  cpu {cpu:7.2f} s  "
          f"peak RSS {rss:6.0f} MB{'' if ok else '  (over the target)'}  load {load:.2f}", flush=True)
    return ok


@contextlib.contextmanager
def database(pg_base: str | None, work: Path) -> Iterator[str]:
    if pg_base is None:
        yield f"sqlite:///{work / 'relance.db'}"
        return
    from tests.servers import fresh_database  # noqa: PLC0415 - PostgreSQL only

    with fresh_database(pg_base, "scale_") as url:
        yield url


def run_size(n: int, pg_base: str | None, send_up_to: int) -> bool:
    due = n // 10
    work = Path(tempfile.mkdtemp(prefix="relance-scale-"))
    ok = True
    try:
        with database(pg_base, work) as url:
            port = free_port()
            cfg = str(config(work, url, port))
            now = ("--now", NOW.isoformat())
            csv = work / "ledger.csv"
            write_ledger(csv, n, due)
            measure(["--config", cfg, "init"])
            wall, cpu, rss, _ = measure(["--config", cfg, "import", str(csv)])
            ok &= report(n, "import", wall, cpu, rss, n)
            ok &= report(n, "status", *measure(["--config", cfg, "status", *now])[:3], n)
            ok &= report(n, "status --json", *measure(["--config", cfg, "status", "--json", *now])[:3], n)
            ok &= report(n, "tick --dry-run", *measure(["--config", cfg, "tick", "--dry-run", *now])[:3], n)
            ok &= report(n, "kpi --json", *measure(["--config", cfg, "kpi", "--json", *now])[:3], n)
            if n <= send_up_to:
                sink = start_sink(port)
                try:
                    wall, cpu, rss, _ = measure(["--config", cfg, "tick", *now])
                finally:
                    received = stop_sink(sink)
                if received != due:
                    raise SystemExit(f"benchmark invalid: the sink received {received} messages, {due} were due")
                ok &= report(n, "tick (sends)", wall, cpu, rss, due, "msg")
                ok &= report(n, "status, after", *measure(["--config", cfg, "status", *now])[:3], n)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="invoice counts, comma-separated")
    p.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster, fsync on")
    p.add_argument("--send-up-to", type=int, default=1_000_000, help="run the sending tick up to this size")
    args = p.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",")]
    with contextlib.ExitStack() as stack:
        pg_base = None
        if args.postgres:
            from tests.servers import postgres_cluster  # noqa: PLC0415 - only this option needs it

            pg_base = stack.enter_context(postgres_cluster(fsync=True))
        print(f"database {'postgresql' if pg_base else 'sqlite'}; {os.cpu_count()} CPUs; N invoices, N/10 due; "
              f"rows/s = invoices of the ledger a second (tick: messages sent)", flush=True)
        results = [run_size(n, pg_base, args.send_up_to) for n in sizes]  # every size, even after a miss
        ok = all(results)
    print(f"peak RSS <= {TARGET_MB} MB at 1,000,000 for every command: {'yes' if ok else 'NO'}"
          if 1_000_000 in sizes else "", flush=True)


if __name__ == "__main__":
    main()
