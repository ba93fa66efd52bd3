"""Builds the MIME message of a reminder: headers, text and HTML parts, the invoice PDF.

Accented subjects, names and attachment file names are encoded by the stdlib's `email` policy
(RFC 2047 encoded words, RFC 2231 parameters)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

from bot.render import Rendered

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def new_message_id(domain: str, number: str, stage_index: int) -> str:
    """A fresh Message-ID on the company's domain; the invoice number helps a person reading logs."""
    return f"<relance.{_UNSAFE.sub('-', number)[:40]}.s{stage_index}.{secrets.token_hex(8)}@{domain}>"


def new_reply_token() -> str:
    return secrets.token_hex(5)


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class Attachment:
    path: Path
    filename: str


def compose(rendered: Rendered, *, company_name: str, company_email: str, to: str, to_name: str,
            cc: Sequence[str], reply_to: str, message_id: str, references: Sequence[str], date: datetime,
            invoice_numbers: Sequence[str], attachments: Sequence[Attachment] = ()) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = Address(display_name=company_name, addr_spec=company_email)
    msg["To"] = Address(display_name=to_name, addr_spec=to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    if references:
        msg["In-Reply-To"] = references[-1]
        msg["References"] = " ".join(references)
    # Helps the inbound side (and people filtering mail) thread a reply to its invoices.
    msg["X-Relance-Invoices"] = ", ".join(invoice_numbers)
    msg.set_content(rendered.text, cte="quoted-printable")
    if rendered.html is not None:
        msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    for att in attachments:
        msg.add_attachment(att.path.read_bytes(), maintype="application", subtype="pdf",
                           filename=att.filename)
    return msg
