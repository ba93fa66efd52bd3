"""Small things a user hit (issue 9, part 5): each through the command line a person types, or the
function behind it, on a real store."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.smtp import AuthResult
from sqlalchemy.engine import Engine

from bot import actions, ledger, reports, store
from bot.config import Config, Secret
from bot.errors import ConnectionFailedError
from bot.mailer import MemoryMailer, SmtpMailer
from bot.models import Event, Inbound, Invoice, table
from bot.tick import tick
from tests.conftest import at, no_sleep
from tests.servers import smtp_server
from tests.test_contract_like import LEDGER

NOW = ("--now", "2027-04-12T10:00:00+02:00")


@pytest.fixture
def ready(cli: Any) -> Any:
    assert cli("init").returncode == 0
    (cli.work / "ledger.csv").write_text(LEDGER)
    assert cli("import", "ledger.csv").returncode == 0
    return cli


def test_pause_until_takes_the_date_format_of_the_invoice_file(ready: Any) -> None:
    r = ready("pause", "F-1001", "--until", "15/12/2027", *NOW)
    assert r.returncode == 0 and "15 Dec 2027" in r.stdout, r.stderr


def test_invoice_numbers_are_case_insensitive(ready: Any) -> None:
    r = ready("pause", "f-1001", *NOW)
    assert r.returncode == 0 and r.stdout.startswith("F-1001"), r.stderr
    assert json.loads(ready("show", "f-1001", "--json", *NOW).stdout)["number"] == "F-1001"
    r = ready("contact", "f-1002", "--email", "new@example-ltd.example", *NOW)
    assert r.returncode == 0, r.stderr


def _engine(cli: Any) -> Engine:
    return store.make_engine(f"sqlite:///{cli.work / 'relance.db'}")


def test_closing_a_message_twice_says_so(ready: Any) -> None:
    engine = _engine(ready)
    with engine.begin() as c:
        inbound_id = c.execute(sa.insert(table(Inbound)).values(
            message_id="<q@client.example>", subject="Question", status="triage",
            stored_at=datetime.now(UTC)).returning(table(Inbound).c.id)).scalar_one()
    first = ready("close", str(inbound_id), *NOW)
    second = ready("close", str(inbound_id), *NOW)
    assert first.returncode == 0 and "closed" in first.stdout
    assert second.returncode == 0 and "nothing changed" in second.stdout, second.stdout
    with engine.connect() as c:
        closed = c.execute(sa.select(sa.func.count()).where(table(Event).c.kind == "triage_closed")).scalar_one()
    engine.dispose()
    assert closed == 1


def test_kpi_prints_lines_not_a_python_dict_and_is_quiet_in_a_closed_pipe(ready: Any) -> None:
    r = ready("kpi", *NOW)
    assert r.returncode == 0 and "{" not in r.stdout and "recovered_per_stage.reminder" in r.stdout
    cmd = (f"{sys.executable} -m bot.cli --config {ready.work / 'config.toml'} kpi {' '.join(NOW)}"
           " | (exec 0<&-; true)")  # a reader gone before the first line
    piped = subprocess.run(["sh", "-c", cmd], cwd=ready.work, capture_output=True, text=True, timeout=120,
                           check=False)
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr


def test_check_online_without_a_username_does_not_claim_a_login(ready: Any) -> None:
    r = ready("check", "--online")
    assert "logged in" not in r.stdout and "no login" in r.stdout, r.stdout


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # loopback, a test server
def test_a_wrong_password_answered_slowly_reads_login_refused(make_config: Callable[..., Config]) -> None:
    """Servers often answer a wrong password with a delay: past the timeout, it still is the login."""
    def slow_refusal(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        time.sleep(1.5)  # a tarpit, longer than the client waits
        return AuthResult(success=False, handled=False)

    with smtp_server(authenticator=slow_refusal, auth_required=True, auth_require_tls=False) as (_, port):
        cfg = make_config(smtp={"host": "127.0.0.1", "port": port, "tls": "none", "timeout_seconds": 1,
                                "username": "relances@acme.example"})

        async def run() -> None:
            async with SmtpMailer(cfg.smtp, Secret("wrong")):
                pass

        with pytest.raises(ConnectionFailedError, match="refused the login of 'relances@acme.example'"):
            asyncio.run(run())


def test_kpi_rates_count_replies_about_reminded_invoices_and_partial_payments(
        engine: Engine, tmp_path: Path, make_config: Callable[..., Config]) -> None:
    path = tmp_path / "l.csv"
    path.write_text("number,client,email,amount,currency,issue_date,due_date\n"
                    "F-1,A,a@exemple.example,1000.00,EUR,2027-03-01,2027-03-31\n"
                    "F-2,B,b@exemple.example,500.00,EUR,2027-03-01,2027-03-31\n")
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "l.csv")
    cfg = make_config()
    asyncio.run(tick(engine, cfg, MemoryMailer(), at("2027-04-05T10:00"), datetime.now(UTC), sleep=no_sleep))
    actions.record_payment(engine, "F-1", at("2027-04-08T10:00"), ledger.parse_amount("250.00"), "test")
    in_t, ev_t, inv_t = table(Inbound), table(Event), table(Invoice)
    with engine.begin() as c:
        ids = [c.execute(sa.insert(in_t).values(message_id=f"<m{i}@x.example>", kind=kind, status="applied",
                                                stored_at=at("2027-04-07T10:00")).returning(in_t.c.id)).scalar_one()
               for i, kind in enumerate(["human_reply", "human_reply", "human_reply", "payment_claim", "bounce"])]
        f2 = c.execute(sa.select(inv_t.c.id).where(inv_t.c.number == "F-2")).scalar_one()
        for inbound_id in ids[3:]:  # the client's answer about F-2, and a bounce that is no answer
            c.execute(sa.insert(ev_t).values(invoice_id=f2, kind="paused", at=at("2027-04-07T10:00"),
                                             inbound_id=inbound_id, data="{}"))
    with engine.connect() as c:
        k = reports.kpi(c, cfg, at("2027-04-10T10:00"))
    assert k["reply_rate_pct"] == "50.0", "one of two reminded invoices answered; newsletters do not count"
    assert k["recovery_rate_pct"] == "16.7", "250.00 of 1,500.00 reminded"
