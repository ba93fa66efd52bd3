"""The MIME message of a reminder: written directly for the common case, the same to a reader as
the stdlib's `email.mime` writes it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from bot import compose as c
from bot.render import Rendered

FRENCH = "Relance : facture F-2027-0042 impayée — échéance dépassée depuis le 31 mars, merci de régler"
BASE: dict[str, Any] = {
    "company_name": "ACME SAS", "company_email": "relances@acme.example", "to": "compta@client.example",
    "to_name": "Client SARL", "cc": (), "reply_to": "", "message_id": "<relance.F-1.s0.ab@acme.example>",
    "references": (), "date": datetime(2027, 4, 13, 8, 0, tzinfo=UTC), "invoice_numbers": ("F-1",),
}


def _read(data: bytes) -> EmailMessage:
    msg = message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _what_a_reader_sees(data: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    msg = _read(data)
    headers = [(k, str(v)) for k, v in msg.items() if k != "Content-Type"]
    parts = [(p.get_content_type(), p.get_content()) for p in msg.walk() if not p.is_multipart()]
    return headers, parts


@pytest.mark.parametrize(("subject", "html", "extra"), [
    ("Reminder: invoice F-1", None, {}),
    ("Reminder: invoice F-1", "<p>Hello</p>\n", {}),
    (FRENCH, "<p>Bonjour é</p>\n", {}),
    (FRENCH * 3, None, {}),  # folded over several encoded words
    ("日本語の請求書 F-1 — 支払い期限を過ぎています" * 2, "<p>x</p>", {}),  # 3-byte characters across words
    ("=?utf-8?q?not_a_word?= F-1", None, {}),  # looks encoded: encoded, so it reads as it is
    ("Rappel F-1", "<p>é</p>", {"to_name": "Société Générale d'Été", "cc": ("dg@client.example",),
                                "reply_to": "ar+1a2b@acme.example",
                                "references": ("<a@acme.example>", "<b@acme.example>"),
                                "invoice_numbers": ("F-1", "F-2")}),
    ("Rappel F-1", None, {"to_name": 'Dupont, "Jean"'}),
])
def test_written_directly_reads_as_email_mime_writes_it(subject: str, html: str | None, extra: dict[str, Any]) -> None:
    """Every header, decoded, and every part, in order, are the same both ways."""
    rendered = Rendered(subject, "Bonjour,\nla facture F-1 est due : 1 234,56 €.\n" * 20, html)
    args = {**BASE, **extra}
    data = c.compose(rendered, **args)
    top = b"Content-Type: multipart/alternative;" if html else b'Content-Type: text/plain; charset="utf-8"'
    assert data.startswith(top)
    stdlib = c._with_email_mime(rendered, _headers(args, subject), ())
    assert _what_a_reader_sees(data) == _what_a_reader_sees(stdlib)
    assert _read(data)["Subject"] == subject
    assert max(len(line) for line in data.split(b"\r\n")) <= c.MAX_LINE

    def subject(raw: bytes) -> bytes:  # the Subject line and its folds, as they go on the wire
        return re.search(rb"\r\nSubject: .*?\r\n(?! )", raw, re.DOTALL).group()  # type: ignore[union-attr]

    assert subject(data) == subject(stdlib), "the same bytes: a reply quoting it raw reads the same number"


def test_common_reminders_skip_email_mime(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reminder without attachment whose headers fit on a line is written directly; a long
    References header (many earlier reminders) is folded by email.mime."""
    calls: list[int] = []
    real = c._with_email_mime

    def counted(*a: Any) -> bytes:
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(c, "_with_email_mime", counted)
    c.compose(Rendered(FRENCH, "x\n", "<p>x</p>"), **BASE)
    assert calls == []
    refs = tuple(f"<relance.F-1.s{i}.0123456789abcdef@acme.example>" for i in range(3))
    c.compose(Rendered(FRENCH, "x\n", None), **{**BASE, "references": refs})
    assert calls == [1]


def _headers(args: dict[str, Any], subject: str) -> list[tuple[str, str]]:
    """The header list `compose` builds, for the stdlib path."""
    out = [("From", c._mailbox("From", args["company_name"], args["company_email"])),
           ("To", c._mailbox("To", args["to_name"], args["to"]))]
    if args["cc"]:
        out.append(("Cc", ", ".join(args["cc"])))
    if args["reply_to"]:
        out.append(("Reply-To", args["reply_to"]))
    out += [("Subject", subject), ("Date", "Tue, 13 Apr 2027 08:00:00 +0000"), ("Message-ID", args["message_id"])]
    if args["references"]:
        out += [("In-Reply-To", args["references"][-1]), ("References", " ".join(args["references"]))]
    out.append(("X-Relance-Invoices", ", ".join(args["invoice_numbers"])))
    return out
