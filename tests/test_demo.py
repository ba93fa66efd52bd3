"""`relance demo` runs end to end against its sandbox and leaves nothing running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def pymap_processes() -> set[int]:
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"pymap" in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
        except OSError:
            continue
    return found


def test_demo_runs_and_cleans_up() -> None:
    before = pymap_processes()
    r = subprocess.run([sys.executable, "-m", "bot.cli", "demo"], capture_output=True, text=True, timeout=180,
                       check=False)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "sent     F-2025-0101  reminder" in out
    assert "bounced  F-2025-0108" in out and "550" in out
    assert "F-2025-0102" not in out.split("Status on")[1], "the invoice paid mid-way left the status table"
    assert "Mise en demeure" in out and "12,15\u00a0% l'an" in out and "L441-10" in out
    assert "The sandbox IMAP mailbox received 17 messages" in out
    assert pymap_processes() - before == set(), "the sandbox IMAP server is still running"
