"""A person's reply to a client, from triage or the command line: drafted from a template in the
client's language, edited, then sent through the outbox like any reminder, threaded to the
client's message.

Life of a reply (an `outbound` row with stage `reply`, the events on each invoice it concerns):

    draft (nothing stored) --queue--> pending  [reply_queued: who, why, the template]
    pending --the next tick, or `relance reply --send`--> sending --> sent  [reply_sent]
                                                            (bot/outbox.py: the same claim, the
                                                             same crash rules as a reminder)
    pending --undo--> cancelled  [reply_cancelled]; once claimed or sent, it cannot be undone

`queue` composes the exact bytes at once (a recipient or a header the composer refuses is said to
the person then, not found by the daemon later) and records them with a fresh Message-ID before
anything is sent, so a crash never sends it twice. It goes to the message's Reply-To when it has
one, else to its sender. Nothing of the client's message is trusted: that address must be a plain
one (`reply_address`), its Message-ID and References are kept only when they have
the form of one (`<...>`, printable, no spaces), and its subject loses its control characters
and runs of blanks before "Re: " goes in front."""

from __future__ import annotations

import email.errors
import email.parser
import email.policy
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot import plans
from bot.addresses import CONTROL, AddressError, has_control, plain_address, writable
from bot.compose import compose, new_reply_token
from bot.config import Config
from bot.errors import MessageDataError, NotFoundError, RelanceError
from bot.i18n import t
from bot.mailer import Mailer
from bot.models import Client, Event, Inbound, Invoice, Outbound, table
from bot.reasons import fit
from bot.render import REPLY_TEMPLATES, InvoiceContext, Rendered, Renderer
from bot.store import inbound_raw, record_events, session
from rules.plan import Instalment
from rules.reasons import reason

inv_t, cli_t, in_t, ev_t, out_t = table(Invoice), table(Client), table(Inbound), table(Event), table(Outbound)

STAGE = "reply"  # outbound.stage of a reply
STAGE_INDEX = -2  # -1 is the operator's digest; the ladder's stages are 0 and up
TEMPLATES = REPLY_TEMPLATES  # templates/<lang>/reply_<name>.txt
# The template a message's kind calls for, as the editor first offers it.
FOR_KIND = {"payment_claim": "ack_claim", "payment_plan": "accept_plan", "dispute": "answer_dispute"}
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,250}>")  # printable ASCII, no <, > or blank
_PREFIX = re.compile(r"^\s*((re|aw|sv|tr|fwd?|réf?)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
MAX_SUBJECT = 200
MAX_BODY = 20_000


@dataclass(frozen=True)
class Draft:
    """A reply as the template writes it, before a person edits the text."""

    inbound_id: int
    template: str
    language: str
    to: str
    subject: str
    text: str
    numbers: tuple[str, ...]


def reply_subject(incoming: str, fallback: str) -> str:
    """ "Re: " and the client's subject, made safe for a header: no control character (a CR/LF
    would write a header of its own), blanks collapsed, its own "Re:"/"TR:" prefixes dropped, at
    most MAX_SUBJECT characters; the template's subject when the client's has nothing left."""
    clean = " ".join(CONTROL.sub(" ", incoming or "").split())
    clean = _PREFIX.sub("", clean).strip()
    if not clean:
        return " ".join(CONTROL.sub(" ", fallback).split())[:MAX_SUBJECT]
    return ("Re: " + clean)[:MAX_SUBJECT]


def thread_of(message_id: str, raw: bytes) -> list[str]:
    """The References of a reply to this message: its own References (the last 20 that have the
    form of a Message-ID), then its Message-ID, which is also the In-Reply-To."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw[:200_000])
    refs = [r for r in re.findall(r"<[^<>\s]+>", str(headers.get("References") or ""))[:200]
            if _MESSAGE_ID.fullmatch(r)][-20:]
    mid = (message_id or "").strip()
    if _MESSAGE_ID.fullmatch(mid):
        refs = [r for r in refs if r != mid] + [mid]
    return refs


def reply_address(inbound_id: int, sender: str, raw: bytes) -> str:
    """Where a reply to a message goes: the first address of its Reply-To when it has one (a
    client writing from a no-reply address asks for answers elsewhere, as every mail client
    honours), else its sender. Nothing that comes in is trusted: the Reply-To must parse without
    defect, with no control character once decoded, and its address be a plain one, checked as the
    ledger's are; otherwise the reply is refused, naming the header."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw[:200_000])
    value = headers.get("Reply-To")
    if value is None or not str(value).strip():
        if not writable(sender):
            raise RelanceError(t("message #{id}: its sender {address} is not an address a reply can go to",
                                 id=inbound_id, address=repr(sender)))
        return sender
    try:
        field = email.policy.default.header_factory("reply-to", str(value))
        found = [a.addr_spec for a in field.addresses]
        address = plain_address(found[0]) if found and not field.defects and not has_control(str(field)) else ""
    except (AddressError, ValueError, TypeError, IndexError, email.errors.HeaderParseError):
        address = ""
    if not address or not writable(address):
        shown = " ".join(CONTROL.sub(" ", str(value)).split())[:MAX_SUBJECT]
        raise RelanceError(t("message #{id}: its Reply-To {address} is not an address a reply can go to",
                             id=inbound_id, address=repr(shown)))
    return address


def _invoices_of(c: Connection, inbound_id: int) -> list[Any]:
    """The invoices a message concerns: those it was threaded to (its events), else those
    suggested for a person to confirm; oldest due first."""
    ids = set(c.execute(sa.select(ev_t.c.invoice_id).where(ev_t.c.inbound_id == inbound_id,
                                                           ev_t.c.invoice_id.is_not(None))).scalars())
    suggested = json.loads(c.execute(sa.select(in_t.c.suggested).where(in_t.c.id == inbound_id)).scalar() or "[]")
    where = inv_t.c.id.in_(ids) if ids else inv_t.c.number.in_([str(n) for n in suggested])
    return list(c.execute(sa.select(inv_t, cli_t.c.name.label("client_name"), cli_t.c.kind.label("client_kind"))
                          .join(cli_t, cli_t.c.id == inv_t.c.client_id).where(where)
                          .order_by(inv_t.c.due_date, inv_t.c.number)).all())


def _proposed(m: Any, config: Config) -> tuple[Instalment, ...]:
    """The instalments the client proposed, as read in the message."""
    from bot.understand import find_dates  # noqa: PLC0415 - the reader's models load only when needed
    from rules.plan import instalments  # noqa: PLC0415

    sent = m.received_at or m.stored_at
    return instalments(m.text or "", tuple(find_dates(m.text or "", sent.astimezone(config.zone).date())))


def draft(conn: Connection, config: Config, inbound_id: int, template: str, now: datetime,
          renderer: Renderer | None = None, instalments: Sequence[Instalment] | None = None) -> Draft:
    """The reply `template` would write to message `inbound_id`, in its client's language.
    `instalments`: the plan to cite (accept or decline); by default the plan that runs on the
    invoice, else the one the message proposed."""
    if template not in TEMPLATES:
        raise RelanceError(t("{value}: expected one of {choices}", value=repr(template),
                             choices=", ".join(TEMPLATES)))
    m = conn.execute(sa.select(in_t).where(in_t.c.id == inbound_id)).first()
    if m is None:
        raise NotFoundError(t("no message #{id}", id=inbound_id))
    invoices = _invoices_of(conn, inbound_id)
    if not invoices:
        raise RelanceError(t("message #{id} concerns no invoice: assign it first (a)", id=inbound_id))
    to = reply_address(inbound_id, m.from_addr or "", inbound_raw(conn, [inbound_id]).get(inbound_id, b""))
    if instalments is None:
        plan = plans.running(conn, int(invoices[0].id))
        instalments = (tuple(Instalment(Decimal(s["amount"]), date.fromisoformat(s["due"]))
                             for s in plan["instalments"]) if plan else _proposed(m, config))
    first = invoices[0]
    language = first.language if first.language in ("fr", "en") else config.company.language
    today = now.astimezone(config.zone).date()
    contexts = [InvoiceContext(number=r.number, issue_date=r.issue_date, due_date=r.due_date, amount=r.amount,
                               paid=r.paid, currency=r.currency) for r in invoices]
    received = (m.received_at or m.stored_at).astimezone(config.zone).date()
    rendered = (renderer or Renderer.from_config(config)).render(
        language, f"reply_{template}", client_name=first.client_name, client_kind=first.client_kind,
        invoices=contexts, today=today,
        extra={"instalments": [i for i in instalments if i.amount is not None and i.due is not None],
               "received": received})
    return Draft(inbound_id=inbound_id, template=template, language=language, to=to,
                 subject=reply_subject(m.subject or "", rendered.subject), text=rendered.text,
                 numbers=tuple(r.number for r in invoices))


@dataclass(frozen=True)
class Queued:
    """A reply recorded in the outbox, waiting for the next pass (or `send`)."""

    outbound_id: int
    message_id: str
    to: str
    numbers: tuple[str, ...]


def new_message_id(domain: str, number: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9.-]+", "-", number)[:40]
    return f"<relance.{safe}.reply.{secrets.token_hex(8)}@{domain}>"


def clean_body(text: str) -> str:
    """The text a person wrote, as it goes in the mail: line ends made one, no control character
    but tabs and line ends, at most MAX_BODY characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or not CONTROL.match(ch)).strip("\n")
    if not text.strip():
        raise RelanceError(t("the reply is empty: nothing queued"))
    if len(text) > MAX_BODY:
        raise RelanceError(t("the reply is {n} characters long (at most {max})", n=len(text), max=MAX_BODY))
    return text + "\n"


@dataclass(frozen=True)
class Composed:
    """A reply written to the byte, not recorded yet (`record` does)."""

    inbound_id: int
    template: str
    message_id: str
    to: str
    subject: str
    data: bytes
    reply_token: str | None
    in_reply_to: str
    numbers: tuple[str, ...]


def prepare(engine: Engine, config: Config, inbound_id: int, template: str, text: str | None, now: datetime,
            renderer: Renderer | None = None, instalments: Sequence[Instalment] | None = None) -> Composed:
    """The reply to message `inbound_id`, `text` as the person left it (None: the template's), composed
    to the byte; nothing is written. A reply that cannot be written is refused here, before any
    decision it goes with is made."""
    cfg = config
    with engine.connect() as c:
        d = draft(c, cfg, inbound_id, template, now, renderer, instalments)
        m = c.execute(sa.select(in_t.c.message_id).where(in_t.c.id == inbound_id)).one()
        raw = inbound_raw(c, [inbound_id]).get(inbound_id, b"")
    body = clean_body(d.text if text is None else text)
    refs = thread_of(m.message_id or "", raw)
    message_id = new_message_id(cfg.company.domain, d.numbers[0])
    token = new_reply_token() if "{token}" in cfg.company.reply_to else None
    reply_to = cfg.company.reply_to.replace("{token}", token or "") if cfg.company.reply_to else ""
    try:
        data = compose(Rendered(d.subject, body, None), company_name=cfg.company.name,
                       company_email=cfg.company.email, to=d.to, to_name="", cc=(), reply_to=reply_to,
                       message_id=message_id, references=refs, date=now, invoice_numbers=d.numbers)
    except MessageDataError as e:
        raise RelanceError(t("the reply cannot be written: {why}", why=e.reason)) from e
    return Composed(inbound_id, template, message_id, d.to, d.subject, data, token, refs[-1] if refs else "",
                    d.numbers)


def record(s: Connection, r: Composed, now: datetime, actor: str, why: str = "") -> Queued:
    """Record a composed reply in the outbox, pending, with a `reply_queued` event on each invoice
    it concerns (who, why, which template), in the caller's transaction (with the decision it goes
    with, if any). Nothing is sent here: the next tick sends it, or `send`."""
    invoices = s.execute(sa.select(inv_t.c.id, inv_t.c.client_id).where(inv_t.c.number.in_(r.numbers))
                         .order_by(inv_t.c.id)).all()
    if not invoices:
        raise NotFoundError(t("no invoice {number}", number=", ".join(r.numbers)))
    outbound_id = int(s.execute(sa.insert(out_t).values(
        message_id=r.message_id, client_id=invoices[0].client_id, stage_index=STAGE_INDEX, stage=STAGE,
        to_addr=r.to, subject=r.subject, status="pending", raw=r.data, created_at=now, attempts=0,
        reply_token=r.reply_token).returning(out_t.c.id)).scalar_one())
    record_events(s, [{"invoice_id": int(i.id), "kind": "reply_queued", "at": now, "actor": actor,
                       "reason": fit(why or r.template), "inbound_id": r.inbound_id,
                       "outbound_id": outbound_id,
                       "data": {"template": r.template, "message_id": r.message_id, "to": r.to,
                                "in_reply_to": r.in_reply_to}} for i in invoices])
    return Queued(outbound_id, r.message_id, r.to, r.numbers)


def queue(engine: Engine, config: Config, inbound_id: int, template: str, text: str | None, now: datetime,
          actor: str, why: str = "", renderer: Renderer | None = None,
          instalments: Sequence[Instalment] | None = None) -> Queued:
    """`prepare` then `record`: the reply to message `inbound_id` waits in the outbox."""
    composed = prepare(engine, config, inbound_id, template, text, now, renderer, instalments)
    with session(engine) as s:
        return record(s, composed, now, actor, why)


def queued_text(q: Queued) -> str:
    """What a person is told once a reply is queued."""
    return t("reply to {to} about {numbers} queued: the next pass sends it (undo cancels it until then)",
             to=q.to, numbers=", ".join(q.numbers))


async def send(engine: Engine, config: Config, mailer: Mailer, outbound_id: int, now: datetime,
               wall_now: datetime) -> Any:
    """Send a queued reply now, through the outbox's claim (the path every reminder takes): the
    same record-before-send, the same outcomes. Returns the pass's TickReport."""
    from bot.outbox import Outbox  # noqa: PLC0415 - the outbox imports this module's names
    from bot.tick import TickReport, deliver_one  # noqa: PLC0415

    outbox = Outbox(engine, config, Renderer.from_config(config), now, wall_now)
    report = TickReport()
    async with mailer:
        await deliver_one(outbox, mailer, outbound_id, config, report)
    return report


def invoice_ids(c: Connection, outbound_id: int) -> list[int]:
    """The invoices a reply concerns (its `reply_queued` events)."""
    return [int(i) for i in c.execute(sa.select(ev_t.c.invoice_id).where(
        ev_t.c.outbound_id == outbound_id, ev_t.c.kind == "reply_queued", ev_t.c.invoice_id.is_not(None))).scalars()]


def outbound_query(inbound_ids: Sequence[int], numbers: Sequence[str]) -> sa.Select[tuple[int | None]]:
    """The replies to these messages or about these invoices (what a decision's undo may cancel), as
    a subquery."""
    about = sa.select(inv_t.c.id).where(inv_t.c.number.in_(list(numbers)))
    return sa.select(ev_t.c.outbound_id).where(
        ev_t.c.kind == "reply_queued", ev_t.c.outbound_id.is_not(None),
        sa.or_(ev_t.c.inbound_id.in_(list(inbound_ids)), ev_t.c.invoice_id.in_(about)))


def cancel(s: Connection, outbound_id: int, now: datetime, actor: str) -> None:
    """Undo of a reply: cancelled while it waits; refused once the outbox has claimed or sent it
    (a mail that left cannot be taken back). In the caller's transaction."""
    done = s.execute(sa.update(out_t).where(out_t.c.id == outbound_id, out_t.c.stage == STAGE,
                                            out_t.c.status == "pending").values(status="cancelled"))
    if done.rowcount != 1:
        r = s.execute(sa.select(out_t.c.status, out_t.c.to_addr).where(out_t.c.id == outbound_id)).first()
        status = r.status if r is not None else "?"
        raise RelanceError(t("the reply to {to} is already {status}: a mail that went out cannot be undone; "
                             "nothing undone", to=r.to_addr if r is not None else "?", status=t(status)))
    record_events(s, [{"invoice_id": i, "kind": "reply_cancelled", "at": now, "actor": actor,
                       "outbound_id": outbound_id, "reason": reason("reply.cancelled")}
                      for i in invoice_ids(s, outbound_id)])


def edit(text: str) -> str:
    """`text` edited in the person's editor ($VISUAL, else $EDITOR, else vi), through a file only
    they can read (a client's mail is not for the other users of the machine)."""
    import os  # noqa: PLC0415
    import shlex  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    command = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
    folder = Path(tempfile.mkdtemp(prefix="relance-reply-"))
    path = folder / "reply.txt"
    try:
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        done = subprocess.run([*command, str(path)], check=False)  # noqa: S603 - the person's own editor
        if done.returncode != 0:
            raise RelanceError(t("the editor {editor} exited with {code}: nothing queued", editor=command[0],
                                 code=done.returncode))
        return path.read_text(encoding="utf-8", errors="replace")
    finally:
        path.unlink(missing_ok=True)
        folder.rmdir()


def find(c: Connection, ref: str) -> int:
    """A message named on the command line: its number (`relance messages`), or its Message-ID."""
    if ref.isdigit():
        return int(ref)
    found = c.execute(sa.select(in_t.c.id).where(in_t.c.message_id == ref.strip()).order_by(in_t.c.id)).first()
    if found is None:
        raise NotFoundError(t("no message #{id}", id=ref))
    return int(found.id)
