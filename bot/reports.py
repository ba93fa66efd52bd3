"""What the CLI shows: status rows, one invoice's history, the backtest, the KPIs.

Every function takes `now`; none writes to the store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot import reasons, views
from bot.config import Config
from bot.errors import NotFoundError
from bot.models import Client, Event, Inbound, Invoice, Outbound, Reminder, UtcDateTime, table
from rules.model import StageDone
from rules.penalties import ContractRateTooLowError, MissingRateError, compute
from rules.schedule import plan

OPEN_STATES = ("active", "paused", "disputed", "plan", "bounced")


PAGE = 2000  # invoices `relance status` reads, runs the rules over and prints at a time


def status_rows(conn: Connection, config: Config, now: datetime,
                numbers: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per open invoice (or per named invoice), with the contract's field names, largest
    amount due first. All of them in memory: for a few; `status_pages` streams."""
    if numbers is None:
        return [row for rows in status_pages(conn, config, now) for row in rows]
    out = _status(views.load(conn, OPEN_STATES, numbers), config, now)
    out.sort(key=lambda x: (-Decimal(x["amount_due"]), x["due_date"], x["number"]))
    return out


def status_pages(conn: Connection, config: Config, now: datetime, page: int = PAGE) -> Iterator[list[dict[str, Any]]]:
    """`status_rows` of every open invoice, in its order, `page` rows at a time: the database
    sorts, the rules run over one page while the next waits in the cursor."""
    for rows in views.by_amount_due(conn, OPEN_STATES, page):
        yield _status(rows, config, now)


def status_extent(conn: Connection) -> dict[str, int]:
    """How wide the open invoices' columns are, counted by the database (`relance status` lines
    its columns up before it has read them): the longest number, client and currency, the largest
    amount due (its characters) and days overdue (from the oldest due date, see `days_overdue`),
    and how many there are."""
    inv, cli = table(Invoice), table(Client)
    n, number, client, currency, top, oldest = conn.execute(
        sa.select(sa.func.count(), sa.func.max(sa.func.length(inv.c.number)), sa.func.max(sa.func.length(cli.c.name)),
                  sa.func.max(sa.func.length(inv.c.currency)), sa.func.max(inv.c.amount - inv.c.paid),
                  sa.func.min(inv.c.due_date))
        .join(cli, cli.c.id == inv.c.client_id).where(inv.c.state.in_(OPEN_STATES))).one()
    due = Decimal(max(int(top or 0), 0)) / 100
    return {"count": n, "number": number or 0, "client": client or 0, "currency": currency or 0,
            "amount_due": len(str(due.quantize(Decimal("0.01")))), "oldest_due_date": oldest}


def _status(rows: list[views.InvoiceRow], config: Config, now: datetime) -> list[dict[str, Any]]:
    cal, ladder = views.calendar(config), config.ladder
    today = now.astimezone(config.zone).date()
    out: list[dict[str, Any]] = []
    for r in rows:
        v = r.view
        last = r.delivered
        state = views.display_state(v, now)
        p = plan(v, ladder, cal, now)
        action, at = p.next_action, p.next_at
        if r.queued is not None and v.state.value == "active":  # recorded, waiting in the outbox
            action, at = ladder[r.queued].name, now
        if v.state.value in ("disputed", "plan") or (v.held_for_person and v.state.value == "active"):
            action, at = "triage", None
        elif v.state.value == "bounced" or r.contact_failing:
            action, at = "fix_contact", None
        elif r.data_error and v.state.value == "active":
            action, at = "fix_data", None
        elif v.state.value == "paused":
            action, at = "resume", None
        elif v.state.value == "paid":
            action, at = "", None
        out.append({
            "number": r.number, "client": r.client, "email": r.email,
            "amount_due": str(v.amount_due), "currency": r.currency,
            "due_date": v.due_date.isoformat(), "days_overdue": max((today - v.due_date).days, 0),
            "stage": ladder[last].name if last >= 0 else None, "state": state,
            "next_action": action or None, "next_action_at": at.isoformat() if at else None,
        })
    return out


def show(conn: Connection, config: Config, number: str, now: datetime) -> dict[str, Any]:
    inv_t, ev_t, out_t, rem_t, in_t = (table(Invoice), table(Event), table(Outbound), table(Reminder),
                                       table(Inbound))
    inv = conn.execute(sa.select(inv_t).where(inv_t.c.number == number)).first()
    if inv is None:
        inv = conn.execute(sa.select(inv_t).where(sa.func.lower(inv_t.c.number) == number.lower())).first()
    if inv is None:
        raise NotFoundError(f"no invoice numbered {number!r}")
    number = inv.number
    rows = status_rows(conn, config, now, [number])
    doc: dict[str, Any] = rows[0] if rows else {"number": number}
    doc.update(state=inv.state if inv.state == "paid" else doc.get("state"),
               amount=str(inv.amount), paid=str(inv.paid), issue_date=inv.issue_date.isoformat(),
               language=inv.language, pdf=inv.pdf)
    doc["events"] = [
        {"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "reason": reasons.plain_text(e.reason),
         "reasons": reasons.pieces(e.reason),
         "data": json.loads(e.data or "{}")}
        for e in conn.execute(sa.select(ev_t).where(ev_t.c.invoice_id == inv.id).order_by(ev_t.c.id))]
    doc["reminders"] = [
        {"stage": r.stage, "message_id": None if r.skipped else r.message_id,
         "status": "skipped" if r.skipped else r.status, "at": r.at.isoformat(),
         "subject": None if r.skipped else r.subject}
        for r in conn.execute(
            sa.select(rem_t.c.stage, rem_t.c.at, rem_t.c.skipped, out_t.c.message_id, out_t.c.status,
                      out_t.c.subject)
            .outerjoin(out_t, out_t.c.id == rem_t.c.outbound_id)
            .where(rem_t.c.invoice_id == inv.id).order_by(rem_t.c.stage_index))]
    mids = list(conn.execute(sa.select(ev_t.c.inbound_id).where(ev_t.c.invoice_id == inv.id,
                                                                 ev_t.c.inbound_id.is_not(None))).scalars())
    doc["messages"] = [
        {"message_id": m.message_id, "from": m.from_addr, "subject": m.subject,
         "received_at": m.received_at.isoformat() if m.received_at else None, "kind": m.kind,
         "status": m.status, "text": m.text}
        for m in conn.execute(sa.select(in_t).where(in_t.c.id.in_(mids)).order_by(in_t.c.id))]
    return doc


@dataclass(frozen=True)
class SimulatedSend:
    at: datetime
    number: str
    client: str
    stage: str
    amount_due: Decimal
    skipped: tuple[str, ...]
    problem: str = ""  # why the real send would fail (a missing penalty rate)


def simulate(conn: Connection, config: Config, start: date, end: date) -> list[SimulatedSend]:
    """Replay the ladder once a day (an hour into the sending window) from `start` to `end`.

    Starts from the current ledger and what was really sent; changes nothing. Reads only the
    invoices that can get a stage by `end` (not those past their last stage, settled or held)."""
    cal, ladder = views.calendar(config), config.ladder
    rows = views.load(conn, due_by=end - timedelta(days=ladder[0].delay_days), stages=len(ladder))
    state = {r.id: r.view for r in rows}
    by_id = {r.id: r for r in rows}
    window_start = config.window[0]
    at_time = time(min(window_start.hour + 1, 23), window_start.minute)
    out: list[SimulatedSend] = []
    day = start
    while day <= end:
        now = datetime.combine(day, at_time, config.zone)
        for inv_id, v in state.items():
            p = plan(v, ladder, cal, now)
            if p.send is None:
                continue
            done = (*v.done, *(StageDone(k, now) for k in p.skipped), StageDone(p.send, now))
            state[inv_id] = replace(v, done=done)
            problem = ""
            if ladder[p.send].penalties and by_id[inv_id].client_kind == "business":
                try:
                    compute(v.amount_due, v.due_date, day, config.penalty_policy)
                except (MissingRateError, ContractRateTooLowError) as e:
                    problem = str(e)
            out.append(SimulatedSend(now, v.number, by_id[inv_id].client, ladder[p.send].name, v.amount_due,
                                     tuple(ladder[k].name for k in p.skipped), problem))
        day += timedelta(days=1)
    return out


def kpi(conn: Connection, config: Config, now: datetime, page: int = 5000) -> dict[str, Any]:
    """Collection KPIs. Definitions are in the returned `definitions` field.

    One pass over the invoices, each with its first reminder, top stage and payment joined by the
    database, read `page` rows at a time and summed as they come: memory does not grow with the
    history (the time does, as the figures are about all of it)."""
    inv_t, rem_t, out_t, ev_t, in_t = (table(Invoice), table(Reminder), table(Outbound), table(Event),
                                       table(Inbound))
    today = now.astimezone(config.zone).date()
    reminders = (sa.select(rem_t.c.invoice_id, sa.func.min(rem_t.c.at).label("first_at"),
                           sa.func.max(rem_t.c.stage_index).label("top"))
                 .group_by(rem_t.c.invoice_id).subquery())
    payments = (sa.select(ev_t.c.invoice_id, sa.func.max(ev_t.c.at).label("paid_at"))
                .where(ev_t.c.kind == "paid").group_by(ev_t.c.invoice_id).subquery())
    # The aggregates come back as the columns' own types (aware datetimes on SQLite too).
    first_at = sa.type_coerce(reminders.c.first_at, UtcDateTime())
    paid_at_col = sa.type_coerce(payments.c.paid_at, UtcDateTime())
    # What was given up by credit notes (a dispute settled) is not recovered: per invoice, from their
    # events (`as` credit_note: those that settled an invoice were once written as kind "paid").
    credited: dict[int, Decimal] = {}
    for invoice_id, data in conn.execute(sa.select(ev_t.c.invoice_id, ev_t.c.data).where(
            ev_t.c.kind.in_(("credit_note", "paid")), ev_t.c.data.like('%"credit_note"%'))):
        doc = json.loads(data or "{}")
        if doc.get("as") == "credit_note" and invoice_id is not None:
            credited[invoice_id] = credited.get(invoice_id, Decimal(0)) + Decimal(doc.get("amount", "0"))
    invs = (sa.select(inv_t.c.id, inv_t.c.amount, inv_t.c.paid, inv_t.c.state, inv_t.c.issue_date, inv_t.c.due_date,
                      first_at.label("first_at"), reminders.c.top, paid_at_col.label("paid_at"))
            .outerjoin(reminders, reminders.c.invoice_id == inv_t.c.id)
            .outerjoin(payments, payments.c.invoice_id == inv_t.c.id))
    window = 90
    last = len(config.ladder) - 1
    receivable = sales = reminded_amount = recovered_amount = Decimal(0)
    reminded = recovered = amicable = 0
    delays: list[float] = []
    per_stage = {s.name: Decimal(0) for s in config.ladder.stages}
    aged = {name: Decimal("0.00") for name, _ in AGEING}
    first_day = today - timedelta(days=7 * WEEKS - 1)  # the weekly series: WEEKS weeks, the last ending today
    weekly = [Decimal("0.00")] * WEEKS  # the amount settled in each week
    for i in conn.execution_options(stream_results=True, yield_per=page).execute(invs):
        if i.state != "paid":
            receivable += i.amount - i.paid
            aged[_age((today - i.due_date).days)] += i.amount - i.paid
        if 0 <= (today - i.issue_date).days < window:
            sales += i.amount
        if i.first_at is None:
            continue
        reminded += 1
        reminded_amount += i.amount
        given_up = credited.get(i.id, Decimal(0))
        recovered_amount += max(min(i.paid, i.amount) - given_up, Decimal(0))  # partial payments count
        if i.state != "paid" or given_up >= i.amount:  # open, or withdrawn by a credit note
            continue
        recovered += 1
        if i.paid_at is not None and i.paid_at >= i.first_at:
            delays.append((i.paid_at - i.first_at).total_seconds() / 86400)
        per_stage[config.ladder[i.top].name] += i.amount - given_up
        amicable += i.top < last
        if i.paid_at is not None and (week := _week(first_day, i.paid_at.astimezone(config.zone).date())) is not None:
            weekly[week] += i.amount - given_up
    sent: dict[int, int] = dict(conn.execute(sa.select(out_t.c.stage_index, sa.func.count())
                             .where(out_t.c.status.in_(("sent", "uncertain")), out_t.c.stage_index >= 0)
                             .group_by(out_t.c.stage_index)).all())
    emails = sum(sent.values())
    notices = sum(n for k, n in sent.items() if config.ladder[k].penalties)
    # Reminded invoices a client answered (a person, not a robot) after their first reminder: mail
    # about nothing we sent, or a second reply on the same invoice, does not raise the rate.
    answered = conn.execute(
        sa.select(sa.func.count(sa.distinct(ev_t.c.invoice_id))).select_from(ev_t)
        .join(in_t, in_t.c.id == ev_t.c.inbound_id).join(reminders, reminders.c.invoice_id == ev_t.c.invoice_id)
        .where(in_t.c.kind.is_not(None), in_t.c.kind.not_in(("auto_reply", "bounce")),
               ev_t.c.at >= reminders.c.first_at)).scalar_one()
    replies = [0] * WEEKS  # messages from people (robots and bounces left out) in each of those weeks
    since = datetime.combine(first_day, time(0), config.zone)
    for (at,) in conn.execute(sa.select(in_t.c.stored_at).where(  # when it reached us (a Date header may lie)
            in_t.c.stored_at >= since, in_t.c.kind.is_not(None), in_t.c.kind.not_in(("auto_reply", "bounce")))):
        if (week := _week(first_day, at.astimezone(config.zone).date())) is not None:
            replies[week] += 1
    costs = config.costs
    cost = (costs.email * emails + costs.formal_notice * notices).quantize(Decimal("0.01"))

    def pct(a: Decimal | int, b: Decimal | int) -> str | None:
        return f"{Decimal(a) * 100 / Decimal(b):.1f}" if b else None

    return {
        "as_of": now.isoformat(),
        "dso_days": f"{receivable / sales * window:.1f}" if sales else None,
        "open_receivables": str(receivable),
        "recovery_rate_pct": pct(recovered_amount, reminded_amount),
        "reply_rate_pct": pct(answered, reminded),
        "mean_days_to_pay_after_first_reminder": f"{sum(delays) / len(delays):.1f}" if delays else None,
        "recovered_per_stage": {k: str(v) for k, v in per_stage.items()},
        "amicable_conversion_pct": pct(amicable, recovered),
        "emails_sent": emails,
        "formal_notices_sent": notices,
        "cost_of_recovery": str(cost),
        "ageing": {k: str(v) for k, v in aged.items()},
        "weeks_from": first_day.isoformat(),
        "settled_per_week": [str(v) for v in weekly],
        "replies_per_week": replies,
        "definitions": {
            "dso_days": f"open receivables / invoiced amount of the last {window} days x {window}",
            "recovery_rate_pct": "amount paid on reminded invoices (partial payments included, credit notes "
                                 "left out) / amount of reminded invoices",
            "reply_rate_pct": "reminded invoices a client answered after the first reminder (robots left out) / "
                              "reminded invoices",
            "amicable_conversion_pct": "reminded invoices paid before the last stage / reminded invoices paid",
            "ageing": "amount still due on open invoices, by days past the due date",
            "settled_per_week": f"amount of reminded invoices settled (credit notes left out) in each of the "
                                  f"last {WEEKS} weeks (7 days each, the latest ending today), from weeks_from",
            "replies_per_week": f"messages from people (auto-replies and bounces left out) that reached the "
                                f"inbox in each of the last {WEEKS} weeks, from weeks_from",
            "cost_of_recovery": "costs.email x emails + costs.formal_notice x formal notices "
                                "(+ triage minutes once the inbound side records them)",
        },
    }


WEEKS = 12  # the weekly series of the KPIs


def _week(first_day: date, day: date) -> int | None:
    """Which of the WEEKS weeks from `first_day` holds `day` (0 the oldest), or None."""
    days = (day - first_day).days
    return days // 7 if 0 <= days < 7 * WEEKS else None

AGEING = (("not_due", None), ("0-30", 30), ("31-60", 60), ("61-90", 90), ("90+", None))


def ageing(invs: Any, today: date) -> dict[str, Decimal]:
    """Open receivables by days past due: not yet due, 0-30, 31-60, 61-90, over 90."""
    out = {name: Decimal("0.00") for name, _ in AGEING}
    for i in invs:
        if i.state != "paid":
            out[_age((today - i.due_date).days)] += i.amount - i.paid
    return out


def _age(late: int) -> str:
    """The ageing bucket of an invoice `late` days past its due date."""
    return "not_due" if late < 0 else next((n for n, top in AGEING[1:4] if top is not None and late <= top), "90+")


def messages(conn: Connection, triage_only: bool = False) -> list[dict[str, Any]]:
    in_t, ev_t, inv_t = table(Inbound), table(Event), table(Invoice)
    q = sa.select(in_t).order_by(in_t.c.id)
    if triage_only:
        q = q.where(in_t.c.status == "triage")
    links: dict[int, list[str]] = {}
    for inbound_id, number in conn.execute(
            sa.select(ev_t.c.inbound_id, inv_t.c.number).join(inv_t, inv_t.c.id == ev_t.c.invoice_id)
            # A hold on the client's other invoices is not a thread: only the message's own events link.
            .where(ev_t.c.inbound_id.is_not(None), ev_t.c.kind.not_in(("held", "paused", "released"))).distinct()):
        links.setdefault(inbound_id, []).append(number)
    return [{
        "id": m.id, "message_id": m.message_id, "from": m.from_addr, "subject": m.subject,
        "received_at": m.received_at.isoformat() if m.received_at else None, "kind": m.kind,
        "confidence": float(m.confidence) if m.confidence is not None else None,
        "invoices": sorted(links.get(m.id, [])), "status": m.status, "reason": reasons.plain_text(m.reason),
        "reasons": reasons.pieces(m.reason), "text": m.text,
        "cues": [reasons.plain_cue(c) for c in json.loads(m.cues or "[]")],
        "suggested": json.loads(m.suggested or "[]"),
    } for m in conn.execute(q)]
