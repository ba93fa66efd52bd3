"""Payment plans a person accepted: the instalments, each with its due date, kept in the
`plan_accepted` event. While a plan runs the invoice is active but held until the next instalment
not yet covered (its due date plus `pause.promise_grace_days`): each payment moves the hold on to
the next one, and a missed instalment lets the hold run out, so the ladder resumes on the balance.

Rejecting or ending a plan records `plan_ended`; the latest of the two events tells whether a plan
runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.errors import RelanceError
from bot.i18n import amount, amount_typed, t
from bot.models import Event, table
from rules.plan import Instalment
from rules.reasons import reason

ev_t = table(Event)


@dataclass(frozen=True)
class Step:
    """One accepted instalment: how much, by when, and the end of the hold it gives."""

    amount: Decimal
    due: date
    hold_until: datetime


def parse(text: str) -> tuple[Instalment, ...]:
    """Instalments as a person types them: "400 2027-05-01, 600 2027-06-01" (amount then date,
    comma- or semicolon-separated; the amount as bot.i18n.amount reads it: `1 500,00`, `1500.5`)."""
    out = []
    for part in (p.strip() for p in text.replace(";", "\n").replace(", ", "\n").splitlines()):
        if not part:
            continue
        sum_, _, when = part.rpartition(" ")  # the amount may hold spaces (1 500,00), the date does not
        try:
            due = date.fromisoformat(when)
        except ValueError:
            raise RelanceError(t("{value}: expected an amount and a date (400.00 2027-05-01)",
                                 value=repr(part))) from None
        if not sum_.strip():
            raise RelanceError(t("{value}: expected an amount and a date (400.00 2027-05-01)", value=repr(part)))
        out.append(Instalment(amount(sum_), due))
    return tuple(out)


def format_steps(steps: Sequence[Instalment]) -> str:
    """The text `parse` reads back: what the prompt is prefilled with."""
    return ", ".join(f"{amount_typed(s.amount) if s.amount else ''} {s.due.isoformat() if s.due else ''}".strip()
                     for s in steps)


def accepted(steps: Sequence[Step]) -> str:
    """Why a plan's event was recorded, as data: how many instalments, the first's date."""
    return reason("plan.accepted", n=len(steps), until=steps[0].due.isoformat())


def steps_for(instalments: Sequence[Instalment], due: Decimal, today: date, grace_days: int,
              zone: ZoneInfo) -> list[Step]:
    """Check a plan against what is due: every instalment dated in the future, in order, with a
    positive amount, the amounts adding up to what is due."""
    if not instalments:
        raise RelanceError(t("a plan needs at least one instalment"))
    steps, last = [], today
    for i in instalments:
        if i.amount is None or i.due is None or i.amount <= 0:
            raise RelanceError(t("each instalment needs an amount and a date"))
        if i.due <= last:
            raise RelanceError(t("instalment of {day}: the dates must be in the future and in order",
                                 day=i.due.isoformat()))
        last = i.due
        end = datetime.combine(i.due + timedelta(days=grace_days + 1), time(0, 0), zone)
        steps.append(Step(i.amount, i.due, end))
    total = sum((s.amount for s in steps), Decimal(0))
    if total != due:
        raise RelanceError(t("the instalments add up to {total}, {due} is due", total=total, due=due))
    return steps


def record(s: Connection, invoice_id: int, steps: Sequence[Step], paid: Decimal, now: datetime, actor: str,
           why: str, inbound_id: int | None) -> None:
    """The `plan_accepted` event; `paid` is what was paid before the plan (instalments count from it)."""
    s.execute(sa.insert(ev_t).values(
        invoice_id=invoice_id, kind="plan_accepted", at=now, actor=actor, reason=why, inbound_id=inbound_id,
        data=json.dumps({"paid_before": str(paid), "instalments": [
            {"amount": str(x.amount), "due": x.due.isoformat(), "hold_until": x.hold_until.isoformat()}
            for x in steps]})))


def running(s: Connection, invoice_id: int) -> dict[str, Any] | None:
    """The accepted plan that runs on the invoice (its event data), or None."""
    row = s.execute(sa.select(ev_t.c.kind, ev_t.c.data).where(
        ev_t.c.invoice_id == invoice_id, ev_t.c.kind.in_(("plan_accepted", "plan_ended")))
        .order_by(ev_t.c.id.desc()).limit(1)).first()
    if row is None or row.kind != "plan_accepted":
        return None
    data: dict[str, Any] = json.loads(row.data or "{}")
    return data


def hold_after(s: Connection, invoice_id: int, paid: Decimal) -> datetime | None:
    """With `paid` now paid on the invoice: the end of the hold of the first instalment not yet
    covered, when a plan runs; None otherwise."""
    plan = running(s, invoice_id)
    if plan is None:
        return None
    covered, total = paid - Decimal(plan["paid_before"]), Decimal(0)
    for step in plan["instalments"]:
        total += Decimal(step["amount"])
        if total > covered:
            return datetime.fromisoformat(step["hold_until"])
    return None
