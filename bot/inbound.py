"""The inbound side: store every new message of the watched folders, then understand it.

Storing and understanding are separate steps. `store_new` writes the raw bytes and advances the
folder's last UID in one transaction per batch, so a crash between fetch and commit re-fetches
the batch and a restart resumes exactly; nothing is parsed before it is stored. `process`
parses, classifies, matches and applies the effects of each stored message in its own
transaction; a message that breaks the parser is kept, marked `quarantined` with the reason,
and the next one goes on. `reprocess` runs stored messages through the pipeline again."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot.config import Config
from bot.mailbox import MailSource
from bot.models import Client, Contact, Inbound, Invoice, Mailbox, Outbound, Reminder, table
from bot.store import record_events, session
from bot.understand import find_dates, parse
from rules.classify import Kind, Understanding, classify
from rules.match import Known, Match, digits, match, normalise
from rules.plan import instalments

in_t, mb_t, inv_t, con_t, cli_t = table(Inbound), table(Mailbox), table(Invoice), table(Contact), table(Client)
out_t, rem_t = table(Outbound), table(Reminder)
BATCH = 200
_TOKEN = re.compile(r"^[^+@]+\+([0-9a-f]{6,})@")  # ar+TOKEN@domain: the reply address of a reminder
OPEN = ("active", "disputed", "plan", "bounced")


@dataclass
class SyncReport:
    stored: int = 0
    duplicates: int = 0
    rescanned: list[str] = field(default_factory=list)  # folders whose UIDVALIDITY changed
    processed: list[str] = field(default_factory=list)


def store_new(engine: Engine, source: MailSource, folder: str, now: datetime, report: SyncReport) -> None:
    """Fetch and store what arrived in `folder` since the last pass."""
    uidvalidity = source.select(folder)
    with engine.connect() as c:
        state = c.execute(sa.select(mb_t).where(mb_t.c.folder == folder)).first()
    last_uid = 0
    if state is None:
        with session(engine) as s:
            s.execute(sa.insert(mb_t).values(folder=folder, uidvalidity=uidvalidity, last_uid=0))
    elif state.uidvalidity != uidvalidity:
        # The server renumbered the folder: read it again; Message-ID and content hash dedupe it.
        report.rescanned.append(folder)
        with session(engine) as s:
            s.execute(sa.update(mb_t).where(mb_t.c.folder == folder).values(uidvalidity=uidvalidity, last_uid=0))
    else:
        last_uid = int(state.last_uid)
    uidnext = source.uidnext  # as SELECT reported it: every UID below exists or was expunged
    while True:
        batch = source.fetch_after(last_uid, BATCH)
        if not batch:
            if uidnext - 1 > last_uid:  # the rest were expunged before we saw them: do not wait for them
                with session(engine) as s:
                    s.execute(sa.update(mb_t).where(mb_t.c.folder == folder).values(last_uid=uidnext - 1))
            return
        with session(engine) as s:
            hashes = [hashlib.sha256(f.raw).hexdigest() for f in batch]
            known = set(s.execute(sa.select(in_t.c.content_hash).where(in_t.c.content_hash.in_(hashes))).scalars())
            rows = []
            for f, h in zip(batch, hashes, strict=True):
                if h in known:
                    report.duplicates += 1
                    continue
                known.add(h)
                rows.append({"folder": folder, "uidvalidity": uidvalidity, "uid": f.uid, "raw": f.raw,
                             "content_hash": h, "stored_at": now, "received_at": f.internaldate,
                             "message_id": _clean(_header(f.raw, b"message-id"))[:250], "status": "new"})
            if rows:
                s.execute(sa.insert(in_t), rows)
            last_uid = batch[-1].uid
            s.execute(sa.update(mb_t).where(mb_t.c.folder == folder).values(last_uid=last_uid))
        report.stored += len(rows)


def _header(raw: bytes, name: bytes) -> str:
    """One header from raw bytes without parsing the message (parsing comes after storing)."""
    m = re.search(rb"^" + name + rb":[ \t]*(.*(?:\r?\n[ \t].*)*)", raw[:65536], re.IGNORECASE | re.MULTILINE)
    return m.group(1).decode("utf-8", "replace").strip() if m else ""


def process(engine: Engine, config: Config, now: datetime, ids: Sequence[int] | None = None) -> list[str]:
    """Understand and apply stored messages (`status = new`, or the given ids). Returns a line each."""
    with engine.connect() as c:
        q = sa.select(in_t.c.id).order_by(in_t.c.id)
        q = q.where(in_t.c.id.in_(list(ids))) if ids is not None else q.where(in_t.c.status == "new")
        todo = list(c.execute(q).scalars())
    lines: list[str] = []
    if not todo:
        return lines
    with engine.connect() as c:
        numbers = _Numbers(list(c.execute(sa.select(inv_t.c.number)).scalars()))
    for inbound_id in todo:
        try:
            with session(engine) as s:
                lines.append(_process_one(s, config, now, inbound_id, numbers))
        except Exception as e:
            reason = f"could not be processed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            with session(engine) as s:
                s.execute(sa.update(in_t).where(in_t.c.id == inbound_id).values(
                    status="quarantined", reason=_clean(reason)[:1000]))
            lines.append(f"quarantined  #{inbound_id}: {reason}")
    return lines


def _clean(text: str) -> str:
    """Text a database accepts: no NUL (PostgreSQL refuses it), no lone surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


class _Numbers:
    """Every invoice number, normalised two ways, read once per pass (not once per message)."""

    def __init__(self, numbers: list[str]) -> None:
        self.by_normalised = {normalise(n): n for n in numbers}
        self.by_digits: dict[str, tuple[str, ...]] = {}
        for n in numbers:
            d = digits(n)
            if len(d) >= 4:
                self.by_digits[d] = (*self.by_digits.get(d, ()), n)


def _process_one(s: Connection, config: Config, now: datetime, inbound_id: int, numbers: _Numbers) -> str:
    raw = s.execute(sa.select(in_t.c.raw).where(in_t.c.id == inbound_id)).scalar_one()
    try:
        parsed = parse(raw)
    except Exception as e:
        s.execute(sa.update(in_t).where(in_t.c.id == inbound_id).values(
            status="quarantined", reason=f"unreadable: {type(e).__name__}: {e}"[:500]))
        return f"quarantined  #{inbound_id}: {e}"
    today = now.astimezone(config.zone).date()
    understood = classify(parsed.facts, config.company.domain)
    if understood.kind in (Kind.PROMISE_TO_PAY, Kind.AUTO_REPLY, Kind.PAYMENT_PLAN):
        facts = replace(parsed.facts, dates=find_dates(parsed.facts.text, today))
        understood = classify(facts, config.company.domain)
        if understood.kind is Kind.PAYMENT_PLAN:
            proposal = instalments(facts.text, facts.dates)
            understood = replace(understood, cues=(*understood.cues, *(
                "proposes " + (f"{i.amount}" if i.amount is not None else "?") + " on "
                + (i.due.isoformat() if i.due else "?") for i in proposal)))
    tokens = [m.group(1) for r in parsed.recipients if (m := _TOKEN.match(r))]
    known = _known(s, parsed.refs, parsed.sender, tokens, numbers)
    texts = (parsed.subject, parsed.facts.text, *parsed.facts.attachments)
    found = match(parsed.refs, tokens, texts, known)
    status, reason = _apply(s, config, now, inbound_id, understood, found)
    s.execute(sa.update(in_t).where(in_t.c.id == inbound_id).values(
        message_id=_clean(parsed.message_id)[:250] or f"<no-message-id.{inbound_id}@relance>",
        from_addr=_clean(parsed.sender)[:250], subject=_clean(parsed.subject)[:500],
        received_at=parsed.received_at if parsed.received_at and parsed.received_at.tzinfo else None,
        kind=understood.kind.value, confidence=understood.confidence,
        status=status, reason=_clean(reason)[:1000], text=_clean(parsed.facts.text)[:20000],
        cues=json.dumps([*understood.cues, f"match: {found.method}: {found.reason}"], ensure_ascii=False)))
    return f"{status:<11} {understood.kind.value:<15} {', '.join(found.numbers) or '-':<20} {parsed.subject[:60]}"


def _known(s: Connection, refs: Sequence[str], sender: str, tokens: Sequence[str], numbers: _Numbers) -> Known:
    by_mid: dict[str, tuple[str, ...]] = {}
    if refs:
        rows = s.execute(sa.select(out_t.c.message_id, inv_t.c.number)
                         .join(rem_t, rem_t.c.outbound_id == out_t.c.id).join(inv_t, inv_t.c.id == rem_t.c.invoice_id)
                         .where(out_t.c.message_id.in_(list(refs)), rem_t.c.skipped.is_(False))).all()
        for mid, number in rows:
            by_mid[mid] = (*by_mid.get(mid, ()), number)
    by_token: dict[str, tuple[str, ...]] = {}
    if tokens:
        for tok, number in s.execute(
                sa.select(out_t.c.reply_token, inv_t.c.number).join(rem_t, rem_t.c.outbound_id == out_t.c.id)
                .join(inv_t, inv_t.c.id == rem_t.c.invoice_id).where(out_t.c.reply_token.in_(list(tokens)))):
            by_token[tok] = (*by_token.get(tok, ()), number)
    sender_open = tuple(s.execute(
        sa.select(inv_t.c.number).join(con_t, con_t.c.client_id == inv_t.c.client_id)
        .where(con_t.c.email == sender, inv_t.c.state.in_(OPEN)).distinct().order_by(inv_t.c.number)).scalars())
    return Known(by_message_id=by_mid, by_token=by_token, by_normalised=numbers.by_normalised,
                 by_digits=numbers.by_digits, sender_open=sender_open)


def _apply(s: Connection, config: Config, now: datetime, inbound_id: int, u: Understanding, m: Match
           ) -> tuple[str, str]:
    """The effects of one understood message on its invoices, as events. Returns (status, reason)."""
    if not m.numbers or not m.sure:
        if u.kind is Kind.AUTO_REPLY and not m.numbers:
            return "applied", f"auto-reply, no invoice concerned ({m.reason})"
        # Record the link to the probable invoice, but let a person decide.
        return "triage", m.reason
    invoices = s.execute(sa.select(inv_t.c.id, inv_t.c.number, inv_t.c.state, inv_t.c.hold_until, inv_t.c.contact_id)
                         .where(inv_t.c.number.in_(list(m.numbers)))).all()
    p = config.pause
    tz = config.zone
    events: list[dict[str, Any]] = []
    status, reason = "applied", m.reason

    def hold(inv: Any, until: datetime, why: str) -> None:
        new = max(until, inv.hold_until) if inv.hold_until else until
        s.execute(sa.update(inv_t).where(inv_t.c.id == inv.id).values(hold_until=new))
        events.append({"invoice_id": inv.id, "kind": "paused", "reason": why, "data": {"until": new.isoformat()}})

    for inv in invoices:
        base = {"invoice_id": inv.id, "at": now, "inbound_id": inbound_id}
        if inv.state == "paid":
            events.append({**base, "kind": "reply_recorded", "reason": f"{u.kind.value} about a paid invoice"})
            continue
        events.append({**base, "kind": f"message_{u.kind.value}", "reason": "; ".join(u.cues)[:500]})
        if u.kind is Kind.AUTO_REPLY:
            if u.date is not None:  # postpone until after the return date, nothing else
                hold(inv, datetime.combine(u.date + timedelta(days=1), time(0), tz), "out of office until "
                     f"{u.date.isoformat()}")
        elif u.kind is Kind.BOUNCE:
            s.execute(sa.update(inv_t).where(inv_t.c.id == inv.id).values(state="bounced"))
            s.execute(sa.update(con_t).where(con_t.c.id == inv.contact_id).values(
                failing=True, failure_reason="delivery failure reported by the recipient's server"))
            status, reason = "triage", "delivery failure: fix the contact, then resume"
        elif u.kind is Kind.PROMISE_TO_PAY:
            until = (datetime.combine(u.date + timedelta(days=p.promise_grace_days), time(0), tz) if u.date
                     else now + timedelta(days=p.human_reply_days))
            hold(inv, until, "promise to pay" + (f" on {u.date.isoformat()}" if u.date else ""))
        elif u.kind is Kind.PAYMENT_CLAIM:
            hold(inv, now + timedelta(days=p.payment_claim_days), "the client says it has paid")
        elif u.kind in (Kind.PAYMENT_PLAN, Kind.DISPUTE):
            new_state = "plan" if u.kind is Kind.PAYMENT_PLAN else "disputed"
            s.execute(sa.update(inv_t).where(inv_t.c.id == inv.id).values(state=new_state))
            proposal = [c.removeprefix("proposes ") for c in u.cues if c.startswith("proposes ")]
            events.append({**base, "kind": new_state, "reason": "until a person decides",
                           "data": {"proposal": proposal} if proposal else {}})
            status, reason = "triage", f"{u.kind.value}: a person decides"
        else:
            hold(inv, now + timedelta(days=p.human_reply_days), "the client answered")
            status, reason = "triage", "a client's reply: read it and decide"
    for e in events:
        e.setdefault("at", now)
        e.setdefault("inbound_id", inbound_id)
    record_events(s, events)
    return status, reason

