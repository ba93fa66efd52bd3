"""The operator's daily digest, through a real SMTP server: what waits for a person, once a day,
in the company's language, nothing when nothing waits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import inbound, ledger
from bot.config import Config
from bot.mailbox import MemorySource
from bot.mailer import SmtpMailer
from bot.models import Outbound, table
from bot.tick import tick
from tests.conftest import at, no_sleep
from tests.servers import SmtpSink

LEDGER = ("number,client,email,amount,currency,issue_date,due_date\n"
          "F-1,Garage Leroux,compta@leroux.example,4800.00,EUR,2027-02-01,2027-04-01\n"
          "F-2,Boulangerie,compta@boulangerie.example,350.00,EUR,2027-02-01,2027-04-01\n")


def test_the_digest_lists_what_waits_once_a_day(engine: Engine, smtp: tuple[SmtpSink, int],
                                               make_config: Callable[..., Config], tmp_path: Path) -> None:
    sink, port = smtp
    cfg = make_config(company={"operator_email": "controle@acme.example"},
                      smtp={"host": "127.0.0.1", "port": port, "tls": "none", "username": "", "rate_per_minute": 0})
    path = tmp_path / "ledger.csv"
    path.write_text(LEDGER, encoding="utf-8")
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "ledger.csv")

    def run_tick(when: str) -> str:
        report = asyncio.run(tick(engine, cfg, SmtpMailer(cfg.smtp, None), at(when), datetime.now(UTC),
                                  sleep=no_sleep))
        return report.digest

    assert run_tick("2027-04-05T10:00") == "", "nothing waits for a person: no digest"
    assert [m["To"].addresses[0].addr_spec for m in sink.messages()] == ["compta@leroux.example",
                                                                        "compta@boulangerie.example"]
    reply = (b"From: compta@leroux.example\r\nSubject: Votre facture\r\nMessage-ID: <r1@leroux.example>\r\n"
             b"Date: Mon, 05 Apr 2027 15:00:00 +0200\r\n\r\nPourquoi ce montant ? Je ne comprends pas.\r\n")
    inbound.store_new(engine, MemorySource({"INBOX": [reply]}), "INBOX", at("2027-04-05T15:00"), inbound.SyncReport())
    inbound.process(engine, cfg, at("2027-04-05T15:01"))
    assert run_tick("2027-04-06T07:00") == "", "before the sending window: not yet"
    sink.fail_data.append("451 4.3.0 try again later")
    assert "not sent" in run_tick("2027-04-06T09:30"), "a temporary failure..."
    line = run_tick("2027-04-06T10:00")  # ...is tried again at the next tick
    assert "controle@acme.example" in line
    digest = sink.messages()[-1]
    assert digest["To"].addresses[0].addr_spec == "controle@acme.example"
    assert "attendent une décision" in str(digest["Subject"]), "in the company's language"
    body = digest.get_content()
    assert "F-1" in body and "4\u202f800,00" in body, "the client's open invoice, held, with its amount"
    assert "F-2" not in body, "another client's invoice goes on"
    assert "n° 1" in body and "Votre facture" in body, "and the message to triage"
    assert run_tick("2027-04-06T14:00") == "", "once a day"
    assert run_tick("2027-04-07T10:00") != "", "the next day again, while it still waits"
    with engine.connect() as c:
        rows = c.execute(sa.select(table(Outbound).c.message_id, table(Outbound).c.status)
                         .where(table(Outbound).c.stage == "digest").order_by(table(Outbound).c.id)).all()
    assert [tuple(r) for r in rows] == [("<relance.digest.2027-04-06@acme.example>", "sent"),
                                       ("<relance.digest.2027-04-07@acme.example>", "sent")]


def test_a_claim_that_led_to_nothing_is_recalled_in_the_next_reminder(
        engine: Engine, smtp: tuple[SmtpSink, int], make_config: Callable[..., Config], tmp_path: Path) -> None:
    """The client said on 6 April it had paid: the ladder waits `payment_claim_days`, then the second
    reminder says so ("vous nous avez indiqué le 6 avril 2027 ...") instead of ignoring the answer."""
    sink, port = smtp
    cfg = make_config(smtp={"host": "127.0.0.1", "port": port, "tls": "none", "username": "", "rate_per_minute": 0})
    path = tmp_path / "ledger.csv"
    path.write_text(LEDGER.splitlines()[0] + "\n" + LEDGER.splitlines()[1] + "\n", encoding="utf-8")
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "ledger.csv")

    def run_tick(when: str) -> None:
        asyncio.run(tick(engine, cfg, SmtpMailer(cfg.smtp, None), at(when), datetime.now(UTC), sleep=no_sleep))

    run_tick("2027-04-05T10:00")
    (first,) = sink.messages()
    reply = (f"From: compta@leroux.example\r\nSubject: RE: {first['Subject']}\r\nMessage-ID: <c1@leroux.example>\r\n"
             f"In-Reply-To: {first['Message-ID']}\r\nDate: Tue, 06 Apr 2027 09:00:00 +0200\r\n\r\n"
             "Bonjour, nous avons effectué le virement hier. Cordialement.\r\n").encode()
    inbound.store_new(engine, MemorySource({"INBOX": [reply]}), "INBOX", at("2027-04-06T09:05"), inbound.SyncReport())
    (line,) = inbound.process(engine, cfg, at("2027-04-06T09:05"))
    assert line.startswith("applied") and "payment_claim" in line, line
    run_tick("2027-04-15T10:00")
    assert len(sink.messages()) == 1, "the claim holds the ladder for payment_claim_days"
    run_tick("2027-04-19T10:00")
    second = sink.messages()[-1]
    text = second.get_body(("plain",)).get_content()
    assert "Deuxième relance" in str(second["Subject"])
    assert "Vous nous avez indiqué le 6 avril 2027 que le règlement avait été effectué" in text, text


def test_an_address_or_data_that_fails_is_in_the_digest(engine: Engine, make_config: Callable[..., Config],
                                                        tmp_path: Path) -> None:
    """Active invoices that get no reminder until a person acts (their address fails, or their last
    reminder failed on its data) are listed, in words in both languages: nothing waits unsaid."""
    from bot import digest

    path = tmp_path / "ledger.csv"
    path.write_text(LEDGER + "F-3,Atelier Roux,compta@roux.example,120.00,EUR,2027-02-01,2027-04-01\n",
                    encoding="utf-8")
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "ledger.csv")
    with engine.begin() as c:
        c.execute(sa.text("UPDATE contact SET failing = true WHERE email = 'compta@leroux.example'"))
        c.execute(sa.text("UPDATE invoice SET data_error = 'Subject: control character' WHERE number = 'F-2'"))
    invoices, _ = digest.waiting(engine)
    assert [(w.number, w.why) for w in invoices] == [("F-1", "bounced"), ("F-2", "fix_data")]
    cfg = make_config()
    fr = digest.render(cfg, invoices, [], at("2027-04-06T10:00"), "fr").text
    en = digest.render(cfg, invoices, [], at("2027-04-06T10:00"), "en").text
    assert "adresse en échec" in fr and "données à corriger" in fr
    assert "address failing" in en and "its data to fix" in en
