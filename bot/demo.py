"""`relance demo`: the whole outbound side against a local mail sandbox, with sample invoices.

Three months of a credit controller's autumn in a few seconds: the ladder climbs day by day,
one client pays, one calls and is paused, an address bounces, a consumer gets a formal notice
without the commercial penalties, and every reminder lands in a real IMAP mailbox."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bot import actions, ledger, reports, store
from bot.config import Config, from_dict
from bot.mailer import SmtpMailer
from bot.render import Renderer
from bot.sandbox import MailSandbox
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
"""

# What happens on given days, as a credit controller would record it.
HAPPENINGS = {
    date(2025, 9, 29): ("paid", "F-2025-0102", "Dupont & Fils paid by transfer after the second reminder"),
    date(2025, 9, 22): ("pause", "F-2025-0103", "Northwind's AP manager called: payment run on 15 October"),
}


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


def demo_config(work: Path, smtp_port: int) -> Config:
    return from_dict({
        "database": {"url": f"sqlite:///{work / 'relance.db'}"},
        "company": {"name": "ACME SAS", "email": "relances@acme.example", "signature": "Claire Petit, comptabilité",
                    "payment_details": "IBAN FR76 3000 6000 0112 3456 7890 189, BIC AGRIFRPP",
                    "phone": "+33 1 23 45 67 89", "language": "fr"},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "tls": "none", "username": "", "rate_per_minute": 0},
        "schedule": {"consolidate": True},
        "penalties": {"ecb_rates": {"2025-H1": "3.15", "2025-H2": "2.15"}},
    }, "<demo>")


def main(keep: bool = False) -> int:
    work = Path(tempfile.mkdtemp(prefix="relance-demo-"))
    try:
        with MailSandbox() as sandbox:
            run(work, sandbox)
    finally:
        if keep:
            print(f"\nthe demo's database and files are kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def run(work: Path, sandbox: MailSandbox) -> None:
    cfg = demo_config(work, sandbox.smtp_port)
    print(f"Mail sandbox: SMTP 127.0.0.1:{sandbox.smtp_port} delivers into IMAP 127.0.0.1:{sandbox.imap_port} "
          f"(user {sandbox.user})")
    engine = store.make_engine(cfg.database.url)
    store.migrate(engine)
    for number in ("F-2025-0101", "F-2025-0102"):
        (work / f"{number}.pdf").write_bytes(minimal_pdf(f"ACME SAS - Facture {number}"))
    (work / "ledger.csv").write_text(LEDGER, encoding="utf-8")
    result = ledger.import_rows(engine, ledger.read(work / "ledger.csv", "fr"),
                                datetime.combine(START, time(8), PARIS), "ledger.csv")
    print(f"Imported {result.rows} invoices ({result.settled} already paid). Ladder: "
          + " -> ".join(f"{s.name} (+{s.delay_days} d)" for s in cfg.ladder.stages) + "\n")
    renderer = Renderer.from_config(cfg)
    day = START
    while day <= END:
        now = datetime.combine(day, time(10), PARIS)
        happening = HAPPENINGS.get(day)
        if happening:
            kind, number, why = happening
            if kind == "paid":
                actions.record_payment(engine, number, now, None, "demo")
            else:
                actions.pause(engine, number, now, datetime.combine(date(2025, 10, 15), time(0), PARIS), why,
                              "demo")
            print(f"{day:%a %d %b}  ** {why}")
        report = asyncio.run(tick(engine, cfg, SmtpMailer(cfg.smtp, None), now, datetime.now(UTC),
                                  renderer=renderer))
        for line in report.sent:
            print(f"{day:%a %d %b}  sent     {line}")
        for line in report.failed:
            print(f"{day:%a %d %b}  bounced  {line}")
        day += timedelta(days=1)
    with engine.connect() as conn:
        rows = reports.status_rows(conn, cfg, datetime.combine(END, time(18), PARIS))
    print(f"\nStatus on {END:%d %B %Y}:")
    from bot.cli import STATUS_COLUMNS, table_out  # noqa: PLC0415 - the table printer lives with the CLI

    table_out(rows, STATUS_COLUMNS)
    inbox = sandbox.messages()
    print(f"\nThe sandbox IMAP mailbox received {len(inbox)} messages, e.g.:")
    for msg in inbox[-3:]:
        parts = [p.get_filename() for p in msg.iter_attachments()]
        print(f"  {msg['Subject']}  (threaded: {'yes' if msg['In-Reply-To'] else 'first'}"
              f"{', attached: ' + ', '.join(map(str, parts)) if parts else ''})")
    notice = next((m for m in inbox if "Mise en demeure" in str(m["Subject"])), None)
    if notice is not None:
        print("\nA formal notice, as the client reads it:\n")
        body = notice.get_body(("plain",))
        print("  " + (body.get_content() if body else "").replace("\r\n", "\n").replace("\n", "\n  ").rstrip())
    engine.dispose()
