"""Reads invoices from the store into the rules' values (InvoiceView) in a few bulk queries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import holidays
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.config import Config
from bot.models import Client, Contact, Invoice, Outbound, Reminder, table
from rules.calendar import SendingCalendar
from rules.model import InvoiceView, StageDone, State


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    """An invoice with what the CLI shows next to it; `view` is what the rules see."""

    id: int
    client_id: int
    contact_id: int
    client: str
    client_kind: str
    email: str
    contact_failing: bool
    language: str
    currency: str
    amount: Decimal
    paid: Decimal
    issue_date: date
    view: InvoiceView
    delivered: int = -1  # highest stage sent (or uncertain, or passed over); -1 for none
    queued: int | None = None  # a stage recorded but still in the outbox (pending or sending)
    data_error: str | None = None  # why its last reminder could not be built or sent

    @property
    def number(self) -> str:
        return self.view.number


def calendar(config: Config) -> SendingCalendar:
    start, end = config.window
    country = config.schedule.holidays
    days: object = holidays.country_holidays(country.upper()) if country else frozenset()
    return SendingCalendar(zone=config.zone, start=start, end=end,
                           business_days_only=config.schedule.business_days_only,
                           holidays=days)  # type: ignore[arg-type]


def _invoices() -> sa.Select[Any]:
    inv, cli, con = table(Invoice), table(Client), table(Contact)
    return (sa.select(inv.c.id, inv.c.number, inv.c.due_date, inv.c.issue_date, inv.c.amount, inv.c.paid,
                      inv.c.state, inv.c.hold_until, inv.c.held_by, inv.c.client_id, inv.c.contact_id, inv.c.language,
                      inv.c.currency, inv.c.data_error, cli.c.name, cli.c.kind, con.c.email, con.c.failing)
            .join(cli, cli.c.id == inv.c.client_id).join(con, con.c.id == inv.c.contact_id))


def load(conn: Connection, states: Iterable[str] = ("active",), numbers: Iterable[str] | None = None,
         due_by: date | None = None, stages: int | None = None) -> list[InvoiceRow]:
    """Invoices in `states` (or the given numbers, whatever their state), with their stages done.

    `due_by` keeps only invoices due on or before that date (an index range scan). `stages` (the
    ladder's length) keeps only those the rules could still send a stage to: not settled, not
    waiting for a person, not past the last stage. The scheduler reads what can be due, not the
    history of invoices whose ladder ended long ago."""
    inv, rem = table(Invoice), table(Reminder)
    if numbers is not None:
        rows = conn.execute(_invoices().where(inv.c.number.in_(list(numbers)))).all()
        return _with_stages(conn, rows, rem.c.invoice_id.in_([r.id for r in rows]))
    return list(stream(conn, sendable(states, due_by, stages)))


def stream(conn: Connection, which: list[sa.ColumnElement[bool]]) -> Iterator[InvoiceRow]:
    """The invoices `which` selects (conditions on the invoice table), made into views as the
    cursor gives them, after their stages: the caller keeps what it needs of each."""
    inv, rem = table(Invoice), table(Reminder)
    done = _stages(conn, rem.c.invoice_id.in_(sa.select(inv.c.id).where(*which)))
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(_invoices().where(*which))
    shared: dict[object, Any] = {}  # one object for what many rows repeat (a client's name, a currency)
    for r in result:
        yield _row(r, done, lambda v: shared.setdefault(v, v))


def sendable(states: Iterable[str] = ("active",), due_by: date | None = None,
             stages: int | None = None) -> list[sa.ColumnElement[bool]]:
    """The conditions of `load`: invoices in `states`, due by `due_by`, that the rules could still
    send one of `stages` stages to (not settled, not waiting for a person, not past the last)."""
    inv, rem = table(Invoice), table(Reminder)
    which: list[sa.ColumnElement[bool]] = [inv.c.state.in_(list(states))]
    if due_by is not None:
        which.append(inv.c.due_date <= due_by)
    if stages is not None:
        which += [inv.c.paid < inv.c.amount, inv.c.held_by.is_(None),
                  ~sa.exists().where(rem.c.invoice_id == inv.c.id, rem.c.stage_index >= stages - 1)]
    return which


def by_amount_due(conn: Connection, states: Iterable[str], page: int) -> Iterator[list[InvoiceRow]]:
    """Invoices in `states`, largest amount due first, then the oldest due date, then the number
    (as `relance status` lists them), `page` at a time: one query sorted by the database and read
    as it goes (a server-side cursor on PostgreSQL), and the stages of each page's invoices."""
    inv, rem = table(Invoice), table(Reminder)
    # Python's order of strings (code points) on PostgreSQL too, whatever the database's locale.
    number = inv.c.number.collate("C") if conn.dialect.name == "postgresql" else inv.c.number
    q = _invoices().where(inv.c.state.in_(list(states))).order_by(inv.c.paid - inv.c.amount, inv.c.due_date, number)
    result = conn.execution_options(stream_results=True, yield_per=page).execute(q)
    for rows in result.partitions(page):
        yield _with_stages(conn, rows, rem.c.invoice_id.in_([r.id for r in rows]))


@dataclass
class _Stages:
    done: dict[int, list[StageDone]]
    delivered: dict[int, int]  # highest stage sent (or uncertain, or passed over)
    queued: dict[int, int]  # a stage recorded but still in the outbox


def _stages(conn: Connection, which: sa.ColumnElement[bool]) -> _Stages:
    """The stages recorded for the invoices whose reminders `which` selects."""
    rem, ob = table(Reminder), table(Outbound)
    out = _Stages(defaultdict(list), {}, {})
    rq = (sa.select(rem.c.invoice_id, rem.c.stage_index, rem.c.at, rem.c.skipped, ob.c.status)
          .outerjoin(ob, ob.c.id == rem.c.outbound_id).where(which))
    for invoice_id, index, at, skipped, status in conn.execute(rq):
        delivered_now = skipped or status in ("sent", "uncertain")
        # For the rules, queued counts as done (never twice), but not as sent (never the next one before it).
        out.done[invoice_id].append(StageDone(index, at, delivered_now))
        if delivered_now:
            out.delivered[invoice_id] = max(index, out.delivered.get(invoice_id, -1))
        else:
            out.queued[invoice_id] = index
    return out


def _with_stages(conn: Connection, rows: Sequence[sa.Row[Any]], which: sa.ColumnElement[bool]) -> list[InvoiceRow]:
    """`rows` of `_invoices()` as the rules see them, with their stages (the reminders `which` selects)."""
    done = _stages(conn, which)
    return [_row(r, done) for r in rows]


def _row(r: sa.Row[Any], stages: _Stages, shared: Callable[[Any], Any] = lambda v: v) -> InvoiceRow:
    view = InvoiceView(number=r.number, due_date=r.due_date, amount_due=max(r.amount - r.paid, Decimal(0)),
                       state=State(r.state), hold_until=r.hold_until,
                       held_for_person=r.held_by is not None, done=tuple(stages.done.get(r.id, ())))
    return InvoiceRow(
        id=r.id, client_id=r.client_id, contact_id=r.contact_id, client=shared(r.name), client_kind=shared(r.kind),
        email=shared(r.email), contact_failing=r.failing, language=shared(r.language), currency=shared(r.currency),
        amount=r.amount, paid=shared(r.paid), issue_date=shared(r.issue_date), view=view,
        delivered=stages.delivered.get(r.id, -1), queued=stages.queued.get(r.id), data_error=r.data_error)


def display_state(view: InvoiceView, now: datetime) -> str:
    if view.state is State.ACTIVE and (view.held_for_person or (view.hold_until is not None and view.hold_until > now)):
        return State.PAUSED.value
    return view.state.value
