"""`relance demo`: the whole bot against a local mail sandbox, with sample invoices and clients.

Three months of a credit controller's autumn in a few seconds: the ladder climbs day by day and
every reminder lands in a real IMAP mailbox; the clients answer by email (a transfer announced,
a promise, a dispute, a payment plan, an out-of-office), the bot reads the AR inbox, threads each
answer to its invoice and pauses escalation (a plan proposed for one invoice holds the client's
other one until a person reads it); an address bounces; a business that never answers gets a
formal notice with the commercial penalties, a consumer one without them; what needs a person
waits in triage."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from datetime import UTC, date, datetime, time, timedelta
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_date

from bot import actions, inbound, ledger, reports, store
from bot.config import Config, Secret, from_dict
from bot.i18n import language, t
from bot.mailbox import ImapSource
from bot.mailer import SmtpMailer
from bot.render import Renderer
from bot.sandbox import DELIVERED, MailSandbox
from bot.tick import tick

PARIS = ZoneInfo("Europe/Paris")
START, END = date(2025, 9, 1), date(2025, 11, 28)

LEDGER = """number,client,email,amount,currency,issue_date,due_date,language,paid,pdf,client_kind,cc
F-2025-0101,Boulangerie Martin SARL,compta@boulangerie-martin.example,1840.00,EUR,2025-08-06,2025-09-05,fr,,F-2025-0101.pdf,business,
F-2025-0102,Dupont & Fils SA,factures@dupont-fils.example,12500.00,EUR,2025-08-11,2025-09-10,fr,,F-2025-0102.pdf,business,direction@dupont-fils.example
F-2025-0103,Northwind Traders Ltd,accounts@northwind.example,3200.00,EUR,2025-08-13,2025-09-12,en,,,business,
F-2025-0104,Atelier Lumière,gestion@atelier-lumiere.example,640.00,EUR,2025-08-01,2025-09-01,fr,,,business,
F-2025-0105,Atelier Lumière,gestion@atelier-lumiere.example,1210.50,EUR,2025-08-08,2025-09-08,fr,,,business,
F-2025-0106,Jean Moreau,jean.moreau@exemple.example,450.00,EUR,2025-08-15,2025-09-15,fr,,,consumer,
F-2025-0107,Contoso GmbH,ap@contoso.example,990.00,EUR,2025-08-20,2025-09-19,en,990.00,,business,
F-2025-0108,Fabrikam SAS,compta@invalid.example,2750.00,EUR,2025-08-20,2025-09-19,fr,,,business,
F-2025-0109,Menuiserie Garnier SARL,compta@menuiserie-garnier.example,2180.00,EUR,2025-08-05,2025-09-04,fr,,,business,
"""

# What the clients answer, and when: (sender, invoice, subject or "" for a reply, body, extra headers).
REPLIES: dict[date, list[tuple[str, str, str, str, str]]] = {
    date(2025, 9, 10): [("compta@boulangerie-martin.example", "F-2025-0101", "",
                         "Bonjour,\n\nNous avons effectué le virement ce matin.\n\nCordialement,\nMme Martin", "")],
    date(2025, 9, 16): [("factures@dupont-fils.example", "F-2025-0102", "",
                         "Bonjour,\n\nNous contestons le montant : la remise de 5 % prévue au devis n'a pas été "
                         "appliquée.\nMerci de nous faire parvenir un avoir.\n\nP. Dupont", ""),
                        ("accounts@northwind.example", "F-2025-0103", "",
                         "Hello,\n\nSorry for the delay. We will pay on 15 October with our next payment run.\n\n"
                         "Best regards,\nAnna", "")],
    date(2025, 9, 19): [("jean.moreau@exemple.example", "F-2025-0106",
                         "Réponse automatique : absent jusqu'au 29 septembre",
                         "Je suis absent jusqu'au 29 septembre 2025 inclus, avec un accès limité à mes messages.",
                         "Auto-Submitted: auto-replied\r\n")],
    date(2025, 9, 17): [("gestion@atelier-lumiere.example", "F-2025-0104", "",
                         "Bonjour,\n\nLa trésorerie est tendue en ce moment. Pourrions-nous régler en 3 fois, "
                         "fin septembre, fin octobre et fin novembre ?\n\nMerci,\nLéa", "")],
}
PAYMENTS = {date(2025, 9, 19): ("F-2025-0101", "the bank statement shows Boulangerie Martin's transfer")}


def client_reply(sandbox: MailSandbox, sender: str, number: str, subject: str, body: str, extra: str,
                 day: date) -> None:
    """A client's answer to the last reminder it got about `number`, put in the AR inbox."""
    sent = [m for m in sandbox.messages() if number in str(m["X-Relance-Invoices"])]
    last = sent[-1]
    stamp = format_datetime(datetime.combine(day, time(9, 30), PARIS))
    raw = (f"From: {sender}\r\nTo: relances@acme.example\r\nDate: {stamp}\r\n"
           f"Subject: {subject or 'RE: ' + str(last['Subject'])}\r\n"
           f"Message-ID: <{day:%Y%m%d}.{number}@{sender.split('@')[1]}>\r\n"
           f"In-Reply-To: {last['Message-ID']}\r\nReferences: {last['Message-ID']}\r\n{extra}"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           + body.replace("\n", "\r\n") + "\r\n\r\n"
           + f"Le {format_date(day, 'long', locale='fr_FR')}, ACME SAS <relances@acme.example> a écrit :\r\n"
           + "> Bonjour,\r\n> Sauf erreur de notre part...\r\n")
    sandbox.append(raw.encode(), "INBOX")


def minimal_pdf(title: str) -> bytes:
    """A one-page PDF with one line of text: enough for an attachment a reader opens."""
    text = title.replace("\\", "").replace("(", "").replace(")", "")
    stream = f"BT /F1 18 Tf 72 760 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def demo_config(work: Path, smtp_port: int, imap_port: int) -> Config:
    return from_dict({
        "database": {"url": f"sqlite:///{work / 'relance.db'}"},
        "company": {"name": "ACME SAS", "email": "relances@acme.example", "signature": "Claire Petit, comptabilité",
                    "payment_details": "IBAN FR76 3000 6000 0112 3456 7890 189, BIC AGRIFRPP",
                    "phone": "+33 1 23 45 67 89", "language": "fr"},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "tls": "none", "username": "", "rate_per_minute": 0},
        "schedule": {"consolidate": True},
        "imap": {"host": "127.0.0.1", "port": imap_port, "tls": "none", "username": "ar@acme.example",
                 "folders": ["INBOX"]},
        "penalties": {"ecb_rates": {"2025-H1": "3.15", "2025-H2": "2.15"}},
    }, "<demo>")


def _day(day: date) -> str:
    """"Tue 30 Sep", "mar. 30 sept.": aligned in the language's widest form."""
    lang = language()
    return format_date(day, "EEE dd MMM", locale=lang).ljust(13 if lang == "fr" else 10)


def main(keep: bool = False) -> int:
    work = Path(tempfile.mkdtemp(prefix="relance-demo-"))
    try:
        with MailSandbox() as sandbox:
            run(work, sandbox)
    finally:
        if keep:
            print("\n" + t("the demo's database and files are kept in {work}", work=work))
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def run(work: Path, sandbox: MailSandbox) -> None:
    cfg = demo_config(work, sandbox.smtp_port, sandbox.imap_port)
    print(t("Mail sandbox: SMTP 127.0.0.1:{smtp} delivers into IMAP 127.0.0.1:{imap} (user {user}: what clients "
            "receive lands in {delivered}, their answers in INBOX)", smtp=sandbox.smtp_port, imap=sandbox.imap_port,
            user=sandbox.user, delivered=repr(DELIVERED)))
    engine = store.make_engine(cfg.database.url)
    store.migrate(engine)
    for number in ("F-2025-0101", "F-2025-0102"):
        (work / f"{number}.pdf").write_bytes(minimal_pdf(f"ACME SAS - Facture {number}"))
    (work / "ledger.csv").write_text(LEDGER, encoding="utf-8")
    result = ledger.import_rows(engine, ledger.read(work / "ledger.csv", "fr"),
                                datetime.combine(START, time(8), PARIS), "ledger.csv")
    print(t("Imported {rows} invoices ({settled} already paid). Ladder: {ladder}", rows=result.rows,
            settled=result.settled, ladder=" -> ".join(f"{s.name} (+{s.delay_days} d)" for s in cfg.ladder.stages))
          + "\n")
    renderer = Renderer.from_config(cfg)
    source = ImapSource(cfg.imap, Secret(sandbox.password))
    day = START
    try:
        while day <= END:
            now = datetime.combine(day, time(10), PARIS)
            for reply in REPLIES.get(day, []):
                client_reply(sandbox, *reply, day)
            for line in inbound.sync(engine, source, cfg, now, inbound.SyncReport()):
                print(f"{_day(day)}  {t('received'):<8} {line.rstrip()}")
            if day in PAYMENTS:
                number, why = PAYMENTS[day]
                actions.record_payment(engine, number, now, None, "demo")
                print(f"{_day(day)}  ** {t('paid'):<8} {number}: {why}")
            tick_report = asyncio.run(tick(engine, cfg, SmtpMailer(cfg.smtp, None), now, datetime.now(UTC),
                                           renderer=renderer))
            for line in tick_report.sent:
                print(f"{_day(day)}  {t('sent'):<8} {line}")
            for line in tick_report.failed:
                print(f"{_day(day)}  {t('undelivered'):<8} {line}")
            day += timedelta(days=1)
    finally:
        source.close()
    from bot.cli import STATUS_COLUMNS, table_out  # noqa: PLC0415 - the table printer lives with the CLI

    with engine.connect() as conn:
        rows = reports.status_rows(conn, cfg, datetime.combine(END, time(18), PARIS))
        triage = reports.messages(conn, triage_only=True)
    print("\n" + t("Status on {day}:", day=format_date(END, "d MMMM y", locale=language())))
    table_out(rows, STATUS_COLUMNS)
    print("\n" + t("Waiting for a person (relance messages --triage):"))
    table_out(triage, (("from", "FROM"), ("kind", "KIND"), ("invoices", "INVOICES"), ("reason", "WHY")))
    delivered = sandbox.messages()
    print("\n" + t("The sandbox IMAP mailbox received {n} messages, e.g.:", n=len(delivered)))
    for msg in delivered[-3:]:
        parts = [p.get_filename() for p in msg.iter_attachments()]
        threaded = t("threaded: yes") if msg["In-Reply-To"] else t("threaded: first")
        print(f"  {msg['Subject']}  ({threaded}"
              + (", " + t("attached: {files}", files=", ".join(map(str, parts))) if parts else "") + ")")
    notice = next((m for m in delivered if "Mise en demeure" in str(m["Subject"])), None)
    if notice is not None:
        print("\n" + t("A formal notice, as the client reads it:") + "\n")
        body = notice.get_body(("plain",))
        print("  " + (body.get_content() if body else "").replace("\r\n", "\n").replace("\n", "\n  ").rstrip())
    engine.dispose()
