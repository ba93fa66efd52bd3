"""A person's decisions at the desk (the triage UI, and the command line), each one undoable.

`decide` wraps any action: it reads the rows the action may touch (invoices, their contacts, the
messages, the ignored senders), runs the action in its own transaction, reads the rows again and
records one `decision` event with who, why, and for each row that changed its values before and
after. `undo` puts the `before` values back, but only while every changed row still holds its
`after` values: a change made since by someone else (the daemon, another person) is never
overwritten; the undo is refused and says so. The events of the action stay (the log is
append-only) and an `undone` event says what was reverted and by whom.

A reply to a client queued by a decision (bot/replies.py) is part of it: undo cancels it while it
waits in the outbox, and is refused, saying so, once it has gone out (a mail cannot be unsent).

The dead ends of triage are here too: accept or reject a payment plan, settle a dispute, dismiss
a message as noise, ignore a sender."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot import actions, plans, replies, versions
from bot.config import Config
from bot.errors import NotFoundError, RelanceError, StaleError
from bot.i18n import day, t
from bot.models import Client, Contact, Event, IgnoredSender, Inbound, Invoice, Outbound, table
from bot.reasons import fit
from bot.store import record_event, record_events, session
from rules.plan import Instalment
from rules.reasons import join, reason

inv_t, con_t, in_t, ev_t, ign_t = table(Invoice), table(Contact), table(Inbound), table(Event), table(IgnoredSender)
cli_t = table(Client)
out_t = table(Outbound)

# The columns a decision may change, per table, and how their values go to JSON and back.
COLUMNS: dict[str, tuple[str, ...]] = {
    "invoice": ("state", "hold_until", "held_by", "paid", "contact_id"),
    "contact": ("failing", "failure_reason"),
    "inbound": ("status", "kind", "confidence", "reason", "suggested", "label", "labelled_by", "labelled_at"),
}
TABLES = {"invoice": inv_t, "contact": con_t, "inbound": in_t}
_DATES = {"hold_until", "labelled_at"}
_DECIMALS = {"paid", "confidence"}


@dataclass(frozen=True)
class Done:
    """What a decision did: the line to show, and the `decision` event `undo` reverts."""

    text: str
    decision: int
    mark: int = 0  # the latest event before it ran: what the screen compares with what it read


def _dump(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    return v


def _load(column: str, v: Any) -> Any:
    if v is None:
        return None
    if column in _DATES:
        return datetime.fromisoformat(v)
    if column in _DECIMALS:
        return Decimal(v)
    return v


@dataclass(frozen=True)
class Scope:
    """The rows a decision may touch."""

    invoices: tuple[str, ...] = ()
    inbounds: tuple[int, ...] = ()
    senders: tuple[str, ...] = ()


def _rows(c: Connection, scope: Scope) -> dict[str, dict[int, dict[str, Any]]]:
    """The values of every row in scope: the named invoices, the invoices of their clients and of
    the messages (a message's effects and a new address reach a client's other invoices), their
    contacts, the messages."""
    # Five statements at most, each a few rows (a decision in the triage screen reads this twice
    # within its key press): the clients are a subquery, not a round trip.
    def rows(name: str, where: Any) -> dict[int, dict[str, Any]]:
        tb, cols = TABLES[name], COLUMNS[name]
        return {int(r.id): {k: _dump(getattr(r, k)) for k in cols}
                for r in c.execute(sa.select(tb.c.id, *(tb.c[k] for k in cols)).where(where))}

    out = {"inbound": rows("inbound", in_t.c.id.in_(scope.inbounds)) if scope.inbounds else {}}
    numbers = set(scope.invoices).union(*(json.loads(m["suggested"] or "[]") for m in out["inbound"].values()))
    linked = sa.select(ev_t.c.invoice_id).where(ev_t.c.inbound_id.in_(scope.inbounds), ev_t.c.invoice_id.is_not(None))
    clients = sa.select(inv_t.c.client_id).where(sa.or_(inv_t.c.number.in_(sorted(numbers)), inv_t.c.id.in_(linked)))
    out["invoice"] = rows("invoice", inv_t.c.client_id.in_(clients))
    out["contact"] = rows("contact", con_t.c.client_id.in_(clients))
    out["ignored"] = {int(r.id): {"address": r.address} for r in c.execute(
        sa.select(ign_t.c.id, ign_t.c.address).where(ign_t.c.address.in_(scope.senders)))} if scope.senders else {}
    out["outbound"] = {int(r.id): {"status": r.status} for r in c.execute(
        sa.select(out_t.c.id, out_t.c.status).where(out_t.c.id.in_(replies.outbound_query(scope.inbounds,
                                                                                          scope.invoices))))}
    return out


def decide(engine: Engine, now: datetime, actor: str, action: str, why: str, scope: Scope,
           run: Callable[[], str]) -> Done:
    """Run `run` (an action in its own transaction) and record it as one undoable decision.

    What someone else (the daemon, another person) changed on the same rows while it ran would be
    counted in the decision's "after" and put back by its undo: their events since the "before"
    was read are kept with the decision, and its undo is refused."""
    with engine.connect() as c:
        mark = int(c.execute(sa.select(sa.func.max(ev_t.c.id))).scalar() or 0)  # before the rows: see above
        before = _rows(c, scope)
    text = run()
    with session(engine) as s:
        after = _rows(s, scope)
        invoices = [int(i) for i in before["invoice"].keys() | after["invoice"].keys()]
        meanwhile = [{"event": int(r.id), "actor": r.actor, "kind": r.kind} for r in s.execute(
            sa.select(ev_t.c.id, ev_t.c.actor, ev_t.c.kind).where(
                ev_t.c.id > mark, ev_t.c.actor != actor,
                sa.or_(ev_t.c.invoice_id.in_(invoices), ev_t.c.inbound_id.in_(scope.inbounds)))
            .order_by(ev_t.c.id))]
        changes: dict[str, dict[str, Any]] = {}
        for name in before.keys() | after.keys():
            for rid in before.get(name, {}).keys() | after.get(name, {}).keys():
                b, a = before.get(name, {}).get(rid), after.get(name, {}).get(rid)
                if name == "outbound" and b is not None:  # an earlier reply the daemon sent meanwhile
                    continue
                if b != a:
                    changes.setdefault(name, {})[str(rid)] = {"before": b, "after": a}
        first_invoice = next(iter(changes.get("invoice", {})), None)
        decision = s.execute(sa.insert(ev_t).values(
            invoice_id=int(first_invoice) if first_invoice else None, kind="decision", at=now, actor=actor,
            reason=fit(why), inbound_id=scope.inbounds[0] if scope.inbounds else None,
            data=json.dumps({"action": action, "text": text, "changes": changes, "meanwhile": meanwhile},
                            ensure_ascii=False))
            .returning(ev_t.c.id)).scalar_one()
    return Done(text, int(decision), mark)


def last_decision(conn: Connection, actor: str) -> int | None:
    """The actor's latest decision not undone yet."""
    undone = sa.select(ev_t.c.data).where(ev_t.c.kind == "undone", ev_t.c.actor == actor)
    done = {json.loads(d).get("decision") for d in conn.execute(undone).scalars()}
    for rid in conn.execute(sa.select(ev_t.c.id).where(ev_t.c.kind == "decision", ev_t.c.actor == actor)
                            .order_by(ev_t.c.id.desc()).limit(50)).scalars():
        if rid not in done:
            return int(rid)
    return None


def undo(engine: Engine, now: datetime, actor: str, decision: int | None = None) -> str:
    """Revert decision `decision` (by default the actor's latest not undone): refused when any row
    it changed has changed again since."""
    with session(engine) as s:
        decision = decision if decision is not None else last_decision(s, actor)
        if decision is None:
            raise NotFoundError(t("nothing to undo"))
        row = s.execute(sa.select(ev_t.c.data, ev_t.c.kind).where(ev_t.c.id == decision)).first()
        if row is None or row.kind != "decision":
            raise NotFoundError(t("no decision #{id}", id=decision))
        if s.execute(sa.select(ev_t.c.id).where(ev_t.c.kind == "undone", ev_t.c.data.like(
                f'%"decision": {decision}}}%'))).first():
            raise RelanceError(t("decision #{id} was already undone", id=decision))
        doc = json.loads(row.data)
        changes: dict[str, dict[str, Any]] = doc["changes"]
        if doc.get("meanwhile"):  # its "before" and "after" hold someone else's change too
            first = doc["meanwhile"][0]
            raise RelanceError(t("{actor} changed the same invoices while decision #{id} ran ({kind}): its undo "
                                 "would undo theirs too; nothing undone, change them by hand", actor=first["actor"],
                                 id=decision, kind=t(first["kind"])))
        _check_unchanged(s, changes)
        for rid, change in changes.get("outbound", {}).items():  # a reply it queued: cancelled, unless gone
            if change["before"] is None:
                replies.cancel(s, int(rid), now, actor)
        ignored = changes.get("ignored", {})
        for rid, change in ignored.items():
            if change["after"] is not None and change["before"] is None:
                s.execute(sa.delete(ign_t).where(ign_t.c.id == int(rid)))
        for name, rows in changes.items():
            if name in ("ignored", "outbound"):
                continue
            tb = TABLES[name]
            for rid, change in rows.items():
                if change["before"] is None:  # a row the decision added (a new contact) stays, unused
                    continue
                values = {k: _load(k, v) for k, v in change["before"].items()}
                s.execute(sa.update(tb).where(tb.c.id == int(rid)).values(**values))
        invoice_ids = [int(i) for i in changes.get("invoice", {})]
        undid = reason("decision.undone", action=doc["action"], text=str(doc["text"])[:800])
        events = [{"invoice_id": i, "kind": "undone", "at": now, "actor": actor, "data": {"decision": decision},
                   "reason": undid} for i in invoice_ids]
        if not invoice_ids:
            events.append({"invoice_id": None, "kind": "undone", "at": now, "actor": actor,
                           "data": {"decision": decision}, "reason": undid})
        if doc["action"] == "accept_plan":
            events += [{"invoice_id": i, "kind": "plan_ended", "at": now, "actor": actor,
                        "reason": reason("plan.undone")}
                       for i in invoice_ids]
        record_events(s, events)
    return t("undone: {what}", what=doc["text"])


def _check_unchanged(s: Connection, changes: dict[str, dict[str, Any]]) -> None:
    """Every row the decision changed still holds what the decision left there."""
    for name, rows in changes.items():
        if name in ("ignored", "outbound"):
            continue
        tb, cols = TABLES[name], COLUMNS[name]
        for rid, change in rows.items():
            r = s.execute(sa.select(*(tb.c[k] for k in cols)).where(tb.c.id == int(rid)).with_for_update()).first()
            now_values = None if r is None else {k: _dump(getattr(r, k)) for k in cols}
            if now_values != change["after"]:
                raise StaleError(t("changed again since (by the daemon or another person): not undone"))


# The dead ends: what a plan, a dispute, a noise message or a newsletter needs from a person.

def accept_plan(engine: Engine, config: Config, number: str, instalments: Sequence[Instalment], now: datetime,
                actor: str, why: str, inbound_id: int | None = None, seen: int | None = None,
                reply: replies.Composed | None = None) -> str:
    """A person accepts a payment plan: the instalments (amounts adding up to what is due, dates
    to come) are recorded; the invoice goes back on the ladder, held until each instalment in turn
    (bot.plans). The message that proposed it, if any, is decided."""
    today = now.astimezone(config.zone).date()
    with session(engine) as s:
        inv = actions.locked_invoice(s, number, seen)
        if inv.state == "paid":
            raise RelanceError(t("{number} is paid: no plan to accept", number=number))
        steps = plans.steps_for(instalments, inv.amount - inv.paid, today, config.pause.promise_grace_days,
                                config.zone)
        s.execute(sa.update(inv_t).where(inv_t.c.id == inv.id).values(
            state="active", hold_until=steps[0].hold_until, held_by=None))
        plans.record(s, int(inv.id), steps, inv.paid, now, actor, join(plans.accepted(steps), why), inbound_id)
        if inbound_id is not None:
            s.execute(sa.update(in_t).where(in_t.c.id == inbound_id, in_t.c.status == "triage").values(
                status="applied", reason=reason("plan.accepted_by", actor=actor)))
            actions.release_holds(s, inbound_id, now, actor)
        sent = replies.record(s, reply, now, actor, why) if reply is not None else None
    text = t("{number}: plan of {n} instalment(s) accepted, next on {day}", number=number, n=len(steps),
             day=day(steps[0].due))
    return text + (f"; {replies.queued_text(sent)}" if sent is not None else "")


def reject_plan(engine: Engine, number: str, now: datetime, actor: str, why: str, inbound_id: int | None = None,
                seen: int | None = None, reply: replies.Composed | None = None) -> str:
    """A person declines a plan: the invoice goes back on the ladder now (a plan that ran ends).
    `reply` (bot.replies.prepare): the answer to the client, queued in the same transaction."""
    with session(engine) as s:
        inv = actions.locked_invoice(s, number, seen)
        if inv.state == "paid":
            raise RelanceError(t("{number} is paid: no plan to reject", number=number))
        s.execute(sa.update(inv_t).where(inv_t.c.id == inv.id).values(state="active", hold_until=now, held_by=None))
        record_event(s, invoice_id=int(inv.id), kind="plan_ended", at=now, actor=actor, inbound_id=inbound_id,
                     reason=why or reason("plan.declined"))
        if inbound_id is not None:
            s.execute(sa.update(in_t).where(in_t.c.id == inbound_id, in_t.c.status == "triage").values(
                status="applied", reason=reason("plan.declined_by", actor=actor)))
            actions.release_holds(s, inbound_id, now, actor)
        sent = replies.record(s, reply, now, actor, why) if reply is not None else None
    text = t("{number}: plan declined, the ladder goes on", number=number)
    return text + (f"; {replies.queued_text(sent)}" if sent is not None else "")


def reply(engine: Engine, config: Config, inbound_id: int, template: str, text: str | None, now: datetime,
          actor: str, why: str = "") -> str:
    """A person answers a client's message (bot.replies): queued in the outbox, threaded to it."""
    return replies.queued_text(replies.queue(engine, config, inbound_id, template, text, now, actor, why))


SETTLEMENTS = ("resume", "cancel", "credit")


def settle_dispute(engine: Engine, number: str, how: str, now: datetime, actor: str, why: str,
                   credit: Decimal | None = None, seen: int | None = None) -> str:
    """A dispute is settled: `resume` (the client was wrong: the ladder goes on), `cancel` (the
    invoice is withdrawn: a credit note for all that is due) or `credit` (a credit note of `credit`,
    the rest still due and chased)."""
    if how not in SETTLEMENTS:
        raise RelanceError(t("{value}: expected one of {choices}", value=repr(how), choices=", ".join(SETTLEMENTS)))
    with engine.connect() as c:
        inv = actions.locked_invoice(c, number, seen)
        seen = versions.of(c, [int(inv.id)])[int(inv.id)] if seen is None else seen
    if inv.state != "disputed":
        raise RelanceError(t("{number} is not disputed ({state}): no dispute to settle", number=inv.number,
                             state=t(inv.state)))
    if how == "resume":
        return actions.resume(engine, number, now, actor, seen, reason=why or reason("dispute.settled"))
    due = inv.amount - inv.paid
    amount = due if how == "cancel" else credit
    if amount is None:
        raise RelanceError(t("a credit note needs its amount"))
    text = actions.record_payment(engine, number, now, amount, actor, seen, kind="credit_note")
    if how == "credit":
        with session(engine) as s:  # the rest is still due: back on the ladder
            s.execute(sa.update(inv_t).where(inv_t.c.number == number, inv_t.c.state == "disputed").values(
                state="active", hold_until=now, held_by=None))
            record_event(s, invoice_id=int(inv.id), kind="resumed", at=now, actor=actor,
                         reason=join(reason("state.was", state="disputed"), why or reason("dispute.credit_note")))
    return text


def dismiss(engine: Engine, inbound_ids: Iterable[int], now: datetime, actor: str, why: str = "") -> str:
    """Messages that need nothing (noise): decided, the holds they put on invoices lifted. One that
    someone else decided meanwhile is left as they decided it (and said so); refused only when
    that is true of every one."""
    ids, done, stale = list(inbound_ids), 0, None
    for i in ids:
        try:
            actions.close_message(engine, i, now, actor, why or reason("decision.dismiss"), in_triage=True)
            done += 1
        except StaleError as e:
            stale = e
    if stale is not None and not done:
        raise stale
    text = t("{n} message(s) dismissed", n=done)
    return text + (f"; {stale}" if stale is not None else "")


def ignore_sender(engine: Engine, address: str, now: datetime, actor: str, why: str = "") -> str:
    """Mail from `address` never waits for a person again (a newsletter): the address is kept, and
    its messages waiting now are dismissed. Refused for a client's address (its mail is read all the
    same: a payment, a dispute or a bounce from it must reach a person)."""
    address = address.strip().lower()
    if "@" not in address:
        raise RelanceError(t("{value}: expected an email address", value=repr(address)))
    with session(engine) as s:
        client = s.execute(sa.select(cli_t.c.name).join(con_t, con_t.c.client_id == cli_t.c.id)
                           .where(sa.func.lower(con_t.c.email) == address)).scalar()
        if client is not None:  # a client's mail is read whatever the list says: ignoring it would hide it
            raise RelanceError(t("{address} is the address of {client}: a client cannot be ignored; dismiss "
                                 "this message instead (d)", address=address, client=client))
        if s.execute(sa.select(ign_t.c.id).where(ign_t.c.address == address)).first() is None:
            s.execute(sa.insert(ign_t).values(address=address, at=now, actor=actor, reason=why[:500]))
        waiting = list(s.execute(sa.select(in_t.c.id).where(in_t.c.status == "triage",
                                                             sa.func.lower(in_t.c.from_addr) == address)).scalars())
    for i in waiting:
        actions.close_message(engine, i, now, actor, reason("decision.ignore", address=address))
    return t("{address} ignored ({n} message(s) dismissed)", address=address, n=len(waiting))


def waiting_from(conn: Connection, address: str) -> list[int]:
    """The messages from `address` waiting for a person (what `ignore_sender` dismisses)."""
    return list(conn.execute(sa.select(in_t.c.id).where(in_t.c.status == "triage",
                                                         sa.func.lower(in_t.c.from_addr) == address.lower())).scalars())
