"""What an attacker (or a careless export) can put in an invoice file, and what the outbox does
with it: nothing reaches a header, one bad row fails alone, nothing is called sent or bounced
that was not. Imports are read by the real ledger code, mail goes to a real aiosmtpd on loopback,
the store is real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import ledger, reports
from bot.config import Config
from bot.errors import ImportFileError
from bot.mailer import SmtpMailer
from bot.models import Client, Contact, Event, Invoice, Outbound, table
from bot.tick import TickReport, tick
from tests.conftest import at, no_sleep
from tests.servers import SmtpSink, smtp_server

HEADER = "number,client,email,amount,currency,issue_date,due_date,language,paid,pdf,client_kind,cc\n"
GOOD = "F-2,Bon Client,bon@client.example,100.00,EUR,2027-03-01,2027-03-31,fr,,,business,\n"


def _row(number: str = "F-1", client: str = "Client", email: str = "a@client.example", cc: str = "") -> str:
    def cell(v: str) -> str:
        return '"' + v.replace('"', '""') + '"'
    return ",".join([cell(number), cell(client), cell(email), "100.00", "EUR", "2027-03-01", "2027-03-31", "fr",
                     "", "", "business", cell(cc)]) + "\n"


def _read(tmp_path: Path, body: str) -> list[ledger.Row]:
    path = tmp_path / "ledger.csv"
    path.write_text(HEADER + body, encoding="utf-8", newline="")
    return ledger.read(path, "fr")


def _errors(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ImportFileError) as e:
        _read(tmp_path, body)
    return e.value.errors


# -- the invoice file ---------------------------------------------------------------------------

CONTROL = ["\n", "\r", "\x0b", "\x0c", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\t",
           "\u202e", "\u2066"]  # a right-to-left override, an isolate: text that shows as what it is not


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize("column", ["number", "client", "email", "cc"])
def test_control_characters_are_refused_at_import(tmp_path: Path, column: str, char: str) -> None:
    """No line end, NUL or other control character gets past the import, in any column."""
    value = {"number": f"F-R1{char}Reply-To : pay@attacker.example",
             "client": f"Client{char}Bcc : victim@evil.example",
             "email": f"a{char}@client.example", "cc": f"c{char}@client.example"}[column]
    errors = _errors(tmp_path, GOOD + _row(**{column: value}))
    assert f"ledger.csv:3: {column}: control character" in "\n".join(errors), errors


def test_a_field_too_long_for_the_csv_reader_names_its_line(tmp_path: Path) -> None:
    """A 200,000-character field is an error at FILE:LINE, not a _csv.Error traceback; the other
    rows are still checked."""
    errors = _errors(tmp_path, GOOD + _row(client="x" * 200_000) + _row(number="F-3", email="bad"))
    text = "\n".join(errors)
    assert "ledger.csv:3:" in text and "ledger.csv:4: email:" in text, errors


@pytest.mark.parametrize(("column", "limit"), [("number", 64), ("client", 200), ("email", 254)])
def test_values_longer_than_the_contract_allows_are_refused(tmp_path: Path, column: str, limit: int) -> None:
    """Long values are refused at import, with the limit written in the contract, rather than
    sent as a header line the server refuses."""
    too_long = {"number": "F-" + "1" * (limit - 1), "client": "é" * (limit + 1),
                "email": "a" * 64 + "@" + ("b" * 60 + ".") * 4 + "example"}[column]
    errors = _errors(tmp_path, _row(**{column: too_long}))
    assert any(f"ledger.csv:2: {column}:" in e and str(limit) in e for e in errors), errors
    assert _read(tmp_path, _row(**{column: too_long[:limit] if column != "email" else "a@client.example"}))


@pytest.mark.parametrize("address", [
    "a(b)c:d\\e@ok.example",  # a comment and a quoted-pair: the RCPT would not be the To:
    '"quoted"@ok.example',
    "Name <a@ok.example>",
    "a@[127.0.0.1]",
    "a@@ok.example",
    "a@ok",
])
def test_only_plain_addresses_are_accepted(tmp_path: Path, address: str) -> None:
    for column in ("email", "cc"):
        errors = _errors(tmp_path, _row(**{column: address}))
        assert any(f"ledger.csv:2: {column}:" in e for e in errors), errors


def test_international_addresses_are_validated_and_normalised(tmp_path: Path) -> None:
    """An internationalised address is a valid address (it needs SMTPUTF8 to travel); a non-ASCII
    domain is stored in its ASCII (IDNA) form, which every server takes."""
    (row,) = _read(tmp_path, _row(email="josé@ok.example", cc="x@bücher.example"))
    assert row.email == "josé@ok.example" and row.cc == "x@xn--bcher-kva.example"


# -- the outbox, with data that got into the store before these checks ----------------------------

@pytest.fixture
def outbox(engine: Engine, make_config: Callable[..., Config], tmp_path: Path) -> Any:
    class Outbox:
        def __init__(self) -> None:
            self.engine = engine

        def load(self, body: str) -> None:
            path = tmp_path / "ledger.csv"
            path.write_text(HEADER + body, encoding="utf-8")
            ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "ledger.csv")

        def corrupt(self, which: str, **values: str) -> None:
            """Write what the import now refuses straight into the store, as an older version let in."""
            inv, cli, con = table(Invoice), table(Client), table(Contact)
            with engine.begin() as c:
                row = c.execute(sa.select(inv.c.id, inv.c.client_id, inv.c.contact_id)
                                .where(inv.c.number == which)).one()
                if "client" in values:
                    c.execute(sa.update(cli).where(cli.c.id == row.client_id).values(name=values["client"]))
                if "email" in values or "cc" in values:
                    c.execute(sa.update(con).where(con.c.id == row.contact_id).values(
                        **{k: v for k, v in values.items() if k in ("email", "cc")}))
                if "number" in values:
                    c.execute(sa.update(inv).where(inv.c.id == row.id).values(number=values["number"]))

        def tick(self, port: int, now: str = "2027-04-05T10:00") -> TickReport:
            cfg = make_config(smtp={"host": "127.0.0.1", "port": port, "tls": "none", "username": "",
                                    "rate_per_minute": 0, "retries": 1, "retry_backoff_seconds": "0.01"})
            self.config = cfg
            return asyncio.run(tick(engine, cfg, SmtpMailer(cfg.smtp, None), at(now), datetime.now(UTC),
                                    sleep=no_sleep))

        def statuses(self) -> dict[str, str]:
            out = table(Outbound)
            with engine.connect() as c:
                return {r.to_addr: r.status for r in c.execute(sa.select(out.c.to_addr, out.c.status))}

        def invoice(self, like: str) -> dict[str, Any]:
            with engine.connect() as c:
                (row,) = [r for r in reports.status_rows(c, self.config, at("2027-04-05T10:05"))
                          if r["number"].startswith(like)]
                return row

        def events(self, kind: str) -> list[str]:
            ev = table(Event)
            with engine.connect() as c:
                return list(c.execute(sa.select(ev.c.reason).where(ev.c.kind == kind)).scalars())

    return Outbox()


@pytest.fixture
def smtp_ascii() -> Any:
    """A server that does not offer SMTPUTF8 (aiosmtpd's Controller offers it unless told not to)."""
    with smtp_server(enable_SMTPUTF8=False) as server:
        yield server


def _skip_nul_on_postgres(engine: Engine, value: str) -> None:
    if "\x00" in value and engine.dialect.name == "postgresql":
        pytest.skip("PostgreSQL text cannot hold a NUL: the case cannot arise there")


def _headers(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line and not line[0].isspace()]


@pytest.mark.parametrize(("column", "value"), [
    ("number", "F-R1\nReply-To : pay@attacker.example"),
    ("client", "Client\nBcc : x@evil.example"),
    ("client", "Client\x0bBcc : victim@evil.example"),
    ("client", "Client\x0cBcc : victim@evil.example"),
    ("client", "Client\n\nThe header block ends here"),
    ("client", "Client\x00Name"),
])
def test_no_data_field_reaches_a_header_line(outbox: Any, smtp: tuple[SmtpSink, int], column: str,
                                             value: str) -> None:
    """A control character already in the store makes no header: that message fails alone with
    its reason on the invoice (state unchanged, next action "fix the data"), the batch goes on."""
    sink, port = smtp
    _skip_nul_on_postgres(outbox.engine, value)
    outbox.load(_row() + GOOD)
    outbox.corrupt("F-1", **{column: value})
    report = outbox.tick(port)
    for _, _, raw in sink.received:
        assert set(_headers(raw)) <= {"Content-Type", "MIME-Version", "From", "To", "Cc", "Reply-To", "Subject",
                                      "Date", "Message-ID", "In-Reply-To", "References", "X-Relance-Invoices",
                                      "Content-Transfer-Encoding"}, _headers(raw)
        assert b"evil.example" not in raw and b"attacker.example" not in raw
    assert [rcpts for _, rcpts, _ in sink.received] == [["bon@client.example"]], "the batch goes on"
    bad = outbox.invoice("F-R1" if column == "number" else "F-1")
    assert bad["state"] == "active" and bad["next_action"] == "fix_data", bad
    assert any("control character" in e for e in report.failed), report.failed
    assert outbox.statuses()["a@client.example"] == "failed"


def test_an_address_the_server_cannot_take_fails_alone(outbox: Any, smtp_ascii: tuple[SmtpSink, int]) -> None:
    """`josé@ok.example` to a server without SMTPUTF8: no traceback, no message left 'sending' to
    turn 'uncertain'; the invoice says why, the rest of the batch is sent."""
    sink, port = smtp_ascii
    outbox.load(_row(email="josé@ok.example") + GOOD)
    report = outbox.tick(port)
    assert [rcpts for _, rcpts, _ in sink.received] == [["bon@client.example"]]
    assert any("SMTPUTF8" in e for e in report.failed), report.failed
    assert outbox.statuses()["josé@ok.example"] == "failed"
    bad = outbox.invoice("F-1")
    assert bad["state"] == "active" and bad["next_action"] == "fix_data"
    again = outbox.tick(port, "2027-04-05T11:00")
    assert not again.uncertain and not again.failed, "not retried every tick until the data changes"


@pytest.mark.parametrize("column", ["email", "cc"])
def test_an_international_address_goes_with_smtputf8_when_offered(outbox: Any, column: str) -> None:
    with smtp_server(enable_SMTPUTF8=True) as (sink, port):
        outbox.load(_row(**{column: "josé@ok.example"}))
        report = outbox.tick(port)
    assert len(report.sent) == 1, report
    ((_, rcpts, raw),) = sink.received
    assert "josé@ok.example" in rcpts
    msg = message_from_bytes(raw, policy=email_policy.SMTPUTF8)
    assert "josé@ok.example" in str(msg["To" if column == "email" else "Cc"])


@pytest.mark.parametrize("cc", ["cé@ok.example", "c\x00c@ok.example"])
def test_an_error_before_data_is_not_sent_never_uncertain(outbox: Any, smtp_ascii: tuple[SmtpSink, int],
                                                          cc: str) -> None:
    """A Cc that cannot be written at RCPT: the message was not sent, and says so."""
    sink, port = smtp_ascii
    _skip_nul_on_postgres(outbox.engine, cc)
    outbox.load(_row() + GOOD)
    outbox.corrupt("F-1", cc=cc)
    report = outbox.tick(port)
    assert not report.uncertain
    report = outbox.tick(port, "2027-04-05T10:30")
    assert not report.uncertain, "nothing left 'sending' for the next tick to call uncertain"
    assert outbox.statuses()["a@client.example"] == "failed"
    assert outbox.invoice("F-1")["next_action"] == "fix_data"
    assert [rcpts for _, rcpts, _ in sink.received] == [["bon@client.example"]]


def test_a_long_name_is_folded_not_a_line_too_long(outbox: Any, smtp: tuple[SmtpSink, int]) -> None:
    """A 200-character name of accented letters (the longest the import takes) makes no header
    line over 78 characters."""
    sink, port = smtp
    outbox.load(_row(client="Société " * 24 + "Straße S"))  # 200 characters, 201 once casefolded
    report = outbox.tick(port)
    assert len(report.sent) == 1, report
    ((_, _, raw),) = sink.received
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78


def test_a_message_refused_for_its_content_does_not_bounce_the_client(outbox: Any,
                                                                     smtp: tuple[SmtpSink, int]) -> None:
    """`500 Line too long` is about the message, not the recipient: no bounce, no failing address."""
    sink, port = smtp
    outbox.load(_row() + GOOD)
    sink.fail_data.append("500 Line too long")
    report = outbox.tick(port)
    assert any("500 Line too long" in e for e in report.failed)
    bad = next(r for r in (outbox.invoice("F-1"),))
    assert bad["state"] == "active" and bad["next_action"] == "fix_data"
    assert outbox.events("bounced") == []
    with outbox.engine.connect() as c:
        assert not c.execute(sa.select(table(Contact).c.failing)
                             .where(table(Contact).c.email == "a@client.example")).scalar_one()


def test_a_recipient_status_on_data_bounces(outbox: Any, smtp: tuple[SmtpSink, int]) -> None:
    """A 5xx on DATA that names the mailbox (5.1.x) is the recipient's: the invoice bounces."""
    sink, port = smtp
    outbox.load(_row())
    sink.fail_data.append("550 5.1.1 <a@client.example>: mailbox unknown")
    outbox.tick(port)
    assert outbox.invoice("F-1")["state"] == "bounced"


def test_the_command_line_after_a_bad_row(cli: Any) -> None:
    """What a person sees: one tick names the reminder not sent and why, in one line, no
    traceback; the next ticks go on; status says fix_data; check says some invoices wait."""
    import json

    from bot import store
    from tests.test_contract_like import LEDGER

    assert cli("init").returncode == 0
    (cli.work / "ledger.csv").write_text(LEDGER)
    assert cli("import", "ledger.csv").returncode == 0
    engine = store.make_engine(f"sqlite:///{cli.work / 'relance.db'}")
    with engine.begin() as c:  # as an older version let in
        c.execute(sa.update(table(Client)).where(table(Client).c.name == "Société Exemple")
                  .values(name="Société\nBcc : x@evil.example"))
    engine.dispose()
    now = ("--now", "2027-04-12T10:00:00+02:00")
    first = cli("tick", *now)
    assert first.returncode == 1 and "Traceback" not in first.stderr
    assert "F-1001" in first.stdout and "control character" in first.stdout, first.stdout
    assert len(cli.sink.received) == 1, "the other reminder went"
    assert cli("tick", "--now", "2027-04-12T10:30:00+02:00").returncode == 0, "the next tick goes on"
    rows = {r["number"]: r for r in json.loads(cli("status", "--json", *now).stdout)}
    assert rows["F-1001"]["next_action"] == "fix_data" and rows["F-1001"]["state"] == "active"
    check = cli("check", "--now", "2026-03-02T10:00:00+01:00")
    assert "1 invoice(s) get no reminder until their data is fixed" in check.stderr, check.stderr


def test_a_large_attachment_is_not_read_but_its_name_and_the_text_are() -> None:
    """Above 1 MB, attachments' bytes are left out before parsing (memory follows the text, not
    the scan); the text, even base64-encoded, and the attachment's name are still read."""
    import base64
    import os
    import tracemalloc

    from bot.understand import parse

    text = base64.encodebytes(b"Bonjour, le virement de la facture F-1 est parti ce matin.")
    pdf = base64.encodebytes(os.urandom(3 * 2**20))
    raw = (b"From: a@client.example\r\nTo: ar@acme.example\r\nSubject: F-1\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + text +
           b'--b\r\nContent-Type: application/pdf; name="preuve.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
           b'Content-Disposition: attachment; filename="preuve.pdf"\r\n\r\n' + pdf + b"--b--\r\n")
    tracemalloc.start()
    parsed = parse(raw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "le virement de la facture F-1 est parti" in parsed.facts.text
    assert parsed.facts.attachments == ("preuve.pdf",)
    assert peak < len(raw), f"parsing took {peak:,} bytes for a {len(raw):,}-byte message"


# -- what an email may carry -----------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    b"=?utf-8?q?R=E8glement_facture_F-1?=",  # declared UTF-8, written in Latin-1
    b"=?x-unknown?q?R=E8glement_facture_F-1?=",  # a charset no one knows
    b"R\xe8glement facture F-1",  # raw 8-bit Latin-1
    "Règlement facture F-1".encode(),  # raw 8-bit UTF-8 (RFC 6532)
    b"=?windows-1252?q?R=E8glement?=\r\n facture F-1",
])
def test_a_subject_with_a_broken_charset_keeps_its_letters(header: bytes) -> None:
    """Decoded with the fallbacks mail clients use: declared charset, UTF-8, Windows-1252."""
    from bot.understand import parse

    raw = b"From: a@client.example\r\nTo: ar@acme.example\r\nSubject: " + header + b"\r\n\r\nBonjour\r\n"
    assert parse(raw).subject == "Règlement facture F-1"


@pytest.mark.parametrize("pdf", ["../../../../../../etc/passwd", "/etc/passwd", "out.pdf"])
def test_an_attachment_path_outside_its_folder_is_an_import_error(tmp_path: Path, pdf: str) -> None:
    """Whoever can write the CSV must not mail any file the daemon can read: `..`, an absolute path
    and a symlink out of the folder are refused, with the file and line."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "out.pdf").symlink_to("/etc/passwd")
    (tmp_path / "in" / "F-1.pdf").write_bytes(b"%PDF-1.4")
    csv = tmp_path / "in" / "ledger.csv"
    csv.write_text("number,client,email,amount,currency,issue_date,due_date,pdf\n"
                   "F-1,A,a@a.example,10.00,EUR,2027-03-01,2027-03-31,F-1.pdf\n"
                   f"F-2,B,b@b.example,10.00,EUR,2027-03-01,2027-03-31,{pdf}\n")
    with pytest.raises(ImportFileError) as e:
        ledger.read(csv, "en")
    assert any(line.startswith(f"{csv}:3: pdf:") and "outside the attachments folder" in line
               for line in e.value.errors), e.value.errors
    (tmp_path / "in" / "ledger.csv").write_text("number,client,email,amount,currency,issue_date,due_date,pdf\n"
                                                "F-1,A,a@a.example,10.00,EUR,2027-03-01,2027-03-31,F-1.pdf\n")
    assert ledger.read(csv, "en")[0].pdf == str((tmp_path / "in" / "F-1.pdf").resolve())
