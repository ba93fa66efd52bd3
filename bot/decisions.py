"""A person's decisions on a message: which invoices it is about (`relance assign`, `a` in the
TUI), what it is (`relance label`, `k`). Each lifts the holds the message put on the client's
invoices until a person decides, and applies what the person said as the policy says."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot import learn
from bot.actions import release_holds
from bot.apply import Effects, Lookups
from bot.config import Config
from bot.errors import DateNeededError, NotFoundError, RelanceError, StaleError
from bot.i18n import day as day_words
from bot.i18n import t, words
from bot.models import Event, Inbound, Invoice, table
from bot.reasons import fit, render
from bot.store import db_text, inbound_raw, record_events, session
from bot.understand import understand_batch
from rules.classify import Kind, Understanding
from rules.match import Match
from rules.reasons import join, reason

in_t, inv_t, ev_t = table(Inbound), table(Invoice), table(Event)


def _still_waiting(s: Connection, inbound_id: int, in_triage: bool) -> None:
    """The lost-update check of a message: decided by someone else since it was read, it is left alone."""
    if in_triage and s.execute(sa.select(in_t.c.status).where(in_t.c.id == inbound_id)
                               .with_for_update()).scalar() != "triage":
        raise StaleError(t("message #{id} was decided meanwhile: nothing done, read it again", id=inbound_id))


def assign(engine: Engine, config: Config, now: datetime, inbound_id: int, numbers: Sequence[str], actor: str,
           in_triage: bool = False) -> str:
    """A person says which invoices a message concerns: its effects apply to them, as if it had been
    matched (`relance assign`, the triage UI). Refused for a message whose effects already applied.
    `in_triage`: refused too when the message no longer waits for a person (decided meanwhile)."""
    numbers = list(dict.fromkeys(numbers))
    with engine.connect() as c:
        row = c.execute(sa.select(in_t.c.status).where(in_t.c.id == inbound_id)).first()
        raw = inbound_raw(c, [inbound_id]).get(inbound_id, b"")
        if row is None:
            raise NotFoundError(f"no message #{inbound_id} (see `relance messages`)")
        known = set(c.execute(sa.select(inv_t.c.number).where(inv_t.c.number.in_(numbers))).scalars())
        applied = set(c.execute(sa.select(inv_t.c.number).join(ev_t, ev_t.c.invoice_id == inv_t.c.id)
                                .where(ev_t.c.inbound_id == inbound_id, ev_t.c.kind.like("message_%"))).scalars())
    if missing := [n for n in numbers if n not in known]:
        raise NotFoundError(f"no invoice {', '.join(missing)} (see `relance status`)")
    if applied:
        raise RelanceError(f"message #{inbound_id} was already applied to {', '.join(sorted(applied))}: "
                           "change the invoices themselves (pause, resume, paid)")
    (u,) = understand_batch([(inbound_id, raw, False)], config.company.domain,
                            now.astimezone(config.zone).date(), learn.current(engine))
    if u.parsed is None or u.understanding is None:
        raise RelanceError(f"message #{inbound_id} cannot be read: {u.failure}")
    found = Match(tuple(numbers), "person", True, reason("person.assigned", actor=actor, numbers=", ".join(numbers)))
    with session(engine) as s:
        _still_waiting(s, inbound_id, in_triage)
        release_holds(s, inbound_id, now, actor)  # the holds on the client's invoices; the assigned ones decide anew
        effects = Effects(s, config, now, Lookups(s, [u.parsed], u.tokens, u.failed), actor)
        status, why = effects.apply(u, u.understanding, found)
        for inv in effects.load(numbers):
            effects.events.append({"invoice_id": inv["id"], "at": now, "inbound_id": inbound_id, "actor": actor,
                                   "kind": "message_assigned", "reason": found.reason})
        effects.flush()
        s.execute(sa.update(in_t).where(in_t.c.id == inbound_id).values(
            status=status, reason=fit(db_text(join(found.reason, why))), suggested="[]"))
    return t("#{id} {kind} -> {numbers}: {status}", id=inbound_id, kind=words(u.understanding.kind.value),
             numbers=", ".join(numbers), status=words(status))


# A made-up reply that takes the reader's whole path: a promise, with dates in French and English.
WARM_UP = (b"From: client@example.com\r\nSubject: Facture F-1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           b"Bonjour, nous paierons la facture F-1 le 30 avril. We will pay invoice F-1 on 12 May.\r\n")


def warm_up(engine: Engine, config: Config, now: datetime) -> None:
    """Read a made-up reply as a person's decision reads the real one (`label`, `assign`): the
    classifier, its lemmatizers and dateparser's locales load on the first reading in a process,
    most of a second of CPU that the triage screen does ahead, rather than on its first key.
    Nothing is stored."""
    understand_batch([(0, WARM_UP, False)], config.company.domain, now.astimezone(config.zone).date(),
                     learn.current(engine))


def label(engine: Engine, config: Config, now: datetime, inbound_id: int, kind: Kind, actor: str,
          until: date | None = None, in_triage: bool = False) -> str:
    """A person's reading of a message (`relance label`, the triage UI): its kind is set, what that
    kind does is applied to its invoices (those it was threaded to, else the ones suggested), the
    holds it put on them until a person decides are lifted, and it is kept as an example the
    classifier learns from (`relance learn`). A promise needs its date: the one read in the
    message, or `until`."""
    with engine.connect() as c:
        row = c.execute(sa.select(in_t.c.kind, in_t.c.status, in_t.c.suggested)
                        .where(in_t.c.id == inbound_id)).first()
        raw = inbound_raw(c, [inbound_id]).get(inbound_id, b"")
        if row is None:
            raise NotFoundError(f"no message #{inbound_id} (see `relance messages`)")
        linked = sorted(set(c.execute(sa.select(inv_t.c.number).join(ev_t, ev_t.c.invoice_id == inv_t.c.id).where(
            ev_t.c.inbound_id == inbound_id, ev_t.c.kind.like("message_%"))).scalars()))
    numbers = linked or json.loads(row.suggested or "[]")
    (u,) = understand_batch([(inbound_id, raw, False)], config.company.domain,
                            now.astimezone(config.zone).date(), learn.current(engine))
    if u.parsed is None or u.understanding is None:
        raise RelanceError(f"message #{inbound_id} cannot be read: {u.failure}")
    today = now.astimezone(config.zone).date()
    if until is not None and until <= today:
        raise RelanceError(t("{day}: that is not in the future", day=day_words(until)))
    day = until or (u.understanding.date if u.understanding.kind is kind else None)
    if kind is Kind.PROMISE_TO_PAY and numbers and (day is None or day < today):
        raise DateNeededError(t("message #{id}: no date to come was read for this promise: give its date",
                                id=inbound_id))
    person = Understanding(kind, Decimal(1), (f"labelled {kind.value} by {actor}",), date=day)
    done = ""
    with session(engine) as s:
        _still_waiting(s, inbound_id, in_triage)
        released = release_holds(s, inbound_id, now, actor)
        undone = {"payment_plan": "plan", "dispute": "disputed"}.get(row.kind or "")
        if undone and kind.value != row.kind and linked:  # the bot's reading set a state a person now undoes
            for invoice_id in s.execute(sa.select(inv_t.c.id).where(inv_t.c.number.in_(linked),
                                                                    inv_t.c.state == undone)).scalars():
                s.execute(sa.update(inv_t).where(inv_t.c.id == invoice_id).values(state="active"))
                record_events(s, [{"invoice_id": invoice_id, "at": now, "inbound_id": inbound_id, "actor": actor,
                                   "kind": "resumed", "reason": join(reason("state.was", state=undone), reason(
                                       "person.labelled", kind=kind.value, actor=actor))}])
        # What the bot already applied alone for the same kind stays; otherwise the kind applies what it does
        # (a reading the bot was not sure of, another kind, or a message a person had filed unread).
        closed = s.execute(sa.select(ev_t.c.id).where(ev_t.c.inbound_id == inbound_id,
                                                      ev_t.c.kind == "triage_closed")).first() is not None
        alone = row.kind == kind.value and row.status == "applied" and not closed
        if numbers and kind is not Kind.HUMAN_REPLY and not alone:
            effects = Effects(s, config, now, Lookups(s, [u.parsed], u.tokens, u.failed), actor)
            _, done = effects.apply(u, person, Match(tuple(numbers), "person", True, reason(
                "person.labelled_for", actor=actor, numbers=", ".join(numbers))))
            effects.flush()
        s.execute(sa.update(in_t).where(in_t.c.id == inbound_id).values(
            kind=kind.value, confidence=Decimal(1), label=kind.value, labelled_by=actor, labelled_at=now,
            status="applied", suggested="[]", reason=fit(db_text(reason("person.labelled", kind=kind.value,
                                                                       actor=actor)))))
        # The ladder goes on only for what the decision left active (a dispute confirmed stays disputed).
        going = sorted(s.execute(sa.select(inv_t.c.number).where(inv_t.c.number.in_(released),
                                                                 inv_t.c.state == "active")).scalars()
                       ) if released else []  # an empty IN would walk every active invoice on SQLite
    out = t("#{id} labelled {kind}", id=inbound_id, kind=words(kind.value))
    if row.kind and row.kind != kind.value:
        out += " " + t("(read as {kind})", kind=words(row.kind))
    if numbers:
        out += " " + t("for {numbers}", numbers=", ".join(numbers)) + (f": {render(done)}" if done else "")
    if going:
        out += "; " + t("the ladder goes on for {numbers}", numbers=", ".join(going))
    return out
