"""Manual overrides from the CLI and the TUI, each recorded as an event.

`seen` is the version of the invoice the person decided on (bot.versions): given, the action is
refused when the invoice changed since; the TUI passes it, the command line reads and acts at once."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot import plans, versions
from bot.addresses import AddressError, plain_address
from bot.errors import NotFoundError, RelanceError, StaleError
from bot.i18n import day, money, t
from bot.models import Contact, Event, Inbound, Invoice, table
from bot.store import record_event, session
from rules.reasons import join
from rules.reasons import reason as coded

inv_t, con_t = table(Invoice), table(Contact)


def _invoice(s: Connection, number: str, lock: bool = False) -> sa.Row[Any]:
    """The invoice numbered `number`, as typed or in another case (`f-2026-003` is F-2026-003);
    with `lock`, locked for the transaction (PostgreSQL; SQLite has one writer at a time)."""
    q = sa.select(inv_t).where(inv_t.c.number == number)
    row = s.execute(q.with_for_update() if lock else q).first()
    if row is None:
        rows = s.execute(sa.select(inv_t).where(sa.func.lower(inv_t.c.number) == number.lower()).limit(2)).all()
        if len(rows) > 1:
            raise RelanceError(f"{number!r} is {rows[0].number} or {rows[1].number}: type it in its exact case")
        row = rows[0] if rows else None
    if row is None:
        raise NotFoundError(f"no invoice numbered {number!r}")
    return row


def locked_invoice(s: Connection, number: str, seen: int | None = None) -> sa.Row[Any]:
    """The invoice row, locked for the transaction, after the lost-update check against version `seen`."""
    row = _invoice(s, number, lock=True)
    versions.check(s, int(row.id), str(row.number), seen)
    return row


def canonical_numbers(engine: Engine, numbers: list[str]) -> list[str]:
    """Invoice numbers as stored, whatever the case they were typed in; unknown ones as typed."""
    with engine.connect() as c:
        out = []
        for n in numbers:
            try:
                out.append(str(_invoice(c, n).number))
            except NotFoundError:
                out.append(n)
        return out


def pause(engine: Engine, number: str, now: datetime, until: datetime | None, reason: str, actor: str,
          seen: int | None = None) -> str:
    """Hold escalation until `until`, or until `resume` when no date is given."""
    with session(engine) as s:
        inv = locked_invoice(s, number, seen)
        number = str(inv.number)  # as stored, whatever the case it was typed in
        if inv.state == "paid":
            raise RelanceError(t("{number} is paid: there is nothing to pause", number=number))
        if until is not None and until <= now:
            raise RelanceError(t("{day}: that is not in the future", day=day(until.date())))
        values = {"hold_until": until} if until else {"state": "paused", "hold_until": None}
        s.execute(sa.update(inv_t).where(inv_t.c.id == inv.id).values(**values))
        record_event(s, invoice_id=int(inv.id), kind="paused", at=now, actor=actor, reason=reason,
                     data={"until": until.isoformat() if until else None})
    return (t("{number} paused until {day}", number=number, day=day(until.date())) if until
            else t("{number} paused until resumed", number=number))


def resume(engine: Engine, number: str, now: datetime, actor: str, seen: int | None = None,
           reason: str = "") -> str:
    """Back to the ladder now; paused time does not count towards the next stage."""
    with session(engine) as s:
        inv = locked_invoice(s, number, seen)
        number = str(inv.number)  # as stored, whatever the case it was typed in
        if inv.state == "paid":
            raise RelanceError(t("{number} is paid: there is nothing to resume", number=number))
        # A person says go on: a data error (fix_data) is theirs to have fixed, e.g. in the configuration.
        s.execute(sa.update(inv_t).where(inv_t.c.id == inv.id).values(state="active", hold_until=now, held_by=None,
                                                                       data_error=None))
        # Resumed where it waited on its address (bounced, or active and in the queue for a failing
        # address): the address is said to work again. A paused or disputed invoice resumed says
        # nothing of it; `contact` gives a new one.
        if inv.state == "bounced" or (inv.state == "active" and inv.held_by is None):
            s.execute(sa.update(con_t).where(con_t.c.id == inv.contact_id, con_t.c.failing).values(
                failing=False, failure_reason=None))
        record_event(s, invoice_id=int(inv.id), kind="resumed", at=now, actor=actor,
                     reason=join(coded("state.was", state=inv.state), reason))
    return t("{number} resumed", number=number)


def release_holds(s: Connection, inbound_id: int, now: datetime, actor: str) -> list[str]:
    """A person has read message `inbound_id`: the invoices it held go on, unless another message
    still waiting for a person holds them too (then that one holds them). Returns their numbers."""
    in_t, ev_t = table(Inbound), table(Event)
    held = s.execute(sa.select(inv_t.c.id, inv_t.c.number, inv_t.c.hold_until)
                     .where(inv_t.c.held_by == inbound_id)).all()
    released = []
    for invoice_id, number, hold_until in held:
        other = s.execute(
            sa.select(ev_t.c.inbound_id).join(in_t, in_t.c.id == ev_t.c.inbound_id)
            .where(ev_t.c.invoice_id == invoice_id, ev_t.c.kind == "paused", ev_t.c.data.like('%"until_decided"%'),
                   in_t.c.status == "triage", in_t.c.id != inbound_id).order_by(ev_t.c.id)).scalars().first()
        # The time it waited does not count (as for `resume`): the next stage counts from now.
        s.execute(sa.update(inv_t).where(inv_t.c.id == invoice_id).values(
            held_by=other, hold_until=max(hold_until, now) if hold_until else now))
        if other is None:
            released.append(number)
            record_event(s, invoice_id=int(invoice_id), kind="released", at=now, actor=actor, inbound_id=inbound_id,
                         reason=coded("person.read"))
    return released


def close_message(engine: Engine, inbound_id: int, now: datetime, actor: str, why: str = "",
                  in_triage: bool = False) -> str:
    """A person has dealt with a message waiting in triage (`why`: `decision.dismiss` for noise).
    `in_triage`: refused when the message no longer waits (someone else decided meanwhile)."""
    in_t, ev_t = table(Inbound), table(Event)
    with session(engine) as s:
        row = s.execute(sa.select(in_t.c.status, in_t.c.subject).where(in_t.c.id == inbound_id)
                        .with_for_update()).first()
        if row is None:
            raise NotFoundError(f"no message #{inbound_id}")
        if in_triage and row.status != "triage":
            raise StaleError(t("message #{id} was decided meanwhile: nothing done, read it again", id=inbound_id))
        if row.status == "applied":  # closed already, or applied by the bot: nothing waits
            return t("#{id} was not waiting for a person: nothing changed", id=inbound_id)
        s.execute(sa.update(in_t).where(in_t.c.id == inbound_id).values(
            status="applied", reason=coded("person.decided_why", actor=actor, why=why) if why
            else coded("person.decided", actor=actor)))
        release_holds(s, inbound_id, now, actor)
        invoices = set(s.execute(sa.select(ev_t.c.invoice_id).where(ev_t.c.inbound_id == inbound_id,
                                                                     ev_t.c.invoice_id.is_not(None))).scalars())
        for invoice_id in sorted(invoices) or [None]:
            record_event(s, invoice_id=invoice_id, kind="triage_closed", at=now, actor=actor, inbound_id=inbound_id,
                         reason=row.subject[:200])
    return t("#{id} closed", id=inbound_id)


def record_payment(engine: Engine, number: str, now: datetime, amount: Decimal | None, actor: str,
                   seen: int | None = None, kind: str = "payment") -> str:
    """Record a payment (the whole amount due when `amount` is None); settles the invoice when covered.
    On an accepted payment plan, the hold moves on to the next instalment not yet covered.
    `kind` "credit_note": an amount the company gives up (a dispute settled), not money received."""
    with session(engine) as s:
        inv = locked_invoice(s, number, seen)
        number = str(inv.number)  # as stored, whatever the case it was typed in
        due = inv.amount - inv.paid
        pay = due if amount is None else amount
        if pay <= 0:
            raise RelanceError(t("{amount}: expected an amount greater than zero", amount=money(pay, inv.currency)))
        if pay > due:
            raise RelanceError(t("{amount}: more than the {due} due on {number}", amount=money(pay, inv.currency),
                                 due=money(due, inv.currency), number=number))
        paid = inv.paid + pay
        settled = paid >= inv.amount
        values: dict[str, Any] = {"paid": paid, "state": "paid" if settled else inv.state}
        if not settled and (hold := plans.hold_after(s, int(inv.id), paid)) is not None:
            values["hold_until"] = hold
        s.execute(sa.update(inv_t).where(inv_t.c.id == inv.id).values(**values))
        # "paid" is money received that settled it; a credit note stays a credit note (not recovered).
        record_event(s, invoice_id=int(inv.id), kind="paid" if settled and kind == "payment" else kind, at=now,
                     actor=actor, reason=coded("payment.credit_note" if kind == "credit_note" else "payment.recorded",
                                               amount=str(pay), currency=inv.currency),
                     data={"amount": str(pay), "as": kind})
    what = t("credit note of {amount}", amount=money(pay, inv.currency)) if kind == "credit_note" else money(
        pay, inv.currency)
    return t("{number}: {what} recorded, {rest}", number=number, what=what,
             rest=t("nothing left due") if settled else t("{due} still due", due=money(due - pay, inv.currency)))


def change_contact(engine: Engine, number: str, email: str, now: datetime, actor: str,
                   seen: int | None = None) -> str:
    """A client's new address (after a bounce): the invoice, and the client's other open invoices
    that used the same address, go to it; a failing contact is cleared and bounced invoices resume."""
    try:  # kept as the ledger stores addresses, so that replies find the client
        email = plain_address(email.strip())
    except AddressError as e:
        raise RelanceError(t("{value}: expected a plain email address such as compta@client.example ({why})",
                             value=repr(email), why=str(e))) from None
    with session(engine) as s:
        inv = locked_invoice(s, number, seen)
        number = str(inv.number)  # as stored, whatever the case it was typed in
        old = s.execute(sa.select(con_t.c.id, con_t.c.email, con_t.c.cc).where(con_t.c.id == inv.contact_id)).one()
        new_id = s.execute(sa.select(con_t.c.id).where(con_t.c.client_id == inv.client_id,
                                                       sa.func.lower(con_t.c.email) == email.lower())).scalar()
        if new_id is None:
            new_id = s.execute(sa.insert(con_t).values(client_id=inv.client_id, email=email, cc=old.cc,
                                                       failing=False).returning(con_t.c.id)).scalar_one()
        else:
            s.execute(sa.update(con_t).where(con_t.c.id == new_id).values(failing=False, failure_reason=None))
        moved = s.execute(sa.select(inv_t.c.id, inv_t.c.number, inv_t.c.state).where(
            inv_t.c.client_id == inv.client_id, inv_t.c.state != "paid",
            sa.or_(inv_t.c.id == inv.id, inv_t.c.contact_id == old.id))).all()
        for invoice_id, _, state in moved:
            values: dict[str, Any] = {"contact_id": new_id, "data_error": None}
            if state == "bounced":
                values.update(state="active", hold_until=now)
            s.execute(sa.update(inv_t).where(inv_t.c.id == invoice_id).values(**values))
            record_event(s, invoice_id=int(invoice_id), kind="contact_changed", at=now, actor=actor,
                         reason=join(coded("contact.changed", old=old.email, new=email),
                                     coded("contact.resumed") if state == "bounced" else ""),
                         data={"from": old.email, "to": email})
    return t("{numbers}: new address {email}", numbers=", ".join(n for _, n, _ in moved), email=email)
