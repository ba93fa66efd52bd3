"""Helpers shared by tests that write config files, and the CLI contract driven as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLE, merge


def toml_dump(d: dict[str, Any]) -> str:
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + " }"
        raise TypeError(v)

    out: list[str] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(f"\n[{k}]")
            out.extend(f"{ik} = {val(iv)}" for ik, iv in v.items())
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                out.append(f"\n[[{k}]]")
                out.extend(f"{ik} = {val(iv)}" for ik, iv in item.items())
        else:
            out.insert(0, f"{k} = {val(v)}")
    return "\n".join(out) + "\n"


LEDGER = """number,client,email,amount,currency,issue_date,due_date,language,paid,client_kind
F-1001,Société Exemple,compta@exemple.example,1500.00,EUR,2027-03-01,2027-03-31,fr,,business
F-1002,Example Ltd,ap@example-ltd.example,720.50,EUR,2027-03-02,2027-04-01,en,,business
F-1003,Déjà Payé,paye@exemple.example,300.00,EUR,2027-03-03,2027-04-02,fr,300.00,consumer
"""


class Cli:
    def __init__(self, work: Path, port: int) -> None:
        self.work = work
        cfg = merge(EXAMPLE, {
            "database": {"url": f"sqlite:///{work / 'relance.db'}"},
            "smtp": {"host": "127.0.0.1", "port": port, "tls": "none", "username": "", "rate_per_minute": 0,
                     "retry_backoff_seconds": "0.01"},
            "imap": {"folders": []},  # the inbound side has its own tests against Dovecot
        })
        (work / "config.toml").write_text(toml_dump(cfg))

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "RELANCE_CONFIG"}
        return subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(self.work / "config.toml"), *args],
                              cwd=self.work, capture_output=True, text=True, timeout=120, env=env, check=False)


def test_cli_end_to_end(cli: Any) -> None:
    """init, import, status, dry run, tick, show, kpi, messages: exit codes and JSON as the contract says."""
    assert cli("init").returncode == 0
    assert cli("init").returncode == 0, "init is idempotent"
    (cli.work / "ledger.csv").write_text(LEDGER)
    r = cli("import", "ledger.csv")
    assert r.returncode == 0, r.stderr
    now = ("--now", "2027-04-12T10:00:00+02:00")
    rows = json.loads(cli("status", "--json", *now).stdout)
    assert {r["number"] for r in rows} == {"F-1001", "F-1002"}
    assert rows[0]["number"] == "F-1001" and rows[0]["amount_due"] == "1500.00" and rows[0]["days_overdue"] == 12
    dry = cli("tick", "--dry-run", *now)
    assert dry.returncode == 0 and "F-1001" in dry.stdout and not cli.sink.received
    r = cli("tick", *now)
    assert r.returncode == 0, r.stderr
    assert len(cli.sink.received) == 2
    assert cli("tick", "--now", "2027-04-12T10:05:00+02:00").returncode == 0
    assert len(cli.sink.received) == 2, "a second tick sends nothing more"
    doc = json.loads(cli("show", "F-1001", "--json", *now).stdout)
    assert doc["stage"] == "reminder" and [r["status"] for r in doc["reminders"]] == ["sent"]
    assert "reminder_sent" in [e["kind"] for e in doc["events"]]
    assert json.loads(cli("kpi", "--json", *now).stdout)["emails_sent"] == 2
    assert json.loads(cli("messages", "--json", *now).stdout) == []
    r = cli("check", *now)
    assert r.returncode == 1 and "templates: ok" in r.stdout
    assert "no rate for 2027-H1" in r.stderr, "check fails: formal notices would fail today"
    r = cli("check", "--now", "2026-03-01T10:00:00+01:00")
    assert r.returncode == 0, "the shipped table covers 2026-H1"


@pytest.mark.parametrize(("args", "code", "stderr"), [
    (("frobnicate",), 2, "invalid choice"),
    (("show", "NOPE"), 1, "no invoice numbered 'NOPE'"),
    (("status", "--now", "tomorrow"), 1, "--now 'tomorrow': expected an ISO 8601"),
    (("import", "missing.csv"), 1, "missing.csv: no such file"),
    (("simulate", "--from", "2027-05-01", "--to", "2027-04-01"), 1, "is before --from"),
])
def test_cli_errors(cli: Any, args: tuple[str, ...], code: int, stderr: str) -> None:
    cli("init")
    r = cli(*args)
    assert r.returncode == code
    assert stderr in r.stderr
    assert "Traceback" not in r.stderr


def test_uninitialised_database_says_what_to_do(cli: Any) -> None:
    r = cli("status")
    assert r.returncode == 1 and "run `relance init`" in r.stderr


def test_unreachable_smtp_exits_1_and_records_nothing(tmp_path: Path) -> None:
    from tests.servers import free_port

    c = Cli(tmp_path, free_port())  # nothing listens there
    c("init")
    (tmp_path / "ledger.csv").write_text(LEDGER)
    c("import", "ledger.csv")
    r = c("tick", "--now", "2027-04-12T10:00:00+02:00")
    assert r.returncode == 1 and "cannot reach SMTP server 127.0.0.1" in r.stderr
    doc = json.loads(c("show", "F-1001", "--json").stdout)
    assert doc["reminders"] == [] and doc["stage"] is None
    assert [e["kind"] for e in doc["events"]] == ["imported"]


def test_a_broken_template_stops_check_and_tick(cli: Any) -> None:
    """A typo in a custom template fails at start-up, naming file and line; nothing is sent."""
    (cli.work / "mine" / "fr").mkdir(parents=True)
    (cli.work / "mine" / "fr" / "reminder.txt").write_text("Subject: Relance {{ invoice.number }}\n{% if %}\n")
    cfg = (cli.work / "config.toml").read_text()
    cfg = cfg.replace('[templates]\ndirectory = ""', '[templates]\ndirectory = "mine"')
    assert 'directory = "mine"' in cfg
    (cli.work / "config.toml").write_text(cfg)
    cli("init")
    (cli.work / "ledger.csv").write_text(LEDGER)
    cli("import", "ledger.csv")
    r = cli("check")
    assert r.returncode == 1 and "fr/reminder.txt:2" in r.stderr
    r = cli("tick", "--now", "2027-04-12T10:00:00+02:00")
    assert r.returncode == 1 and "template error, nothing sent" in r.stderr
    assert cli.sink.received == []


def test_a_dry_run_marks_what_would_fail_and_says_when_the_window_opens(cli: Any) -> None:
    """No rate for the half-year: the dry run says the formal notice would fail, as simulate does.
    Outside the sending window it says when the window opens and what would go then."""
    cli("init")
    (cli.work / "ledger.csv").write_text(LEDGER)
    cli("import", "ledger.csv")
    for now in ("2027-04-12T10:00:00+02:00", "2027-04-22T10:00:00+02:00"):
        assert cli("tick", "--now", now).returncode == 0
    dry = cli("tick", "--dry-run", "--now", "2027-05-10T10:00:00+02:00")
    assert dry.returncode == 0
    notices = [line for line in dry.stdout.splitlines() if "formal_notice" in line]
    assert len(notices) == 2 and all("WOULD FAIL: penalties.ecb_rates has no rate for 2027-H1" in line
                                     for line in notices), dry.stdout
    saturday = cli("tick", "--dry-run", "--now", "2027-05-15T10:00:00+02:00")
    assert "0 message(s) due" in saturday.stdout
    # Monday 17 May 2027 is Whit Monday, a public holiday in France
    assert "outside the sending window: it opens 2027-05-18 Tue 09:00" in saturday.stdout, saturday.stdout
    assert "2 message(s) would go then" in saturday.stdout
