"""What `relance tick --dry-run` lists besides the ladder's reminders it plans: the messages a
pass would send that are not planned from the ladder.

- In the outbox, waiting (`bot.outbox.WAITING`): a person's reply (stage `reply`), an instalment
  reminder already queued (stage `instalment`), a reminder a pass that stopped left behind. A
  pass sends these whatever the hour (they were queued in the window, or by a person); an
  instalment reminder whose instalment was paid, or whose plan ended, meanwhile is left out, as
  the pass would cancel it.
- Due: the instalment reminders whose day has come at `now` and that no pass queued yet
  (`bot.instalments.due`), only inside the sending window, as a pass queues them.

Reading only: nothing is queued, claimed or recorded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot import instalments, views
from bot.config import Config
from bot.models import Client, Event, Invoice, Outbound, Reminder, table
from bot.outbox import WAITING

inv_t, cli_t, ev_t, out_t, rem_t = table(Invoice), table(Client), table(Event), table(Outbound), table(Reminder)
LINKS = ("reply_queued", "instalment_queued")  # the events that tie a reply or an instalment reminder to invoices


@dataclass(frozen=True)
class Waiting:
    """One message a pass would send besides the reminders it plans."""

    numbers: tuple[str, ...]
    stage: str  # "reply", "instalment", or the ladder stage of a reminder left queued
    amount: Decimal  # due on its invoices; for an instalment reminder, the instalment
    client: str
    email: str


def in_outbox(c: Connection, now: datetime) -> list[Waiting]:
    """The messages waiting in the outbox, oldest first."""
    rows = c.execute(sa.select(out_t.c.id, out_t.c.message_id, out_t.c.stage, out_t.c.to_addr,
                               cli_t.c.name.label("client"))
                     .join(cli_t, cli_t.c.id == out_t.c.client_id)
                     .where(out_t.c.status.in_(WAITING)).order_by(out_t.c.id)).all()
    if not rows:
        return []
    ids = [int(r.id) for r in rows]
    linked = c.execute(sa.union(
        sa.select(rem_t.c.outbound_id, rem_t.c.invoice_id).where(rem_t.c.outbound_id.in_(ids)),
        sa.select(ev_t.c.outbound_id, ev_t.c.invoice_id).where(ev_t.c.kind.in_(LINKS), ev_t.c.outbound_id.in_(ids),
                                                              ev_t.c.invoice_id.is_not(None)))).all()
    invoices = {int(r.id): r for r in c.execute(
        sa.select(inv_t.c.id, inv_t.c.number, inv_t.c.amount, inv_t.c.paid)
        .where(inv_t.c.id.in_({int(i) for _, i in linked})))}
    of: dict[int, list[int]] = {}
    for outbound_id, invoice_id in linked:
        of.setdefault(int(outbound_id), []).append(int(invoice_id))
    out = []
    for r in rows:
        mine = sorted((invoices[i] for i in of.get(int(r.id), []) if i in invoices), key=lambda v: v.number)
        amount = sum((v.amount - v.paid for v in mine), start=Decimal("0.00"))
        if r.stage == instalments.STAGE:
            still = instalments.read(c, int(r.id), str(r.message_id), now)
            if isinstance(still, str):  # paid or ended meanwhile: the pass cancels it
                continue
            amount = still.amount
        out.append(Waiting(tuple(v.number for v in mine), str(r.stage), amount, str(r.client), str(r.to_addr)))
    return out


def instalments_due(c: Connection, config: Config, now: datetime) -> list[Waiting]:
    """The instalment reminders a pass at `now` would queue and send (none outside the window)."""
    if not views.calendar(config).is_allowed(now):
        return []
    steps = instalments.due(c, config, now)
    names = dict(c.execute(sa.select(cli_t.c.id, cli_t.c.name)
                           .where(cli_t.c.id.in_({s.client_id for s in steps}))).all()) if steps else {}
    return [Waiting((s.number,), instalments.STAGE, s.amount, str(names.get(s.client_id, "")), s.email)
            for s in steps]
