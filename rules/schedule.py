"""Which reminder an invoice is due for at a given moment.

The guarantees, each covered by a property test:
- a stage is never sent twice (only the stage after the last one done is considered);
- never before its time (the first stage `delay_days` after the due date, each later one
  `delay_days` after the previous one was actually sent, and only at an allowed moment);
- never out of turn: a stage goes out only after the previous one was really sent (a letter
  saying "despite our reminders" must be true). An invoice imported long overdue starts at the
  first stage; a daemon that was down sends the next stage, never a jump over one; while the
  previous stage waits in the outbox (pending, deferred), the next one waits too;
- nothing is sent while a client's message waits for a person (`held_for_person`);
- paused time does not count: a stage due during a hold is sent when the hold ends, and the
  stages after it count from then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from rules.calendar import SendingCalendar
from rules.model import InvoiceView, Ladder, State


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for one invoice at `now`."""

    number: str
    send: int | None  # index of the stage to send now, or None
    skipped: tuple[int, ...] = ()  # always empty now that no stage is jumped; kept for the outbox's old rows
    next_action: str = ""  # a stage name, "resume", "manual" (ladder finished) or "" (nothing)
    next_at: datetime | None = None


def plan(invoice: InvoiceView, ladder: Ladder, calendar: SendingCalendar, now: datetime) -> Plan:
    """What to do for `invoice` at `now` (an aware datetime)."""
    if invoice.state is not State.ACTIVE or invoice.amount_due <= 0:
        return Plan(invoice.number, None)
    if invoice.held_for_person:
        return Plan(invoice.number, None, next_action="triage")
    last = max((d.index for d in invoice.done), default=-1)
    first = last + 1
    if first >= len(ladder):
        return Plan(invoice.number, None, next_action="manual")
    if not all(d.delivered for d in invoice.done if d.index == last):  # still in the outbox
        return Plan(invoice.number, None, next_action=ladder[first].name)
    due_at = _nominal_time(invoice, ladder, calendar, first)
    hold = invoice.hold_until
    if hold is not None and hold > now:
        return Plan(invoice.number, None, next_action=ladder[first].name,
                    next_at=calendar.next_allowed(max(due_at, hold)))
    if due_at > now:
        return Plan(invoice.number, None, next_action=ladder[first].name, next_at=calendar.next_allowed(due_at))
    if not calendar.is_allowed(now):
        return Plan(invoice.number, None, next_action=ladder[first].name, next_at=calendar.next_allowed(now))
    return Plan(invoice.number, first, next_action=ladder[first].name, next_at=now)


def _nominal_time(invoice: InvoiceView, ladder: Ladder, calendar: SendingCalendar, first: int) -> datetime:
    """When stage `first` is due, counted from what was really sent, after any hold."""
    if first == 0:
        t = calendar.start_of_day(invoice.due_date) + timedelta(days=ladder[0].delay_days)
    else:
        last_at = max(d.at for d in invoice.done if d.index == first - 1)
        t = last_at + timedelta(days=ladder[first].delay_days)
    if invoice.hold_until is not None:
        t = max(t, invoice.hold_until)
    return t


def priority_key(amount_due: Decimal, due_date: date, number: str) -> tuple[Decimal, date, str]:
    """Sending order: largest amount due first, then oldest due date, then number."""
    return (-amount_due, due_date, number)
