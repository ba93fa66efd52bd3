"""Inbound benchmark against a local Dovecot (started here; needs Debian's dovecot-imapd, as root).

1. APPEND N realistic replies (the labelled corpus' shapes, cycled) to INBOX; time Relance from
   start to all of them stored, classified, threaded and committed; in the same run, time a bare
   imapclient FETCH + mail-parser parse loop over the same messages; print both rates and the ratio.
2. Run the watcher (IMAP IDLE) and APPEND `--rate` messages a minute for `--seconds`; print the
   p50/p95 latency from APPEND to the message understood in the store.

Targets: ratio >= 0.7; p95 <= 2 s. Usage: python bench/inbound.py [--messages N] [--rate R] [--seconds S]"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mailparser  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from bot import inbound, ledger, store  # noqa: E402
from bot.config import Secret, from_dict  # noqa: E402
from bot.mailbox import ImapSource  # noqa: E402
from bot.mailer import MemoryMailer  # noqa: E402
from bot.models import Inbound, table  # noqa: E402
from bot.tick import tick  # noqa: E402
from bot.watcher import Watcher  # noqa: E402
from tests.corpus.labelled.build import load, render  # noqa: E402
from tests.corpus.labelled.evaluate import variants  # noqa: E402
from tests.servers import dovecot_server  # noqa: E402

PARIS = ZoneInfo("Europe/Paris")


# What a reply delivered from a big provider carries before its own headers: the hops, DKIM, ARC and
# authentication results (about 3 KB on real mail; here with made-up keys and hashes of real lengths).
_B64 = "".join(chr(65 + (i * 7) % 26) + chr(97 + (i * 11) % 26) for i in range(172))
TRANSPORT = (
    "Received: from mail-wr1-f54.google.com (mail-wr1-f54.google.com [209.85.221.54])\r\n"
    "\tby mx.acme.example (Postfix) with ESMTPS id 4Zx1Lq3Ws7z1x2\r\n"
    "\tfor <relances@acme.example>; Tue, 06 Apr 2027 09:30:02 +0200 (CEST)\r\n"
    "Received: by mail-wr1-f54.google.com with SMTP id ffacd0b85a97d-38a8b35e168so123456f8f.1\r\n"
    "        for <relances@acme.example>; Tue, 06 Apr 2027 00:30:01 -0700 (PDT)\r\n"
    "Authentication-Results: mx.acme.example; dkim=pass (2048-bit key) header.d=client.example\r\n"
    "\theader.i=@client.example header.b=\"AbCdEf12\"; spf=pass (mx.acme.example: domain of\r\n"
    "\tap@client.example designates 209.85.221.54 as permitted sender) smtp.mailfrom=ap@client.example;\r\n"
    "\tdmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=client.example\r\n"
    "Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=209.85.221.54; helo=mail-wr1-f54.google.com;\r\n"
    "\tenvelope-from=ap@client.example; receiver=<UNKNOWN>\r\n"
    "ARC-Seal: i=1; a=rsa-sha256; d=google.com; s=arc-20240605; t=1775460601; cv=none;\r\n"
    f"\tb={_B64[:76]}\r\n\t {_B64[76:152]}\r\n\t {_B64[152:228]}\r\n\t {_B64[228:]}==\r\n"
    "ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=google.com; s=arc-20240605;\r\n"
    "\th=to:subject:message-id:date:from:in-reply-to:references:mime-version:dkim-signature;\r\n"
    f"\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n\tb={_B64[:76]}\r\n\t {_B64[76:228]}==\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=client.example; s=20230601; t=1775460601;\r\n"
    "\tx=1776065401; darn=acme.example; h=to:subject:message-id:date:from:in-reply-to:references\r\n"
    "\t:mime-version:from:to:cc:subject:date:message-id:reply-to;\r\n"
    f"\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n\tb={_B64[:76]}\r\n\t {_B64[76:228]}\r\n"
    f"\t {_B64[228:]}==\r\n"
    "X-Google-Smtp-Source: AGHT+IFo3kQ1Ywq8j5Xr0lJm2b7ZP0qP1m4dQpV9e3nH6bK2cL8sT0uW\r\n"
    "X-Received: by 2002:a05:6000:1a8b:b0:38a:4184:14ec with SMTP id d75a77b69052e-46f2f7e5b0dmr12345;\r\n"
    "        Tue, 06 Apr 2027 00:30:01 -0700 (PDT)\r\n"
).encode()


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since it booted (every process: this one, its
    workers, Dovecot; and whatever else runs: read the figures on a quiet machine)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--rate", type=int, default=1000, help="messages a minute in the latency test")
    p.add_argument("--seconds", type=int, default=60, help="length of the latency test")
    p.add_argument("--plain", action="store_true",
                   help="the corpus' replies as rendered (about 600 bytes, no transport headers, one shape each)")
    args = p.parse_args()
    with dovecot_server() as dovecot, tempfile.TemporaryDirectory() as work:
        run(Path(work), dovecot, args)


def run(work: Path, dovecot: object, args: argparse.Namespace) -> None:
    d = dovecot
    cfg = from_dict({"database": {"url": f"sqlite:///{work / 'bench.db'}"},
                     "imap": {"host": "127.0.0.1", "port": d.port, "tls": "none",  # type: ignore[attr-defined]
                              "username": d.user, "folders": ["INBOX"], "idle_seconds": 240}},  # type: ignore[attr-defined]
                    str(work / "bench.toml"))
    engine = store.make_engine(cfg.database.url)
    store.migrate(engine)
    cases = load()
    numbers = sorted({n for c in cases for n in c.invoices})
    owner = {n: c.sender for c in cases for n in c.invoices}
    csv = ["number,client,email,amount,currency,issue_date,due_date"]
    csv += [f"{n},{owner[n]},{owner[n]},100.00,EUR,2027-03-01,2027-03-31" for n in numbers]
    (work / "l.csv").write_text("\n".join(csv) + "\n")
    ledger.import_rows(engine, ledger.read(work / "l.csv", "fr"), datetime(2027, 3, 1, tzinfo=UTC), "bench")
    mailer = MemoryMailer()
    asyncio.run(tick(engine, cfg, mailer, datetime(2027, 4, 5, 10, tzinfo=PARIS), datetime.now(UTC)))
    sent = {str(m["X-Relance-Invoices"]): (str(m["Message-ID"]), str(m["Subject"]))
            for m in (message_from_bytes(raw) for _, _, raw in mailer.sent)}
    shaped = cases if args.plain else variants(cases)
    templates = [render(c, sent) if args.plain else TRANSPORT + render(c, sent) for c in shaped]
    print(f"message shapes                {len(templates)} (mean {sum(map(len, templates)) // len(templates):,} bytes"
          f"{', as the corpus renders them' if args.plain else ', with the transport headers of real mail'})")

    def message(i: int) -> bytes:
        raw = templates[i % len(templates)]
        return raw.replace(b"@client.example>", f".{i}@client.example>".encode(), 1)

    client = IMAPClient("127.0.0.1", port=d.port, ssl=False)  # type: ignore[attr-defined]
    client.login(d.user, d.password)  # type: ignore[attr-defined]
    started = time.perf_counter()
    for i in range(args.messages):
        client.append("INBOX", message(i))
    append_s = time.perf_counter() - started
    now = datetime(2027, 4, 6, 9, tzinfo=PARIS)

    before, busy = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy()
    started, cpu = time.perf_counter(), time.process_time()
    source = ImapSource(cfg.imap, Secret(d.password))  # type: ignore[attr-defined]
    report = inbound.SyncReport()
    lines = inbound.sync(engine, source, cfg, now, report)
    relance_s, main_cpu = time.perf_counter() - started, time.process_time() - cpu
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # the pool's workers have exited by now
    relance_busy = machine_busy() - busy
    source.close()
    if report.stored != args.messages or len(lines) != args.messages:
        raise SystemExit(f"benchmark invalid: stored {report.stored}, understood {len(lines)}")

    started, busy = time.perf_counter(), machine_busy()
    client.select_folder("INBOX", readonly=True)
    uids = client.search("ALL")
    parsed = 0
    for chunk in range(0, len(uids), 200):
        data = client.fetch(uids[chunk:chunk + 200], ["BODY.PEEK[]"])
        for body in data.values():
            mailparser.parse_from_bytes(body[b"BODY[]"])
            parsed += 1
    bare_s, bare_busy = time.perf_counter() - started, machine_busy() - busy

    print(f"messages                      {args.messages:,} (APPENDed in {append_s:.1f} s)")
    print(f"relance store+understand      {relance_s:6.1f} s   {args.messages / relance_s:8,.0f} msg/s"
          f"   (fetch and store overlapped with parsing in"
          f" {cfg.imap.workers or min(4, os.cpu_count() or 1)} worker processes)")
    workers_cpu = workers.ru_utime + workers.ru_stime - before.ru_utime - before.ru_stime
    print(f"  CPU: this process {main_cpu:.1f} s, worker processes {workers_cpu:.1f} s")
    print(f"  the whole machine's busy CPU during the pass {relance_busy:.1f} s"
          f" ({relance_busy / args.messages * 1000:.2f} ms a message, Dovecot and other work included)")
    print(f"bare FETCH + mail-parser      {bare_s:6.1f} s   {parsed / bare_s:8,.0f} msg/s")
    print(f"  the whole machine's busy CPU during the loop {bare_busy:.1f} s"
          f" ({bare_busy / parsed * 1000:.2f} ms a message)")
    print(f"ratio relance / bare          {bare_s / relance_s:8.2f}   (target >= 0.7)")

    # Latency: the watcher on IDLE, messages APPENDed at a steady rate.
    stop = threading.Event()
    watcher = Watcher(engine, cfg, stop, clock=lambda: now)
    thread = threading.Thread(target=watcher.run, daemon=True)
    os.environ[cfg.imap.password_env] = d.password  # type: ignore[attr-defined]
    thread.start()
    while watcher.passes < 1:
        time.sleep(0.05)
    appended: dict[str, float] = {}
    seen: dict[str, float] = {}
    interval = 60.0 / args.rate
    total = int(args.seconds * args.rate / 60)
    in_t = table(Inbound)

    def poll() -> None:
        with engine.connect() as c:
            for mid in c.execute(sa.select(in_t.c.message_id).where(in_t.c.status != "new",
                                                                    in_t.c.message_id.like("%.L%"))).scalars():
                seen.setdefault(mid, time.perf_counter())

    next_at = time.perf_counter()
    for i in range(total):
        raw = message(10_000_000 + i).replace(b"@client.example>", b".L@client.example>", 1)
        mid = message_from_bytes(raw)["Message-ID"]
        while time.perf_counter() < next_at:
            poll()
            time.sleep(0.01)
        client.append("INBOX", raw)
        appended[mid] = time.perf_counter()
        next_at += interval
    deadline = time.perf_counter() + 30
    while len(seen) < total and time.perf_counter() < deadline:
        poll()
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=10)
    client.logout()
    latencies = sorted(seen[m] - t for m, t in appended.items() if m in seen)
    if len(latencies) < total:
        print(f"latency: only {len(latencies)}/{total} messages understood within 30 s of the last APPEND")
    if latencies:
        p50 = statistics.median(latencies)
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
        print(f"latency APPEND -> understood  p50 {p50:.2f} s, p95 {p95:.2f} s over {len(latencies)} messages "
              f"at {args.rate}/min (target p95 <= 2 s)")
    engine.dispose()


if __name__ == "__main__":
    main()
