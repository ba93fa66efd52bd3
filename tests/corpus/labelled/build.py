"""Renders cases.toml into raw messages, each in its mail client's shape (quote blocks included)."""

from __future__ import annotations

import html
import tomllib
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
BODY_HEADERS = ("content-type", "mime-version", "content-transfer-encoding", "message-id", "date", "from", "to",
                "subject")
QUOTED = ("Bonjour,\nSauf erreur de notre part, la facture suivante reste impayée à ce jour.\n"
          "Bien cordialement,\nService comptabilité")


@dataclass(frozen=True)
class Case:
    id: str
    client: str
    kind: str
    body: str
    sender: str
    invoices: tuple[str, ...]
    thread: bool = True
    subject: str = ""
    sure: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    attachments: tuple[str, ...] = ()


def load() -> list[Case]:
    doc: dict[str, Any] = tomllib.loads((HERE.parent.parent.parent / "bot" / "corpus" / "first-cases.toml").read_text())
    return [Case(id=c["id"], client=c["client"], kind=c["kind"], body=c["body"], sender=c["from"],
                 invoices=tuple(c["invoices"]), thread=c.get("thread", True), subject=c.get("subject", ""),
                 sure=c.get("sure", True), headers=c.get("headers", {}), attachments=tuple(c.get("attachments", ())))
            for c in doc["case"]]


def quote_as(client: str, body: str, subject: str) -> tuple[str, str | None]:
    """The reply as `client` writes it: (plain text, html or None)."""
    q = "\n".join("> " + line for line in QUOTED.split("\n"))
    attribution_fr = "Le lun. 5 avr. 2027 à 10:00, ACME SAS <relances@acme.example> a\u00a0écrit\u00a0:"
    if client == "gmail":
        return f"{body}\n\n{attribution_fr}\n\n{q}\n", None
    if client == "apple_fr":
        return f"{body}\n\n> Le 5 avr. 2027 à 10:00, ACME SAS <relances@acme.example> a écrit :\n>\n{q}\n", None
    if client == "iphone":
        return (f"{body}\n\nEnvoyé de mon iPhone\n\n> On 5 Apr 2027, at 10:00, ACME SAS <relances@acme.example> "
                f"wrote:\n>\n{q}\n"), None
    if client in ("outlook_fr", "outlook_en"):
        fr = client == "outlook_fr"
        head = ("De\u00a0: ACME SAS <relances@acme.example>\nEnvoyé\u00a0: lundi 5 avril 2027 10:00\nÀ\u00a0: vous\n"
                f"Objet\u00a0: {subject}") if fr else (
                "From: ACME SAS <relances@acme.example>\nSent: Monday, April 5, 2027 10:00 AM\nTo: you\n"
                f"Subject: {subject}")
        return f"{body}\n\n________________________________\n{head}\n\n{QUOTED}\n", None
    if client in ("html_gmail", "html_outlook"):
        mine = "".join(f"<div>{html.escape(line) or '<br>'}</div>" for line in body.split("\n"))
        theirs = "".join(f"<div>{html.escape(line)}</div>" for line in QUOTED.split("\n"))
        if client == "html_gmail":
            page = (f'<div dir="ltr">{mine}</div><br><div class="gmail_quote"><div class="gmail_attr">'
                    f"{html.escape(attribution_fr)}</div><blockquote>{theirs}</blockquote></div>")
        else:
            page = (f'<div>{mine}</div><div id="appendonsend"></div><hr style="display:inline-block">'
                    f'<div id="divRplyFwdMsg"><b>De :</b> ACME SAS<br><b>Envoyé :</b> lundi 5 avril 2027</div>'
                    f"<div>{theirs}</div>")
        return "", f"<html><body>{page}</body></html>"
    return f"{body}\n", None


def render(case: Case, reminders: dict[str, tuple[str, str]]) -> bytes:
    """The raw message. `reminders` maps an invoice number to our reminder's (Message-ID, Subject)."""
    mid, our_subject = reminders.get(case.invoices[0], ("", "")) if case.invoices else ("", "")
    subject = case.subject or f"RE: {our_subject}"
    text, page = quote_as(case.client, case.body, our_subject)
    return message(case.sender, subject, f"<{case.id}@client.example>", "Tue, 06 Apr 2027 09:30:00 +0200",
                   mid if case.thread else "", case.headers, text, page, case.attachments)


def message(sender: str, subject: str, message_id: str, sent: str, in_reply_to: str, headers: dict[str, str],
            text: str, page: str | None, attachments: tuple[str, ...]) -> bytes:
    """A reply to ACME's inbox as a mail client writes it (plain or HTML, with its attachments)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = "relances@acme.example"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["Date"] = sent
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for k, v in headers.items():
        if k.lower() not in BODY_HEADERS:  # the body's structure is the renderer's to write
            msg[k] = v
    if page is not None:
        msg.set_content(page, subtype="html")
    else:
        msg.set_content(text)
    for name in attachments:
        msg.add_attachment(b"%PDF-1.4 attachment", maintype="application", subtype="pdf", filename=name)
    return msg.as_bytes()
