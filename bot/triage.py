"""What waits for a person, read a page at a time (the triage UI's queue and invoice tables).

The queue holds two sorts of items: messages in triage, and invoices in a dead end with no message
waiting for them (a dispute, a plan proposal or a bounce whose message was already decided, or a
hold for a person with nothing left to read). Items are ordered by what is at stake: the amount
still due on the invoices concerned, then the oldest due date, then the oldest message. Only the
page shown is read: the ordering, the filters and the counts run in the database."""

from __future__ import annotations

import email
import email.policy
import json
import mimetypes
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot import reasons, reports, versions
from bot.config import Config
from bot.errors import NotFoundError
from bot.models import CENT, Client, Contact, Event, Inbound, Invoice, Outbound, Reminder, table
from bot.store import inbound_raw
from rules.reasons import reason

inv_t, cli_t, con_t, ev_t, in_t = table(Invoice), table(Client), table(Contact), table(Event), table(Inbound)
rem_t = table(Reminder)
DEAD_ENDS = {"disputed": "dispute", "plan": "payment_plan", "bounced": "bounce"}
INVOICE_KINDS = (*DEAD_ENDS.values(), "held", "fix_data")  # what an invoice waits in the queue as
OPEN_STATES = reports.OPEN_STATES  # what `relance status` lists


@dataclass(frozen=True)
class Filters:
    """What the person narrowed the queue to; empty fields do not filter."""

    kind: str = ""
    client: str = ""
    language: str = ""
    mailbox: str = ""
    search: str = ""  # an invoice number, a client or a sender, in part


@dataclass(frozen=True)
class Item:
    """One row of the queue."""

    key: str  # "m<id>" for a message, "i<number>" for an invoice
    inbound_id: int | None
    numbers: tuple[str, ...]  # the invoices concerned (threaded, held, or suggested)
    kind: str
    sender: str
    subject: str
    client: str
    received_at: datetime | None
    stake: Decimal
    due_date: date | None
    reason: str
    confidence: Decimal | None
    suggested: tuple[str, ...] = ()
    versions: dict[str, int] = field(default_factory=dict)  # invoice number -> version (bot.versions)

    @property
    def number(self) -> str | None:
        """The invoice an invoice action applies to: the only one concerned, else none."""
        found = self.numbers or self.suggested
        return found[0] if len(found) == 1 else None


def _cents(col: Any) -> Any:
    return sa.type_coerce(col, sa.BigInteger)


def _linked(only: int | None) -> sa.Subquery:
    """Per message waiting in triage (or message `only`): what is at stake on the open invoices its
    events concern, the oldest due date, a client and a language."""
    pairs_q = (sa.select(ev_t.c.inbound_id, ev_t.c.invoice_id).join(in_t, in_t.c.id == ev_t.c.inbound_id)
               .where(in_t.c.status == "triage", ev_t.c.invoice_id.is_not(None)).distinct())
    if only is not None:
        pairs_q = pairs_q.where(ev_t.c.inbound_id == only)
    pairs = pairs_q.subquery("pairs")
    return (sa.select(pairs.c.inbound_id,
                      sa.func.sum(_cents(inv_t.c.amount) - _cents(inv_t.c.paid)).label("stake"),
                      sa.func.min(inv_t.c.due_date).label("due_date"), sa.func.min(cli_t.c.name).label("client"),
                      sa.func.min(inv_t.c.language).label("language"))
            .join(inv_t, inv_t.c.id == pairs.c.invoice_id).join(cli_t, cli_t.c.id == inv_t.c.client_id)
            .where(inv_t.c.state != "paid").group_by(pairs.c.inbound_id).subquery("linked"))


def _messages(f: Filters, only: int | None = None) -> sa.Select[Any]:
    linked = _linked(only)
    q = (sa.select(sa.literal("m").label("sort"), in_t.c.id.label("id"), in_t.c.kind.label("kind"),
                   in_t.c.from_addr.label("sender"), in_t.c.subject.label("subject"),
                   sa.func.coalesce(linked.c.client, "").label("client"), in_t.c.received_at.label("received_at"),
                   sa.func.coalesce(linked.c.stake, 0).label("stake"), linked.c.due_date.label("due_date"),
                   in_t.c.reason.label("reason"), in_t.c.confidence.label("confidence"),
                   in_t.c.suggested.label("suggested"))
         .outerjoin(linked, linked.c.inbound_id == in_t.c.id)
         # Every message in triage shows, an ignored sender's too: the pipeline files an ignored
         # sender's mail unread, unless it is a client's or speaks of a payment (bot/apply.py).
         .where(in_t.c.status == "triage"))
    if only is not None:
        q = q.where(in_t.c.id == only)
    if f.kind:
        q = q.where(in_t.c.kind == f.kind)
    if f.client:
        q = q.where(linked.c.client.ilike(f"%{f.client}%"))
    if f.language:
        q = q.where(linked.c.language == f.language)
    if f.mailbox:
        q = q.where(in_t.c.folder == f.mailbox)
    if f.search:
        like = f"%{f.search}%"
        cited = (sa.select(ev_t.c.id).join(inv_t, inv_t.c.id == ev_t.c.invoice_id)
                 .where(ev_t.c.inbound_id == in_t.c.id, inv_t.c.number.ilike(like)).exists())
        q = q.where(sa.or_(in_t.c.from_addr.ilike(like), in_t.c.subject.ilike(like), linked.c.client.ilike(like),
                           in_t.c.suggested.ilike(like), cited))
    return q


def _bare_messages(f: Filters) -> sa.Select[Any]:
    """The messages part without what is at stake: enough to count them (a fifth of the time)."""
    q = (sa.select(sa.literal("m").label("sort"), in_t.c.id.label("id"), in_t.c.kind.label("kind"))
         .where(in_t.c.status == "triage"))
    if f.kind:
        q = q.where(in_t.c.kind == f.kind)
    if f.mailbox:
        q = q.where(in_t.c.folder == f.mailbox)
    return q


def address_fails() -> sa.ColumnElement[bool]:
    """An invoice whose contact's address fails: the few failing contacts first (their partial
    index), then their invoices (by contact). Where the queue and the operator's digest agree."""
    return inv_t.c.contact_id.in_(sa.select(con_t.c.id).where(con_t.c.failing))


def _invoices(f: Filters, only: int | None = None) -> list[sa.Select[Any]]:
    """Invoices that wait for a person with no message in triage about them: a dispute, a plan or a
    bounce (an event of a message in triage concerns them otherwise); held for a message no longer
    in triage; active, but their address fails (`bounce`: a new address) or their last reminder
    failed on their data (`fix_data`). One select each, so that each reads its own index (state;
    held_by; the partial indexes of failing contacts and of data errors) on a big store."""
    if f.mailbox or (f.kind and f.kind not in INVOICE_KINDS):
        return []
    waiting = (sa.select(ev_t.c.id).join(in_t, in_t.c.id == ev_t.c.inbound_id)
               .where(ev_t.c.invoice_id == inv_t.c.id, in_t.c.status == "triage").exists())
    holder = sa.select(in_t.c.status).where(in_t.c.id == inv_t.c.held_by).scalar_subquery()
    dead = sa.case(*((inv_t.c.state == s, k) for s, k in DEAD_ENDS.items()), else_="held")
    # coalesce(state): SQLite, without statistics, would walk the state index instead
    active = sa.func.coalesce(inv_t.c.state, "") == "active"
    # coalesce(held_by): "held_by IS NULL" would walk the held_by index over nearly every invoice
    unheld = sa.and_(active, sa.func.coalesce(inv_t.c.held_by, 0) == 0, ~waiting)
    failing = sa.case((con_t.c.failing, sa.func.coalesce(con_t.c.failure_reason, "")))  # why the address fails
    parts: list[tuple[Any, Any, Any]] = [  # kind, which invoices, why (the server's or the mailer's own words)
        (dead, sa.and_(inv_t.c.state.in_(list(DEAD_ENDS)), ~waiting), failing),
        (sa.literal("held"), sa.and_(inv_t.c.held_by.is_not(None), active, sa.func.coalesce(holder, "") != "triage"),
         sa.null()),
        # IN: the few failing contacts first (their partial index), then their invoices
        (sa.literal("bounce"), sa.and_(address_fails(), unheld), failing),
        (sa.literal("fix_data"), sa.and_(inv_t.c.data_error.is_not(None), unheld, ~con_t.c.failing),
         inv_t.c.data_error)]
    out = []
    for kind, where, why in parts:
        q = (sa.select(sa.literal("i").label("sort"), inv_t.c.id.label("id"), kind.label("kind"),
                       con_t.c.email.label("sender"), inv_t.c.number.label("subject"), cli_t.c.name.label("client"),
                       sa.null().label("received_at"),
                       (_cents(inv_t.c.amount) - _cents(inv_t.c.paid)).label("stake"),
                       inv_t.c.due_date.label("due_date"),
                       why.label("reason"),
                       sa.null().label("confidence"), sa.literal("[]").label("suggested"))
             .join(cli_t, cli_t.c.id == inv_t.c.client_id).join(con_t, con_t.c.id == inv_t.c.contact_id).where(where))
        if only is not None:
            q = q.where(inv_t.c.id == only)
        if f.kind:
            q = q.where(kind == f.kind)
        if f.client:
            q = q.where(cli_t.c.name.ilike(f"%{f.client}%"))
        if f.language:
            q = q.where(inv_t.c.language == f.language)
        if f.search:
            like = f"%{f.search}%"
            q = q.where(sa.or_(inv_t.c.number.ilike(like), cli_t.c.name.ilike(like), con_t.c.email.ilike(like)))
        out.append(q)
    return out


def _union(f: Filters, message: int | None = None, invoice: int | None = None, counting: bool = False
           ) -> sa.Subquery:
    """The queue: messages and dead-end invoices (or only message `message`, or invoice `invoice`).
    `counting`: only what counting needs (the kind)."""
    bare = counting and not (f.client or f.language or f.search)
    parts = [] if invoice is not None else [_bare_messages(f) if bare else _messages(f, message)]
    if message is None:
        parts += _invoices(f, invoice)
    if not parts:
        parts = [_messages(f, -1)]
    if counting:
        parts = [p.with_only_columns(*(p.selected_columns[c] for c in ("sort", "id", "kind"))) for p in parts]
    return (sa.union_all(*parts) if len(parts) > 1 else parts[0]).subquery("queue")


def page(conn: Connection, f: Filters, offset: int, limit: int) -> list[Item]:
    """Items `offset` to `offset + limit` of the queue, most at stake first."""
    u = _union(f)
    rows = conn.execute(sa.select(u).order_by(u.c.stake.desc(), u.c.due_date.is_(None), u.c.due_date,
                                              u.c.received_at, u.c.sort, u.c.id).offset(offset).limit(limit)).all()
    return _items(conn, rows)


def count(conn: Connection, f: Filters) -> int:
    u = _union(f, counting=True)
    return int(conn.execute(sa.select(sa.func.count()).select_from(u)).scalar_one())


def counts(conn: Connection) -> dict[str, int]:
    """How many items wait, per kind (all filters off)."""
    u = _union(Filters(), counting=True)
    return {str(k or "?"): int(n) for k, n in conn.execute(sa.select(u.c.kind, sa.func.count()).group_by(u.c.kind))}


def totals(conn: Connection, f: Filters) -> tuple[int, dict[str, int]]:
    """How many items wait under filters `f`, and per kind with no filter."""
    per_kind = counts(conn)
    return (sum(per_kind.values()) if f == Filters() else count(conn, f)), per_kind


def one(conn: Connection, key: str) -> Item | None:
    """A single item by key, as the queue shows it, or None when it no longer waits."""
    if key[0] == "i":
        u = _union(Filters(), invoice=int(conn.execute(sa.select(inv_t.c.id).where(inv_t.c.number == key[1:]))
                                          .scalar() or 0))
    else:
        inbound_id = int(key[1:])
        # A message decided has left the queue: its status says so, where the union would say it at
        # five times the cost (what a decision reads again after it, on the key press).
        if conn.execute(sa.select(in_t.c.status).where(in_t.c.id == inbound_id)).scalar() != "triage":
            return None
        u = _union(Filters(), message=inbound_id)
    rows = conn.execute(sa.select(u)).all()
    items = _items(conn, rows)
    return items[0] if items else None


def dead_ends(conn: Connection, numbers: Sequence[str]) -> list[Item]:
    """The invoices among `numbers` that wait in the queue themselves (a dispute, a plan, a bounce,
    a hold with no message left to read): what a decision on their message may leave behind. One
    look-up by number first, the queue's query only for an invoice in such a state."""
    maybe = conn.execute(sa.select(inv_t.c.number).join(con_t, con_t.c.id == inv_t.c.contact_id).where(
        inv_t.c.number.in_(list(numbers)),
        sa.or_(inv_t.c.state.in_(list(DEAD_ENDS)), inv_t.c.held_by.is_not(None), inv_t.c.data_error.is_not(None),
               con_t.c.failing))).scalars().all()
    return [item for n in maybe if (item := one(conn, f"i{n}")) is not None]


def _items(conn: Connection, rows: Sequence[sa.Row[Any]]) -> list[Item]:
    """Rows of the union as items, with their invoices' numbers and versions read in two queries."""
    msg_ids = [r.id for r in rows if r.sort == "m"]
    inv_ids = [r.id for r in rows if r.sort == "i"]
    by_msg: dict[int, list[tuple[int, str]]] = {}
    for inbound_id, invoice_id, number in conn.execute(
            sa.select(ev_t.c.inbound_id, inv_t.c.id, inv_t.c.number).join(inv_t, inv_t.c.id == ev_t.c.invoice_id)
            .where(ev_t.c.inbound_id.in_(msg_ids), inv_t.c.state != "paid").distinct()):
        by_msg.setdefault(inbound_id, []).append((invoice_id, number))
    numbers = dict(conn.execute(sa.select(inv_t.c.id, inv_t.c.number).where(inv_t.c.id.in_(inv_ids))).all())
    # A message only suggested for an invoice is acted on through it too: its version is read as well.
    hinted = {n for r in rows if r.sort == "m" and not by_msg.get(r.id) for n in json.loads(r.suggested or "[]")}
    suggested = dict(conn.execute(sa.select(inv_t.c.number, inv_t.c.id).where(inv_t.c.number.in_(hinted))).all()
                     ) if hinted else {}
    every = {i for pairs in by_msg.values() for i, _ in pairs} | set(inv_ids) | set(suggested.values())
    ver = versions.of(conn, every)
    out = []
    for r in rows:
        pairs = sorted(by_msg.get(r.id, []), key=lambda p: p[1]) if r.sort == "m" else [(r.id, numbers[r.id])]
        out.append(Item(
            key=f"m{r.id}" if r.sort == "m" else f"i{numbers[r.id]}", inbound_id=r.id if r.sort == "m" else None,
            numbers=tuple(n for _, n in pairs), kind=r.kind or "", sender=r.sender or "", subject=r.subject or "",
            client=r.client or "", received_at=_aware(r.received_at),
            stake=(Decimal(int(r.stake or 0)) / 100).quantize(CENT),
            due_date=_day(r.due_date), reason=_reason(r),
            confidence=Decimal(str(r.confidence)) if r.confidence is not None else None,
            suggested=tuple(json.loads(r.suggested or "[]")),
            versions={n: ver[i] for i, n in pairs} if pairs or r.sort == "i" else {
                n: ver[suggested[n]] for n in json.loads(r.suggested or "[]") if n in suggested}))
    return out


def _reason(r: sa.Row[Any]) -> str:
    """A message's reason as stored; an invoice's, for why it waits (the server's or the mailer's
    own words in it, as they came)."""
    if r.sort == "m":
        return str(r.reason or "")
    if r.kind == "bounce" and r.reason is not None:
        return reason("queue.address_fails", email=r.sender or "", why=r.reason or "?")
    if r.kind == "fix_data":
        return reason("queue.data_error", why=r.reason or "?")
    return ""


def _aware(v: Any) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    assert isinstance(v, datetime)
    return v if v.tzinfo else v.replace(tzinfo=UTC)  # stored in UTC; SQLite keeps no zone


def _day(v: Any) -> date | None:
    if v is None or isinstance(v, date):
        return v
    return date.fromisoformat(str(v))


def marker(conn: Connection) -> tuple[int, int, int]:
    """Changes anywhere, cheaply: the latest event, the latest message, how many wait in triage.
    The UI reads it every few seconds and reloads what it shows when it moves."""
    return (int(conn.execute(sa.select(sa.func.max(ev_t.c.id))).scalar() or 0),
            int(conn.execute(sa.select(sa.func.max(in_t.c.id))).scalar() or 0),
            int(conn.execute(sa.select(sa.func.count()).select_from(in_t).where(in_t.c.status == "triage"))
                .scalar_one()))


def others_since(conn: Connection, event_id: int, actor: str) -> bool:
    """Whether anyone but `actor` recorded an event after `event_id` (a range of the primary key:
    the few events since)."""
    return conn.execute(sa.select(ev_t.c.id).where(ev_t.c.id > event_id, ev_t.c.actor != actor).limit(1)
                        ).first() is not None


# The invoices table: every open invoice, a page at a time, sortable by any column.

SORTS = ("amount_due", "number", "client", "days_overdue", "stage", "state")


def invoice_page(conn: Connection, config: Config, now: datetime, sort: str, descending: bool, offset: int,
                 limit: int, search: str = "") -> list[dict[str, Any]]:
    """A page of `relance status` rows ordered by `sort` (one of SORTS), each with its `version`."""
    stage = (sa.select(sa.func.max(rem_t.c.stage_index)).where(rem_t.c.invoice_id == inv_t.c.id)
             .scalar_subquery())
    key = {"amount_due": _cents(inv_t.c.amount) - _cents(inv_t.c.paid), "number": inv_t.c.number,
           "client": cli_t.c.name, "days_overdue": inv_t.c.due_date,
           "stage": sa.func.coalesce(stage, -1), "state": inv_t.c.state}[sort]
    if sort == "days_overdue":
        descending = not descending  # the earlier the due date, the more days late
    q = (sa.select(inv_t.c.id, inv_t.c.number).join(cli_t, cli_t.c.id == inv_t.c.client_id)
         .where(inv_t.c.state.in_(OPEN_STATES)))
    if search:
        like = f"%{search}%"
        q = q.where(sa.or_(inv_t.c.number.ilike(like), cli_t.c.name.ilike(like)))
    q = q.order_by(key.desc() if descending else key.asc(), inv_t.c.number).offset(offset).limit(limit)
    ids = dict(conn.execute(q).all())
    order = {n: i for i, n in enumerate(ids.values())}
    return sorted(invoice_rows(conn, config, now, ids), key=lambda r: order[r["number"]])


def invoice_rows(conn: Connection, config: Config, now: datetime, ids: dict[int, str]) -> list[dict[str, Any]]:
    """The `relance status` rows of invoices `ids` (id -> number) still open, each with its `version`."""
    rows = reports.status_rows(conn, config, now, list(ids.values())) if ids else []
    ver = versions.of(conn, ids)
    by_number = {n: i for i, n in ids.items()}
    for r in rows:
        r["version"] = ver[by_number[r["number"]]]
    return rows


def invoice_row(conn: Connection, config: Config, now: datetime, number: str) -> dict[str, Any] | None:
    """Invoice `number` as the invoices table shows it (by its unique number: one index look-up,
    where a search by part of it reads every invoice), or None when it is no longer open."""
    found = conn.execute(sa.select(inv_t.c.id, inv_t.c.number).where(inv_t.c.number == number)).all()
    rows = invoice_rows(conn, config, now, {int(i): n for i, n in found})
    return rows[0] if rows else None


def find_invoices(conn: Connection, text: str, limit: int = 6) -> list[tuple[str, str, Decimal, str]]:
    """Open invoices a person may mean by `text` (part of a number or of a client's name): numbers
    that start with it first, then the others; (number, client, amount due, currency)."""
    text = text.strip()
    if not text:
        return []
    like = f"%{text}%"
    starts = sa.case((inv_t.c.number.ilike(f"{text}%"), 0), else_=1)
    rows = conn.execute(
        sa.select(inv_t.c.number, cli_t.c.name, inv_t.c.amount, inv_t.c.paid, inv_t.c.currency)
        .join(cli_t, cli_t.c.id == inv_t.c.client_id)
        .where(inv_t.c.state.in_(OPEN_STATES), sa.or_(inv_t.c.number.ilike(like), cli_t.c.name.ilike(like)))
        .order_by(starts, inv_t.c.number).limit(limit)).all()
    return [(r.number, r.name, r.amount - r.paid, r.currency) for r in rows]


def invoice_count(conn: Connection, search: str = "") -> int:
    q = sa.select(sa.func.count()).select_from(inv_t.join(cli_t, cli_t.c.id == inv_t.c.client_id)).where(
        inv_t.c.state.in_(OPEN_STATES))
    if search:
        like = f"%{search}%"
        q = q.where(sa.or_(inv_t.c.number.ilike(like), cli_t.c.name.ilike(like)))
    return int(conn.execute(q).scalar_one())


# One item in full (Enter): the message as written and as sent, the reading, the invoices.

@dataclass(frozen=True)
class Attachment:
    index: int
    filename: str
    content_type: str
    size: int


def parse_raw(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def attachments(msg: EmailMessage) -> list[Attachment]:
    out = []
    for i, part in enumerate(msg.iter_attachments()):
        payload = part.get_payload(decode=True)
        out.append(Attachment(i, part.get_filename() or f"part-{i}", part.get_content_type(),
                              len(payload) if isinstance(payload, bytes) else 0))
    return out


def message(conn: Connection, inbound_id: int) -> dict[str, Any]:
    """A message in full: what the sender wrote, the original with its headers, the attachments,
    and the bot's reading (kind, confidence, the evidence it relied on)."""
    m = conn.execute(sa.select(in_t).where(in_t.c.id == inbound_id)).first()
    if m is None:
        raise NotFoundError(f"no message #{inbound_id}")
    raw = inbound_raw(conn, [inbound_id]).get(inbound_id, b"")
    parsed = parse_raw(raw)
    return {"id": m.id, "from": m.from_addr, "subject": m.subject, "received_at": _aware(m.received_at),
            "folder": m.folder, "kind": m.kind, "confidence": m.confidence, "status": m.status, "reason": m.reason,
            "text": m.text, "cues": json.loads(m.cues or "[]"), "suggested": json.loads(m.suggested or "[]"),
            "label": m.label, "original": raw.decode("utf-8", "replace"),
            "headers": [(k, str(v)) for k, v in parsed.items()], "attachments": attachments(parsed)}


def attachment_bytes(conn: Connection, inbound_id: int, index: int) -> tuple[str, bytes]:
    raw = inbound_raw(conn, [inbound_id]).get(inbound_id)
    if raw is None:
        raise NotFoundError(f"no message #{inbound_id}")
    for i, part in enumerate(parse_raw(bytes(raw)).iter_attachments()):
        if i == index:
            payload = part.get_payload(decode=True)
            return part.get_filename() or f"part-{i}", payload if isinstance(payload, bytes) else b""
    raise NotFoundError(f"message #{inbound_id} has no attachment {index}")


def save_attachment(conn: Connection, inbound_id: int, index: int) -> tuple[Path, str | None]:
    """Attachment `index` of a message in a private temporary folder (0700, the file 0600: a
    client's documents are not for the other users of the machine). Returns its path, and its text
    when it is text (shown as it is rather than handed to another program)."""
    name, data = attachment_bytes(conn, inbound_id, index)
    folder = Path(tempfile.mkdtemp(prefix="relance-"))
    base = Path(name).name
    if base in ("", ".", "..") or any(ord(c) < 32 or c == "\x7f" for c in base):
        base = f"part-{index}"  # a name the sender chose: never a path, nor a control character
    path = folder / base
    path.write_bytes(data)
    path.chmod(0o600)
    text = None
    if mimetypes.guess_type(path.name)[0] in (None, "text/plain", "text/csv") or path.suffix in (".txt", ".csv"):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return path, text


def invoice(conn: Connection, config: Config, number: str, now: datetime) -> dict[str, Any]:
    """One invoice as `relance show` has it, with its version and a timeline: every reminder, reply,
    payment and decision in the order they happened."""
    doc = reports.show(conn, config, number, now)
    inv_id = conn.execute(sa.select(inv_t.c.id).where(inv_t.c.number == number)).scalar_one()
    doc["version"] = versions.of(conn, [inv_id])[inv_id]
    line: list[tuple[str, str, str, str, str]] = []  # at, what, kind, who, detail
    line += [(r["at"], "reminder", r["stage"], "", r["status"] + (f" · {r['subject']}" if r["subject"] else ""))
             for r in doc["reminders"]]
    line += [(m["received_at"] or "", "reply", m["kind"] or "", m["from"], m["subject"]) for m in doc["messages"]]
    line += [(e["at"], "event", e["kind"], e["actor"], reasons.render(e["reasons"])) for e in doc["events"]
             if e["kind"] != "decision"]
    doc["timeline"] = sorted(line, key=lambda x: (not x[0], x[0]))  # what has no date (yet) comes last
    out_t = table(Outbound)
    others = conn.execute(  # a person's replies and the instalment reminders of a plan, as sent
        sa.select(out_t.c.message_id).join(ev_t, ev_t.c.outbound_id == out_t.c.id)
        .where(ev_t.c.invoice_id == inv_id, ev_t.c.kind.in_(("reply_queued", "instalment_queued")),
               out_t.c.status.in_(("sent", "uncertain"))).order_by(ev_t.c.id)).scalars()
    doc["sent"] = sent(conn, [*(r["message_id"] for r in doc["reminders"] if r["message_id"]), *others])
    return doc


def sent(conn: Connection, message_ids: list[str]) -> list[dict[str, str]]:
    """Messages as the client received them (reminders, replies): headers and text, in the order given."""
    out_t = table(Outbound)
    raws = dict(conn.execute(sa.select(out_t.c.message_id, out_t.c.raw).where(out_t.c.message_id.in_(message_ids))
                             ).all())
    out = []
    for mid in message_ids:
        raw = raws.get(mid)
        if not raw:
            continue
        msg = parse_raw(bytes(raw))
        body = msg.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        head = "\n".join(f"{k}: {msg[k]}" for k in ("From", "To", "Cc", "Date", "Subject", "Message-ID") if msg[k])
        out.append({"message_id": mid, "text": f"{head}\n\n{text}"})
    return out
