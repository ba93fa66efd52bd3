"""Peak memory of one inbound pass over large messages, against a local Dovecot (started here;
needs Debian's dovecot-imapd, as root).

APPENDs `--messages` messages of `--size-mb` MB each (a short reply with a PDF-like base64
attachment) to INBOX, then runs one `inbound.sync` pass (fetch, store, understand, apply) in a
fresh child process and prints its peak RSS (ru_maxrss). The issue's target: under 300 MB
whatever arrives. Usage: python bench/inbound_memory.py [--messages N] [--size-mb S]"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imapclient import IMAPClient  # noqa: E402

from tests.servers import dovecot_server  # noqa: E402

CHILD = """
import resource, sys
from datetime import datetime
from zoneinfo import ZoneInfo
sys.path.insert(0, {root!r})
from bot import inbound, store
from bot.config import Secret, from_dict
from bot.mailbox import ImapSource
cfg = from_dict({{"database": {{"url": "sqlite:///{db}"}},
                 "imap": {{"host": "127.0.0.1", "port": {port}, "tls": "none", "username": {user!r},
                          "folders": ["INBOX"]}}}}, "bench.toml")
engine = store.make_engine(cfg.database.url)
store.migrate(engine)
source = ImapSource(cfg.imap, Secret({password!r}))
report = inbound.SyncReport()
lines = inbound.sync(engine, source, cfg, datetime(2027, 4, 6, 9, tzinfo=ZoneInfo("Europe/Paris")), report)
source.close()
# VmHWM, this process's own peak: ru_maxrss would count the parent's peak too (a child started
# by vfork and exec inherits its high-water mark), here the 40 MB messages this script built.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(report.stored, len(lines), peak // 1024)
"""


def message(i: int, size: int) -> bytes:
    payload = base64.encodebytes(os.urandom(size * 3 // 4))
    return (f"From: compta@client.example\r\nTo: ar@acme.example\r\nSubject: Facture F-{i} payée\r\n"
            f"Message-ID: <big{i}@client.example>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Bonjour, le virement pour la facture F-{i} est parti ce matin, voici la preuve.\r\n"
            '--b\r\nContent-Type: application/pdf; name="preuve.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
            'Content-Disposition: attachment; filename="preuve.pdf"\r\n\r\n').encode() + payload + b"\r\n--b--\r\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=5)
    p.add_argument("--size-mb", type=int, default=40)
    args = p.parse_args()
    with dovecot_server() as d, tempfile.TemporaryDirectory() as work:
        client = IMAPClient("127.0.0.1", port=d.port, ssl=False)
        client.login(d.user, d.password)
        for i in range(args.messages):
            client.append("INBOX", message(i, args.size_mb * 2**20))
        client.logout()
        code = CHILD.format(root=str(ROOT), db=f"{work}/bench.db", port=d.port, user=d.user, password=d.password)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        stored, processed, peak_mb = out.stdout.split()[-3:]
    print(f"messages {args.messages} x {args.size_mb} MB: stored {stored}, understood {processed}, "
          f"peak RSS of the pass {peak_mb} MB (the process's own high-water mark, VmHWM); target < 300 MB")


if __name__ == "__main__":
    main()
