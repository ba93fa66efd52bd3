"""Layering: rules/ stays pure, bot/ never imports the UI (import-linter contracts in pyproject)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rules_never_read_the_clock() -> None:
    clock = re.compile(r"datetime\.now\(|date\.today\(|time\.time\(|utcnow\(")
    offenders = [f"{p}:{i}" for p in (ROOT / "rules").rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if clock.search(line)]
    assert offenders == []


def test_rules_import_without_the_io_stack() -> None:
    code = ("import sys, rules.schedule, rules.penalties, rules.calendar; "
            "bad = [m for m in ('sqlalchemy', 'aiosmtplib', 'imapclient', 'textual', 'bot') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout
