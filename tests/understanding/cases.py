"""Labelled replies in the format of FORMAT.md: loaded, and rendered into the raw messages that
ACME's inbox would receive (the mail client's quote of our reminder added under the reply)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from tests.corpus.labelled.build import message, quote_as

HERE = Path(__file__).parent
LEDGER = HERE / "ledger.csv"
KINDS = ("payment_claim", "promise_to_pay", "payment_plan", "dispute", "human_reply", "auto_reply", "bounce")


@dataclass(frozen=True)
class Case:
    id: str
    lang: str
    kind: str
    sender: str
    sent: datetime
    body: str
    invoices: tuple[str, ...] = ()
    thread: bool = True
    subject: str = ""
    client: str = "plain"
    pay_by: date | None = None
    back_on: date | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: tuple[str, ...] = ()
    raw: str = ""


def _day(value: str) -> date | None:
    return date.fromisoformat(value) if value else None


def load(path: Path) -> list[Case]:
    doc: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    return [Case(id=c["id"], lang=c.get("lang", "fr"), kind=c["kind"], sender=c["from"].strip().lower(),
                 sent=datetime.fromisoformat(c["date"]), body=c.get("body", ""), invoices=tuple(c.get("invoices", ())),
                 thread=c.get("thread", True), subject=c.get("subject", ""), client=c.get("client", "plain"),
                 pay_by=_day(c.get("pay_by", "")), back_on=_day(c.get("back_on", "")),
                 headers={k: str(v) for k, v in c.get("headers", {}).items()},
                 attachments=tuple(c.get("attachments", ())), raw=c.get("raw", ""))
            for c in doc["case"]]


def render(case: Case, reminders: dict[str, tuple[str, str]]) -> bytes:
    """The raw message. `reminders` maps an invoice number to our reminder's (Message-ID, Subject)."""
    mid, our_subject = reminders.get(case.invoices[0], ("", "")) if case.invoices else ("", "")
    if case.raw:
        text = (case.raw.replace("<{reminder_message_id}>", mid).replace("{reminder_message_id}", mid)
                .replace("{reminder_subject}", our_subject))
        head, _, rest = text.lstrip("\n").partition("\n\n")
        # Found again by its Message-ID: the case's own, whatever its writer put there.
        head = re.sub(r"(?im)^message-id:.*(\n[ \t].*)*\n?", "", head).rstrip("\n")
        head = f"Message-ID: <{case.id}@client.example>\n" + head
        if not re.search(r"(?im)^date:", head):
            head = f"Date: {format_datetime(case.sent)}\n" + head
        text = f"{head}\n\n{rest}"
        return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    subject = case.subject or (f"RE: {our_subject}" if our_subject else "RE: Rappel")
    text, page = quote_as(case.client, case.body.strip("\n"), our_subject)
    return message(case.sender, subject, f"<{case.id}@client.example>", format_datetime(case.sent),
                   mid if case.thread else "", case.headers, text, page, case.attachments)
