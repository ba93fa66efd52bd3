"""Builds the MIME message of a reminder: headers, text and HTML parts, the invoice PDF.

Non-ASCII subjects and names travel as RFC 2047 encoded words (folded: no header line is long),
attachment file names as RFC 2231 parameters, bodies as base64 UTF-8; an internationalised address
goes as UTF-8 (RFC 6532), for a server that offers SMTPUTF8.

Nothing that came from outside reaches a header unchecked: a control character in a value (a line
end would write a header of its own: `Bcc :`, `Reply-To :`), an address that is not a plain
addr-spec, or a header line over RFC 5322's 998 characters raises MessageDataError, for that
message alone. The import refuses all of these already; this is the second wall, for data that
came in another way. Built with the stdlib's `email.mime` classes, which
produce the same bytes as `EmailMessage` here at about a third of its cost (the outbox benchmark
renders 10,000 of these per tick)."""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.generator import BytesGenerator
from email.header import Header
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import format_datetime, quote
from pathlib import Path
from typing import Any

from bot.addresses import CONTROL, writable
from bot.errors import MessageDataError
from bot.render import Rendered

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


class _Wire(Compat32):
    """compat32, with its header folding skipped where it would change nothing: an ASCII value on
    one line that fits in it, as most are (the folding algorithm was a third of composing)."""

    def fold_binary(self, name: str, value: Any) -> bytes:
        if (isinstance(value, str) and value.isascii() and len(name) + 2 + len(value) <= (self.max_line_length or 78)
                and "\r" not in value and "\n" not in value):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


# 8bit: a header value given as surrogate-escaped bytes (an internationalised address) is written
# as those bytes; every other header and body is ASCII either way.
_WIRE = _Wire().clone(linesep="\r\n", cte_type="8bit")


def _boundary() -> str:
    """A multipart boundary. `_` is not in base64's alphabet and every part is base64, so no part
    can hold it; given here, it spares the generator its search of the text (a regex compiled
    for each message)."""
    return f"=_relance_{secrets.token_hex(12)}"
_ATOM_TEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")
MAX_LINE = 998  # RFC 5322 2.1.1


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


def _filename_param(name: str) -> str | tuple[str, str, str]:
    return name if name.isascii() else ("utf-8", "", name)


def _clean(field: str, value: str) -> str:
    found = CONTROL.search(value)
    if found:
        raise MessageDataError(f"{field}: control character {found.group()!r} in {value[:60]!r}")
    return value


def _address(field: str, address: str) -> str:
    """A plain addr-spec as it goes in a header: raw UTF-8 when internationalised (surrogate-escaped
    here, so the generator writes the bytes rather than an encoded word no server would read)."""
    if not writable(_clean(field, address)):
        raise MessageDataError(f"{field}: {address[:100]!r} is not a plain email address")
    return address if address.isascii() else address.encode().decode("ascii", "surrogateescape")


def _mailbox(field: str, name: str, address: str) -> str:
    """`"Name" <address>`; a non-ASCII name as encoded words split to fit the line length."""
    wire = _address(field, address)
    if not _clean(field, name).strip():
        return wire
    if not name.isascii():
        display = Header(name, "utf-8").encode()
    elif _ATOM_TEXT.fullmatch(name):
        display = name
    else:
        display = f'"{quote(name)}"'
    return f"{display} <{wire}>"


def compose(rendered: Rendered, *, company_name: str, company_email: str, to: str, to_name: str,
            cc: Sequence[str], reply_to: str, message_id: str, references: Sequence[str], date: datetime,
            invoice_numbers: Sequence[str], attachments: Sequence[Attachment] = ()) -> bytes:
    """The message as it goes on the wire (CRLF line ends)."""
    body: Message = MIMEText(rendered.text, "plain", "utf-8")
    if rendered.html is not None:
        alternative = MIMEMultipart("alternative", boundary=_boundary())
        alternative.attach(body)
        alternative.attach(MIMEText(rendered.html, "html", "utf-8"))
        body = alternative
    msg = body
    if attachments:
        msg = MIMEMultipart("mixed", boundary=_boundary())
        msg.attach(body)
        for att in attachments:
            part = MIMEApplication(att.path.read_bytes(), "pdf")
            part.set_param("name", _filename_param(att.filename))  # type: ignore[arg-type]
            part.add_header("Content-Disposition", "attachment", filename=_filename_param(att.filename))
            msg.attach(part)
    msg["From"] = _mailbox("From", company_name, company_email)
    msg["To"] = _mailbox("To", to_name, to)
    if cc:
        msg["Cc"] = ", ".join(_address("Cc", c) for c in cc)
    if reply_to:
        msg["Reply-To"] = _address("Reply-To", reply_to)
    msg["Subject"] = Header(_clean("Subject", rendered.subject), "utf-8")  # type: ignore[assignment]
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    if references:
        msg["In-Reply-To"] = references[-1]
        msg["References"] = " ".join(references)
    # Helps the inbound side (and people filtering mail) thread a reply to its invoices.
    msg["X-Relance-Invoices"] = ", ".join(_clean("invoice number", n) for n in invoice_numbers)
    buf = io.BytesIO()
    BytesGenerator(buf, mangle_from_=False, policy=_WIRE).flatten(msg)
    data = buf.getvalue()
    head = data.split(b"\r\n\r\n", 1)[0]
    longest = max(len(line) for line in head.split(b"\r\n"))
    if longest > MAX_LINE:  # a long value with nowhere to fold: the server would refuse the message
        raise MessageDataError(f"a header line of {longest} characters (at most {MAX_LINE}): a value is too long")
    return data
