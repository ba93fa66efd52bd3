"""Reminders of an accepted plan's instalments, on the short ladder of `[plans] reminder_days`
(days from each instalment's due date: -3 is three days before it, 1 the day after).

While a plan runs (bot/plans.py) the invoice is held until the next instalment not yet covered; that
instalment is the one reminded, by the latest step of the short ladder whose day has come (a daemon
that was down sends that one, not the steps it slept through). Like every message it is recorded
before it is sent: an `outbound` row of stage `instalment` whose Message-ID is made of the plan
(its `plan_accepted` event), the instalment and the step, unique in the outbox, so that two
instances or a restart never queue it twice; the outbox claims and sends it like a reminder, after
reading the invoice again (paid, plan ended, instalment covered meanwhile: cancelled).

A missed instalment needs nothing here: the hold it gave runs out and the ladder resumes on the
balance (bot/plans.py)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot import views
from bot.config import Config
from bot.models import Client, Contact, Event, Invoice, Outbound, table
from bot.store import record_events, session
from rules.reasons import reason

inv_t, cli_t, con_t, ev_t, out_t = table(Invoice), table(Client), table(Contact), table(Event), table(Outbound)
STAGE = "instalment"  # outbound.stage
STAGE_INDEX = -3  # -1 the operator's digest, -2 a person's reply
_MID = re.compile(r"<relance\.plan\.(\d+)\.(\d+)\.(\d+)@")


@dataclass(frozen=True)
class Step:
    """One instalment to remind: which plan, which instalment (0-based), which step of the ladder."""

    invoice_id: int
    client_id: int
    number: str
    email: str
    plan: int  # the plan_accepted event
    index: int
    step: int
    amount: Decimal
    due: date


def message_id(config: Config, plan: int, index: int, step: int) -> str:
    return f"<relance.plan.{plan}.{index}.{step}@{config.company.domain}>"


def plans_query(invoice_ids: list[int] | None = None) -> sa.Select[Any]:
    """The plans that run: the latest plan event of each invoice is an acceptance. Both selects
    filter the events by kind first, which the index on (kind, invoice_id) serves: a store's
    history has a few plan events among hundreds of thousands."""
    latest = (sa.select(sa.func.max(ev_t.c.id)).where(ev_t.c.kind.in_(("plan_accepted", "plan_ended")))
              .group_by(ev_t.c.invoice_id))
    q = (sa.select(ev_t.c.id, ev_t.c.data, inv_t.c.id.label("invoice_id"), inv_t.c.number, inv_t.c.paid,
                   inv_t.c.amount, inv_t.c.client_id, inv_t.c.state, con_t.c.email, con_t.c.failing)
         .join(inv_t, inv_t.c.id == ev_t.c.invoice_id).join(con_t, con_t.c.id == inv_t.c.contact_id)
         .where(ev_t.c.id.in_(latest), ev_t.c.kind == "plan_accepted"))
    if invoice_ids is not None:
        q = q.where(inv_t.c.id.in_(invoice_ids))
    return q


def _plans(c: Connection, invoice_ids: list[int] | None = None) -> list[Any]:
    """The plans that run (`plans_query`), the invoice's state and contact with each."""
    return list(c.execute(plans_query(invoice_ids)).all())


def next_instalment(plan: dict[str, Any], paid: Decimal) -> tuple[int, Decimal, date, datetime] | None:
    """The first instalment not covered by `paid` (what was paid before the plan counts out):
    (its index, its amount, its due date, the end of the hold it gives), or None when all are."""
    covered, total = paid - Decimal(plan["paid_before"]), Decimal(0)
    for i, step in enumerate(plan["instalments"]):
        total += Decimal(step["amount"])
        if total > covered:
            return i, Decimal(step["amount"]), date.fromisoformat(step["due"]), datetime.fromisoformat(
                step["hold_until"])
    return None


def due(c: Connection, config: Config, now: datetime) -> list[Step]:
    """The instalment reminders whose day has come at `now` and that are not in the outbox yet."""
    days = config.plans.reminder_days
    if not days:
        return []
    today = now.astimezone(config.zone).date()
    sent: dict[tuple[int, int], int] = {}
    for mid in c.execute(sa.select(out_t.c.message_id).where(out_t.c.stage == STAGE)).scalars():
        m = _MID.match(mid)
        if m:
            key = (int(m.group(1)), int(m.group(2)))
            sent[key] = max(sent.get(key, -1), int(m.group(3)))
    out = []
    for r in _plans(c):
        if r.state != "active" or r.failing or r.amount - r.paid <= 0:
            continue
        found = next_instalment(json.loads(r.data or "{}"), r.paid)
        if found is None:
            continue
        index, amount, day, hold_until = found
        if now >= hold_until:  # missed: the ladder has resumed on the balance, the plan's reminders stop
            continue
        reached = [j for j, d in enumerate(days) if today >= day + timedelta(days=d)]
        if not reached or max(reached) <= sent.get((int(r.id), index), -1):
            continue
        out.append(Step(int(r.invoice_id), int(r.client_id), r.number, r.email, int(r.id), index, max(reached),
                        amount, day))
    return out


def queue(engine: Engine, config: Config, now: datetime) -> list[int]:
    """Record the instalment reminders due at `now` (inside the sending window), pending: their ids."""
    if not views.calendar(config).is_allowed(now):
        return []
    with engine.connect() as c:
        steps = due(c, config, now)
    ids = []
    for st in steps:
        try:
            with session(engine) as s:
                ob = int(s.execute(sa.insert(out_t).values(
                    message_id=message_id(config, st.plan, st.index, st.step), client_id=st.client_id,
                    stage_index=STAGE_INDEX, stage=STAGE, to_addr=st.email, status="pending", created_at=now,
                    attempts=0).returning(out_t.c.id)).scalar_one())
                record_events(s, [{"invoice_id": st.invoice_id, "kind": "instalment_queued", "at": now,
                                   "outbound_id": ob, "reason": reason("plan.instalment", index=st.index + 1,
                                                                       amount=str(st.amount), until=st.due.isoformat()),
                                   "data": {"plan": st.plan, "instalment": st.index, "step": st.step}}])
            ids.append(ob)
        except sa.exc.IntegrityError:  # another instance queued it first
            continue
    return ids


@dataclass(frozen=True)
class Reminder:
    """An instalment reminder as the outbox sends it, or why it is no longer due."""

    invoice_id: int
    number: str
    language: str
    client_name: str
    client_kind: str
    amount: Decimal
    due: date
    index: int
    count: int
    balance: Decimal
    currency: str
    issue_date: date
    due_date: date
    invoice_amount: Decimal
    paid: Decimal
    not_due: str = ""


def read(c: Connection, outbound_id: int, message: str, now: datetime) -> Reminder | str:
    """The instalment reminder `outbound_id` as it stands now, or why it is no longer due."""
    m = _MID.match(message)
    invoice_id = c.execute(sa.select(ev_t.c.invoice_id).where(ev_t.c.outbound_id == outbound_id,
                                                              ev_t.c.kind == "instalment_queued")).scalar()
    if m is None or invoice_id is None:
        return reason("plan.ended")
    plan, index = int(m.group(1)), int(m.group(2))
    rows = [r for r in _plans(c, [int(invoice_id)]) if int(r.id) == plan]
    if not rows:
        return reason("plan.ended")
    r = rows[0]
    if r.state != "active":
        return reason("outbox.not_active", state=r.state)
    doc = json.loads(r.data or "{}")
    found = next_instalment(doc, r.paid)
    if found is None or found[0] != index:
        return reason("plan.covered", index=index + 1)
    if now >= found[3]:
        return reason("plan.missed", index=index + 1)
    inv = c.execute(sa.select(inv_t, cli_t.c.name.label("client_name"), cli_t.c.kind.label("client_kind"))
                    .join(cli_t, cli_t.c.id == inv_t.c.client_id).where(inv_t.c.id == invoice_id)).one()
    return Reminder(int(invoice_id), inv.number, inv.language, inv.client_name, inv.client_kind, found[1], found[2],
                    index, len(doc["instalments"]), inv.amount - inv.paid, inv.currency, inv.issue_date,
                    inv.due_date, inv.amount, inv.paid)
