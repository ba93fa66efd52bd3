"""The outbox against a real SMTP server (aiosmtpd on loopback), on SQLite and PostgreSQL:
the bytes received, threading, encodings, attachments, and at-most-once across failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import actions, ledger
from bot.config import Config
from bot.mailer import SmtpMailer
from bot.models import Event, Invoice, Outbound, Reminder, table
from bot.outbox import Outbox
from bot.render import Renderer
from bot.tick import TickReport, deliver, plan_groups, tick
from bot.views import load
from tests.conftest import at
from tests.servers import SmtpSink

HEADER = "number,client,email,amount,currency,issue_date,due_date,language,paid,pdf,client_kind,cc\n"



async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
def setup(engine: Engine, smtp: tuple[SmtpSink, int], make_config: Callable[..., Config], tmp_path: Path) -> Any:
    sink, port = smtp

    class Setup:
        def __init__(self) -> None:
            self.engine, self.sink, self.port = engine, sink, port
            self.config = make_config(smtp={"host": "127.0.0.1", "port": port, "tls": "none", "username": "",
                                            "rate_per_minute": 0, "retries": 2,
                                            "retry_backoff_seconds": "0.01"})

        def load(self, rows: str, config: Config | None = None) -> None:
            path = tmp_path / "ledger.csv"
            path.write_text(HEADER + rows, encoding="utf-8")
            ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "ledger.csv")

        def tick(self, now: str, config: Config | None = None) -> TickReport:
            cfg = config or self.config
            return asyncio.run(tick(engine, cfg, SmtpMailer(cfg.smtp, None), at(now), datetime.now(UTC),
                                    sleep=_no_sleep))

        def messages(self) -> list[EmailMessage]:
            return sink.messages()

        def count(self, model: type, **where: Any) -> int:
            t = table(model)
            q = sa.select(sa.func.count()).select_from(t)
            for k, v in where.items():
                q = q.where(t.c[k] == v)
            with engine.connect() as c:
                return int(c.execute(q).scalar_one())

    return Setup()


def test_reminder_bytes_headers_parts_encodings(setup: Any, tmp_path: Path) -> None:
    pdf = tmp_path / "Facture été F-1001.pdf"
    pdf.write_bytes(b"%PDF-1.4 test\n")
    setup.load(f"F-1001,Société Générale d'Été,compta@exemple.example,1234.56,EUR,2027-03-01,2027-03-31,fr,,"
               f"{pdf},business,dg@exemple.example\n")
    report = setup.tick("2027-04-05T10:00")
    assert len(report.sent) == 1
    ((sender, rcpts, raw),) = setup.sink.received
    assert sender == "relances@acme.example" and rcpts == ["compta@exemple.example", "dg@exemple.example"]
    (msg,) = setup.messages()
    assert msg["Subject"] == "Rappel : facture F-1001 — ACME SAS"
    headers = raw.split(b"\r\n\r\n", 1)[0]
    assert headers.isascii(), "non-ASCII subject and names travel as encoded words"
    assert b"=?utf-8?" in headers.split(b"Subject:", 1)[1].split(b"\r\n", 1)[0]
    assert msg["To"].addresses[0].display_name == "Société Générale d'Été"
    assert msg["Message-ID"].endswith("@acme.example>") and "F-1001" in msg["Message-ID"]
    assert msg["In-Reply-To"] is None and msg["X-Relance-Invoices"] == "F-1001"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "1\u202f234,56\u00a0€" in text and "31 mars 2027" in text and "échéancier" in text
    assert "IBAN" in text and "F-1001" in html
    assert not list(msg.iter_attachments()), "the first stage attaches nothing"
    with setup.engine.connect() as c:
        stored = c.execute(sa.select(table(Outbound).c.raw, table(Outbound).c.status)).one()
    assert stored.status == "sent"
    assert stored.raw.split(b"\r\n\r\n", 1)[0] == headers, "the exact bytes sent are kept"


def test_ladder_threads_attaches_and_states_penalties(setup: Any, tmp_path: Path,
                                                      make_config: Callable[..., Config]) -> None:
    pdf = tmp_path / "Facture été F-1001.pdf"
    pdf.write_bytes(b"%PDF-1.4 test\n")
    cfg = make_config(smtp={"host": "127.0.0.1", "port": setup.port, "tls": "none", "username": "",
                            "rate_per_minute": 0}, penalties={"ecb_rates": {"2027-H1": "2.00"}})
    setup.load(f"F-1001,Société Exemple,compta@exemple.example,1000.00,EUR,2027-03-01,2027-03-31,fr,,{pdf},business,\n")
    for now in ("2027-04-05T10:00", "2027-04-15T10:00", "2027-04-30T10:00", "2027-06-30T10:00"):
        setup.tick(now, cfg)
    first, second, notice = setup.messages()
    assert second["In-Reply-To"] == first["Message-ID"]
    assert notice["In-Reply-To"] == second["Message-ID"]
    assert notice["References"].split() == [first["Message-ID"], second["Message-ID"]]
    (att,) = list(second.iter_attachments())
    assert att.get_filename() == "Facture été F-1001.pdf" and att.get_content() == b"%PDF-1.4 test\n"
    assert notice["Subject"].startswith("Mise en demeure de payer : facture F-1001")
    body = notice.get_body(("plain",)).get_content()
    # 30 days (1-30 April) at 2.00 + 10 = 12 % on 1000.00: 9.86
    assert "L441-10" in body and "12,00\u00a0% l'an" in body and "9,86\u00a0€" in body and "30 jours" in body
    assert "40,00\u00a0€" in body and "D441-5" in body
    assert "5 avril 2027" in body and "15 avril 2027" in body, "earlier reminders cited by date"


def test_consumer_formal_notice_has_no_commercial_penalties(setup: Any) -> None:
    setup.load("F-7,Jean Dupont,jean@exemple.example,80.00,EUR,2027-03-01,2027-03-31,fr,,,consumer,\n")
    for now in ("2027-06-01T10:00", "2027-06-11T10:00", "2027-06-28T10:00"):
        setup.tick(now)
    *_, msg = setup.messages()
    body = msg.get_body(("plain",)).get_content()
    assert msg["Subject"].startswith("Mise en demeure")
    assert "1231-6" in body and "L441-10" not in body and "40,00" not in body


def test_a_late_start_begins_at_the_first_stage(setup: Any) -> None:
    """An invoice imported two months overdue gets the first reminder, not a formal notice that
    says "despite our reminders" when none was sent; each next stage counts from the one sent."""
    setup.load("F-7,Client,c@exemple.example,80.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n")
    setup.tick("2027-06-01T10:00")
    setup.tick("2027-06-08T10:00")  # 7 days on: the second stage waits its 10 days from the first
    setup.tick("2027-06-11T10:00")
    assert [m["Subject"].split(" :")[0] for m in setup.messages()] == ["Rappel", "Deuxième relance"]
    with setup.engine.connect() as c:
        stages = sorted(c.execute(sa.select(table(Reminder).c.stage, table(Reminder).c.skipped)).all())
    assert stages == [("reminder", False), ("second_reminder", False)], "nothing passed over"


def test_english_formatting(setup: Any) -> None:
    setup.load("F-2,Example Ltd,ap@example.example,1234.56,EUR,2027-03-01,2027-03-31,en,,,business,\n")
    setup.tick("2027-04-05T10:00")
    (msg,) = setup.messages()
    text = msg.get_body(("plain",)).get_content()
    assert msg["Subject"] == "Reminder: invoice F-2 — ACME SAS"
    assert "€1,234.56" in text and "31 March 2027" in text and "payment plan" in text


def test_html_escapes_ledger_values(setup: Any) -> None:
    setup.load('F-<b>3,Evil <script>,e@exemple.example,10.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n')
    setup.tick("2027-04-05T10:00")
    (msg,) = setup.messages()
    html = msg.get_body(("html",)).get_content()
    assert "F-&lt;b&gt;3" in html and "<b>3" not in html


def test_never_twice_and_paid_invoices_left_alone(setup: Any) -> None:
    setup.load("F-1,A,a@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n"
               "F-2,B,b@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,100.00,,business,\n")
    setup.tick("2027-04-05T10:00")
    setup.tick("2027-04-05T10:01")
    setup.tick("2027-04-06T10:00")
    assert [m["X-Relance-Invoices"] for m in setup.messages()] == ["F-1"]


def test_payment_between_queue_and_send_cancels(setup: Any) -> None:
    """The invoice is re-read right before sending: a payment recorded meanwhile stops the reminder."""
    setup.load("F-1,A,a@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n")
    now = at("2027-04-05T10:00")
    with setup.engine.connect() as c:
        groups = plan_groups(load(c), setup.config, now)
    outbox = Outbox(setup.engine, setup.config, Renderer(setup.config.company), now, datetime.now(UTC))
    outbox.queue([g.group for g in groups])
    actions.record_payment(setup.engine, "F-1", now, None, "test")
    report = TickReport()

    async def run() -> None:
        async with SmtpMailer(setup.config.smtp, None) as mailer:
            await deliver(outbox, mailer, setup.config, report, _no_sleep)

    asyncio.run(run())
    assert setup.sink.received == [] and report.cancelled == 1
    assert setup.count(Reminder) == 0 and setup.count(Outbound, status="cancelled") == 1


def test_recipient_refused_bounces_the_invoice(setup: Any) -> None:
    setup.sink.refuse["gone@exemple.example"] = "550 5.1.1 <gone@exemple.example>: user unknown"
    setup.load("F-1,A,gone@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n"
               "F-2,B,b@exemple.example,50.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n")
    report = setup.tick("2027-04-05T10:00")
    assert len(report.failed) == 1 and "user unknown" in report.failed[0]
    assert [m["X-Relance-Invoices"] for m in setup.messages()] == ["F-2"], "the rest of the batch goes on"
    with setup.engine.connect() as c:
        state = c.execute(sa.select(table(Invoice).c.state).where(table(Invoice).c.number == "F-1")).scalar_one()
        reason = c.execute(sa.select(table(Event).c.reason).where(table(Event).c.kind == "bounced")).scalar_one()
    assert state == "bounced" and "550 5.1.1" in reason
    setup.tick("2027-04-20T10:00")
    assert [m["X-Relance-Invoices"] for m in setup.messages()] == ["F-2", "F-2"], "no more mail to a bounced address"


def test_temporary_failure_is_retried_with_backoff(setup: Any) -> None:
    setup.sink.fail_data.extend(["451 4.3.0 try again later", "451 4.3.0 try again later"])
    setup.load("F-1,A,a@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n")
    report = setup.tick("2027-04-05T10:00")
    assert len(report.sent) == 1 and len(setup.sink.received) == 1


def test_persistent_temporary_failure_is_deferred_then_sent_once(setup: Any) -> None:
    setup.sink.fail_data.extend(["451 4.3.0 busy"] * 3)
    setup.load("F-1,A,a@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n")
    report = setup.tick("2027-04-05T10:00")
    assert len(report.deferred) == 1 and not report.ok and setup.sink.received == []
    assert setup.count(Outbound, status="pending") == 1
    report = setup.tick("2027-04-05T11:00")
    assert len(report.sent) == 1 and len(setup.sink.received) == 1
    setup.tick("2027-04-05T12:00")
    assert len(setup.sink.received) == 1


def test_crash_while_sending_is_resolved_as_uncertain_not_resent(setup: Any) -> None:
    """A message left 'sending' by a dead process is never sent again; it counts as sent."""
    setup.load("F-1,A,a@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n")
    now = at("2027-04-05T10:00")
    with setup.engine.connect() as c:
        groups = plan_groups(load(c), setup.config, now)
    dead = Outbox(setup.engine, setup.config, Renderer(setup.config.company), now, datetime.now(UTC),
                  instance=f"{__import__('socket').gethostname()}:999999999")
    (ob_id,) = dead.queue([g.group for g in groups])
    assert dead.claim(ob_id) is not None  # ... and the process dies before the server answers
    report = setup.tick("2027-04-05T10:30")
    assert len(report.uncertain) == 1 and setup.sink.received == []
    assert setup.count(Outbound, status="uncertain") == 1
    setup.tick("2027-04-15T10:30")
    (msg,) = setup.messages()
    assert msg["Subject"].startswith("Deuxième relance"), "the ladder goes on from the uncertain stage"


def test_pending_left_by_a_crash_is_sent_once(setup: Any) -> None:
    setup.load("F-1,A,a@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n")
    now = at("2027-04-05T10:00")
    with setup.engine.connect() as c:
        groups = plan_groups(load(c), setup.config, now)
    Outbox(setup.engine, setup.config, Renderer(setup.config.company), now, datetime.now(UTC)).queue(
        [g.group for g in groups])  # recorded, then the process died before claiming
    setup.tick("2027-04-05T10:30")
    setup.tick("2027-04-05T10:40")
    assert len(setup.sink.received) == 1


def test_consolidated_reminder_lists_all_invoices_of_a_client(setup: Any, make_config: Callable[..., Config]) -> None:
    cfg = make_config(schedule={"consolidate": True},
                      smtp={"host": "127.0.0.1", "port": setup.port, "tls": "none", "username": "",
                            "rate_per_minute": 0})
    setup.load("F-1,Client A,a@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n"
               "F-2,Client A,a@exemple.example,300.00,EUR,2027-03-01,2027-03-30,fr,,,business,\n"
               "F-3,Client B,b@exemple.example,50.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n")
    setup.tick("2027-04-05T10:00", cfg)
    first = {m["X-Relance-Invoices"]: m for m in setup.messages()}
    assert set(first) == {"F-2, F-1", "F-3"}
    body = first["F-2, F-1"].get_body(("plain",)).get_content()
    assert "F-1" in body and "F-2" in body and "400,00" in body
    setup.tick("2027-04-15T10:00", cfg)
    second = [m for m in setup.messages() if m["Subject"].startswith("Deuxième")]
    both = next(m for m in second if "F-1" in m["X-Relance-Invoices"])
    assert both["In-Reply-To"] == first["F-2, F-1"]["Message-ID"]


def test_largest_amount_is_sent_first(setup: Any) -> None:
    setup.load("F-1,A,a@exemple.example,10.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n"
               "F-2,B,b@exemple.example,900.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n"
               "F-3,C,c@exemple.example,900.00,EUR,2027-03-01,2027-03-20,fr,,,business,\n")
    setup.tick("2027-04-05T10:00")
    assert [m["X-Relance-Invoices"] for m in setup.messages()] == ["F-3", "F-2", "F-1"]


def test_payment_landing_during_the_batch_stops_a_rendered_reminder(setup: Any) -> None:
    """Messages are rendered a chunk ahead; the last check right before sending still sees a payment."""
    setup.load("F-1,A,a@exemple.example,900.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n"
               "F-2,B,b@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n")
    now = at("2027-04-05T10:00")

    class PayingMailer(SmtpMailer):
        async def send(self, sender: str, recipients: list[str], data: bytes,
                       ready: Callable[[], Awaitable[None]] | None = None) -> list[str]:
            refused = await super().send(sender, recipients, data, ready)
            actions.record_payment(setup.engine, "F-2", now, None, "bank feed")  # lands mid-batch
            return refused

    report = asyncio.run(tick(setup.engine, setup.config, PayingMailer(setup.config.smtp, None), now,
                              datetime.now(UTC), sleep=_no_sleep))
    assert [m["X-Relance-Invoices"] for m in setup.messages()] == ["F-1"]
    assert report.cancelled == 1 and setup.count(Outbound, status="cancelled") == 1


def test_rate_limiter_spaces_sends_evenly() -> None:
    """60 a minute: one a second, without a burst, measured on a fake clock."""
    from bot.tick import RateLimiter

    clock = [100.0]
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter(60, clock=lambda: clock[0], sleep=fake_sleep)

    async def run() -> None:
        for _ in range(4):
            await limiter.wait()
            clock[0] += 0.25  # the send itself

    asyncio.run(run())
    assert waits == [0.75, 0.75, 0.75]
    unlimited = RateLimiter(0, clock=lambda: clock[0], sleep=fake_sleep)
    asyncio.run(unlimited.wait())
    assert len(waits) == 3


def test_sender_refused_stops_the_batch_without_blaming_the_client(setup: Any) -> None:
    """A 5xx on MAIL FROM is our configuration's fault: nothing bounces, everything stays queued."""
    async def refuse_sender(server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return "553 5.7.1 sender not allowed"

    setup.sink.handle_MAIL = refuse_sender  # type: ignore[attr-defined]
    setup.load("F-1,A,a@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n"
               "F-2,B,b@exemple.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n")
    report = setup.tick("2027-04-05T10:00")
    assert "refused the sender 'relances@acme.example'" in report.aborted and not report.failed
    assert setup.count(Invoice, state="bounced") == 0
    assert setup.count(Outbound, status="pending") + setup.count(Outbound, status="prepared") == 2, "still queued"
