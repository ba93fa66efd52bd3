"""The credit controller's daily digest: what waits for a person, so that nothing waits forgotten.

Sent to `company.operator_email` by the first tick of a day inside the sending window that finds
something waiting, in the company's language, at most once a day. Like a reminder it is recorded
before it is sent: its Message-ID is made of the day (`<relance.digest.2027-04-12@acme.example>`)
and unique in the outbox, so two instances, or a restart, can never send a second one that day.
A crash between the record and the server's answer leaves it `sending`, which the next tick turns
`uncertain` (bot/outbox.py): counted as sent, never sent again.

What waits: messages in triage (a reply not read for sure, a plan, a dispute, a bounce, a message
tied to no invoice), and invoices held until a person decides, disputed, on a proposed plan or
bounced; largest amount first, with the amount held and since when."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import jinja2
import sqlalchemy as sa
from babel.dates import format_datetime
from babel.numbers import format_currency
from sqlalchemy.engine import Engine

from bot import triage, views
from bot.compose import compose
from bot.config import Config
from bot.errors import DeliveryError, PermanentDeliveryError
from bot.i18n import t
from bot.mailer import Mailer, UncertainDeliveryError
from bot.models import Client, Contact, Event, Inbound, Invoice, Outbound, table
from bot.outbox import instance_name
from bot.render import LOCALES, Rendered, make_environment
from bot.store import session

inv_t, cli_t, in_t, ev_t, out_t = table(Invoice), table(Client), table(Inbound), table(Event), table(Outbound)
con_t = table(Contact)
WAITING_STATES = ("disputed", "plan", "bounced")


@dataclass(frozen=True)
class Waiting:
    number: str
    client: str
    amount_due: Decimal
    currency: str
    why: str  # held | disputed | plan | bounced (or an active invoice whose address fails) | fix_data
    since: datetime | None


def _why(r: Any) -> str:
    if r.state in WAITING_STATES:
        return str(r.state)
    if r.held_by is not None:
        return "held"
    return "bounced" if r.failing else "fix_data"


def waiting(engine: Engine) -> tuple[list[Waiting], list[dict[str, Any]]]:
    """(invoices waiting for a person, largest amount first; messages in triage, oldest first)."""
    with engine.connect() as c:
        # Active invoices that get no reminder until a person acts: held for a reply, an address that
        # fails (a new one is needed), a reminder that failed on its data (the data is to be fixed).
        rows = c.execute(sa.select(inv_t.c.id, inv_t.c.number, inv_t.c.amount, inv_t.c.paid, inv_t.c.currency,
                                   inv_t.c.state, inv_t.c.held_by, inv_t.c.data_error, con_t.c.failing, cli_t.c.name)
                         .join(cli_t, cli_t.c.id == inv_t.c.client_id).join(con_t, con_t.c.id == inv_t.c.contact_id)
                         .where(sa.or_(inv_t.c.state.in_(WAITING_STATES),
                                       sa.and_(inv_t.c.state == "active",
                                               sa.or_(inv_t.c.held_by.is_not(None), inv_t.c.data_error.is_not(None),
                                                      triage.address_fails()))))).all()
        since = dict(c.execute(sa.select(ev_t.c.invoice_id, sa.func.max(ev_t.c.at))
                               .where(ev_t.c.invoice_id.in_([r.id for r in rows]),
                                      ev_t.c.kind.in_(("paused", "disputed", "plan", "bounced", "message_bounce",
                                                       "reminder_failed")))
                               .group_by(ev_t.c.invoice_id)).all())
        messages = [dict(m._mapping) for m in c.execute(
            sa.select(in_t.c.id, in_t.c.from_addr, in_t.c.subject, in_t.c.kind, in_t.c.received_at, in_t.c.suggested)
            .where(in_t.c.status == "triage").order_by(in_t.c.received_at, in_t.c.id))]
    invoices = [Waiting(r.number, r.name, max(r.amount - r.paid, Decimal(0)), r.currency, _why(r), since.get(r.id))
                for r in rows]
    invoices.sort(key=lambda w: (-w.amount_due, w.number))
    for m in messages:
        m["suggested"] = json.loads(m["suggested"] or "[]")
    return invoices, messages


def message_id(config: Config, now: datetime) -> str:
    return f"<relance.digest.{now.astimezone(config.zone).date().isoformat()}@{config.company.domain}>"


def render(config: Config, invoices: list[Waiting], messages: list[dict[str, Any]], now: datetime,
           language: str = "") -> Rendered:
    language = language or config.company.language
    locale = LOCALES[language]
    env = make_environment(config.templates.path(config.source))
    env.filters["money"] = lambda v, cur="EUR": format_currency(v, cur, locale=locale)
    env.filters["when"] = lambda d: format_datetime(d.astimezone(config.zone), format="short", locale=locale) \
        if d else "?"
    totals: dict[str, Decimal] = {}
    for w in invoices:
        totals[w.currency] = totals.get(w.currency, Decimal(0)) + w.amount_due
    text = env.get_template(f"{language}/digest.txt").render(
        company=config.company, invoices=invoices, messages=messages, totals=totals,
        today=now.astimezone(config.zone).date())
    first, _, body = text.partition("\n")
    return Rendered(subject=" ".join(first.removeprefix("Subject:").split()), text=body.lstrip("\n"), html=None)


def check(config: Config, now: datetime) -> list[str]:
    """Render the digest in every language with a sample (for `relance check`): one line per problem."""
    sample = [Waiting("F-2027-0042", "Exemple SARL", Decimal("1234.56"), "EUR", "held", now)]
    message = {"id": 1, "from_addr": "compta@exemple.example", "subject": "Re: Rappel", "kind": "human_reply",
               "received_at": now, "suggested": ["F-2027-0042"]}
    problems = []
    for language in LOCALES:
        try:
            render(config, sample, [message], now, language)
        except jinja2.TemplateError as e:
            problems.append(f"digest ({language}): {e}")
    return problems


async def send_if_due(engine: Engine, config: Config, mailer: Mailer, now: datetime, wall_now: datetime) -> str:
    """Send today's digest if this is the moment: returns a line saying what happened ("" when not due)."""
    to = config.company.operator_email
    if not to or not views.calendar(config).is_allowed(now):
        return ""
    mid = message_id(config, now)
    with engine.connect() as c:
        if c.execute(sa.select(out_t.c.id).where(out_t.c.message_id == mid)).first() is not None:
            return ""
    invoices, messages = waiting(engine)
    if not invoices and not messages:
        return ""
    try:
        rendered = render(config, invoices, messages, now)
    except jinja2.TemplateError as e:
        return t("digest not sent: its template failed: {why}", why=e)
    data = compose(rendered, company_name=config.company.name, company_email=config.company.email, to=to,
                   to_name="", cc=(), reply_to="", message_id=mid, references=(), date=now, invoice_numbers=())
    try:
        with session(engine) as s:  # recorded before it is sent; the unique Message-ID makes it once a day
            outbound_id = s.execute(sa.insert(out_t).values(
                message_id=mid, client_id=None, stage_index=-1, stage="digest", to_addr=to, subject=rendered.subject,
                status="sending", raw=data, created_at=now, claimed_at=wall_now, claimed_by=instance_name(), attempts=1,
            ).returning(out_t.c.id)).scalar_one()
    except sa.exc.IntegrityError:
        return ""  # another instance recorded today's digest first
    try:
        async with mailer:
            await mailer.send(config.company.email, [to], data)
    except (UncertainDeliveryError, PermanentDeliveryError) as e:  # maybe delivered, or refused for good: not again
        status = "uncertain" if isinstance(e, UncertainDeliveryError) else "failed"
        with session(engine) as s:
            s.execute(sa.update(out_t).where(out_t.c.id == outbound_id).values(status=status, last_error=str(e)))
        return t("digest to {to} not sent: {why}", to=to, why=e)
    except DeliveryError as e:  # not delivered (a 4xx, the server away): the next tick tries again
        with session(engine) as s:
            s.execute(sa.delete(out_t).where(out_t.c.id == outbound_id))
        return t("digest to {to} not sent: {why}", to=to, why=e)
    with session(engine) as s:
        s.execute(sa.update(out_t).where(out_t.c.id == outbound_id).values(status="sent", sent_at=now))
    return t("digest to {to}: {invoices} invoice(s) and {messages} message(s) wait for a person", to=to,
             invoices=len(invoices), messages=len(messages))
