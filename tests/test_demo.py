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
    assert "undelivered F-2025-0108" in out and "550" in out
    for kind in ("payment_claim", "dispute", "promise_to_pay", "payment_plan", "auto_reply"):
        assert f" {kind} " in out, f"the demo's clients answer with a {kind}"
    assert "Tue 30 Sep  sent     F-2025-0106  second_reminder" in out, "after the out-of-office's return date"
    assert "Mon 20 Oct  sent     F-2025-0103  second_reminder" in out, "after the promised date and its grace"
    assert "F-2025-0101  second_reminder" not in out, "the transfer announced on 10 Sep paused it, then it was paid"
    triage = out.split("Waiting for a person")[1].split("The sandbox")[0]
    assert "dispute" in triage and "payment_plan" in triage
    assert "Mise en demeure" in out and "12,15\u00a0% l'an" in out and "L441-10" in out
    assert "The sandbox IMAP mailbox received 14 messages" in out
    assert pymap_processes() - before == set(), "the sandbox IMAP server is still running"
