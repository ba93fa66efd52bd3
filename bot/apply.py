"""Applying understood messages: each batch is threaded to its invoices (rules.match) and its
effects decided (rules.effects.decide) and written in one transaction, with the lookups it needs
read in a query each. Nothing here decides what a message does: it reads, asks the rules, writes.

A message whose effects were applied by an earlier pass (`reprocess`) is never applied twice:
read the same, its status stays; read differently, a person compares the two readings."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot.config import Config
from bot.logs import Line
from bot.models import Client, Contact, Event, IgnoredSender, Inbound, Invoice, Outbound, Reminder, table
from bot.reasons import fit
from bot.store import db_text, record_events, session
from bot.understand import Parsed, Understood
from rules.classify import Kind, Understanding
from rules.effects import UNTIL_DECIDED, Effect, Held, Policy, decide, reread
from rules.match import Known, Match, NameIndex, digits, domain_index, find_numbers, match, normalise
from rules.model import State
from rules.reasons import reason

in_t, inv_t, con_t, cli_t = table(Inbound), table(Invoice), table(Contact), table(Client)
out_t, rem_t, ev_t, ign_t = table(Outbound), table(Reminder), table(Event), table(IgnoredSender)
_PAYMENT_BUSINESS = (Kind.PAYMENT_CLAIM, Kind.PROMISE_TO_PAY, Kind.PAYMENT_PLAN, Kind.DISPUTE)
OPEN = ("active", "disputed", "plan", "bounced")


class Numbers:
    """Every invoice number, normalised two ways, the clients' names and their contacts' mail
    domains, read once per pass (not once per message)."""

    def __init__(self, numbers: list[str], names: dict[int, str] | None = None,
                 contacts: Sequence[tuple[int, str]] = ()) -> None:
        self._names = names or {}
        self.domains = domain_index(contacts)
        self.by_normalised = {normalise(n): n for n in numbers}
        self.by_digits: dict[str, tuple[str, ...]] = {}
        for n in numbers:
            d = digits(n)
            if len(d) >= 4:
                self.by_digits[d] = (*self.by_digits.get(d, ()), n)

    @functools.cached_property
    def names(self) -> NameIndex:
        """Built when a stranger's message first needs it: its dictionaries take a second to load."""
        return NameIndex.of(self._names)


def apply_batch(engine: Engine, config: Config, now: datetime, batch: Sequence[Understood], numbers: Numbers,
                claim: bool = True) -> list[str]:
    """Match and apply a batch of understood messages in one transaction.

    With `claim`, the transaction first takes the messages still `new` (one UPDATE): another
    instance reading the same mailbox, or a second pass, that applied one of them meanwhile has
    changed its status, so its effects are never applied twice (PostgreSQL re-reads a row another
    transaction changed; SQLite lets one writer in at a time). Without it (`reprocess`, a person's
    command) the messages are applied whatever their status, as `_reprocessed` allows."""
    lines: list[str] = []
    with session(engine) as s:
        if claim:
            mine = set(s.execute(sa.update(in_t).where(in_t.c.id.in_([u.id for u in batch]), in_t.c.status == "new")
                                 .values(status="applying").returning(in_t.c.id)).scalars())
            batch = [u for u in batch if u.id in mine]
            if not batch:
                return lines
        only = Known(by_message_id={}, by_token={}, by_normalised=numbers.by_normalised, by_digits=numbers.by_digits)
        texts = {u.id: (p.subject, p.facts.text, *p.facts.attachments) for u in batch if (p := u.parsed) is not None}
        cited = {i: find_numbers(t, only) for i, t in texts.items()}  # read once: for the lookups and the match
        lookups = Lookups(s, [u.parsed for u in batch if u.parsed is not None], [t for u in batch for t in u.tokens],
                          [a for u in batch for a in u.failed], [n for found, _ in cited.values() for n in found])
        # A person the ledger does not know may name the client it writes for (a robot's naming, a
        # newsletter's, says nothing of who answered).
        lookups.load_named(s, {u.id: c for u in batch if (p := u.parsed) is not None and u.understanding is not None
                               and u.understanding.kind not in (Kind.AUTO_REPLY, Kind.BOUNCE)
                               and p.sender not in lookups.known_senders
                               and (c := _client_of_stranger(p.sender, texts[u.id][:2], numbers)) is not None})
        effects = Effects(s, config, now, lookups)
        rows: list[dict[str, Any]] = []
        found_all = {u.id: lookups.bounced(u, match(p.refs, u.tokens, texts[u.id], lookups.known(u.id, p, numbers),
                                                    cited[u.id]))
                     for u in batch if (p := u.parsed) is not None and u.understanding is not None}
        effects.load([n for m in found_all.values() if m.sure for n in m.numbers])
        for u in batch:
            if u.parsed is None or u.understanding is None:
                rows.append({"_id": u.id, "status": "quarantined", "reason": fit(db_text(u.failure))})
                lines.append(Line(f"quarantined  #{u.id}: {u.failure}", inbound_id=u.id, status="quarantined"))
                continue
            p, understood, found = u.parsed, u.understanding, found_all[u.id]
            if u.applied_before:
                status, why, concerned = _reprocessed(s, u.id, understood, found)
                effects.hold_reread(u.id, concerned)
            elif (p.sender in lookups.ignored and p.sender not in lookups.known_senders
                  and understood.kind not in (*_PAYMENT_BUSINESS, Kind.BOUNCE)):
                # "Ignore this sender" (a newsletter): filed, never waiting for a person. A client's own
                # contact, a bounce, and what it says of a payment, a plan or a dispute are still read.
                status, why = "applied", reason("inbound.ignored_sender")
            else:
                status, why = effects.apply(u, understood, found)
            rows.append({
                "_id": u.id, "message_id": db_text(p.message_id)[:250] or f"<no-message-id.{u.id}@relance>",
                "from_addr": db_text(p.sender)[:250], "subject": db_text(p.subject)[:500],
                "received_at": p.received_at if p.received_at and p.received_at.tzinfo else None,
                "kind": understood.kind.value, "confidence": understood.confidence, "status": status,
                "reason": fit(db_text(why)), "text": db_text(p.facts.text)[:20000],
                "cues": json.dumps([*understood.cues, f"match: {found.method}: {found.reason}"], ensure_ascii=False),
                "suggested": json.dumps(list(found.numbers) if found.numbers and not found.sure else [])})
            lines.append(Line(f"{status:<11} {understood.kind.value:<15} {', '.join(found.numbers) or '-':<20} "
                              f"{p.subject[:60]}", inbound_id=u.id, message_id=p.message_id,
                              invoices=list(found.numbers), kind=understood.kind.value, status=status))
        effects.flush()
        for keys in sorted({tuple(sorted(r)) for r in rows}):  # one UPDATE per set of columns, many rows
            same = [{f"v_{k}": v for k, v in r.items()} for r in rows if tuple(sorted(r)) == keys]
            # The server's arrival time (INTERNALDATE, stored with the bytes) is when it was received;
            # the sender's Date header only stands in where the server gave none.
            s.execute(sa.update(in_t).where(in_t.c.id == sa.bindparam("v__id"))
                      .values({k: sa.func.coalesce(in_t.c.received_at, sa.bindparam(f"v_{k}")) if k == "received_at"
                               else sa.bindparam(f"v_{k}") for k in keys if k != "_id"}), same)
    return lines


class Lookups:
    """What the store knows about a batch's references, tokens, senders and bounced addresses, read
    in a query each."""

    def _replies(self, s: Connection, refs: list[str], tokens: Sequence[str]) -> None:
        """A person's replies to clients thread like reminders: by their Message-ID or reply token
        to the invoices of their `reply_queued` events."""
        replied = (sa.select(out_t.c.message_id, out_t.c.reply_token, inv_t.c.number)
                   .join(ev_t, ev_t.c.outbound_id == out_t.c.id).join(inv_t, inv_t.c.id == ev_t.c.invoice_id)
                   .where(out_t.c.stage == "reply", ev_t.c.kind == "reply_queued"))
        for chunk in range(0, len(refs), 500):
            for mid, _, number in s.execute(replied.where(out_t.c.message_id.in_(refs[chunk:chunk + 500]))):
                if number not in self.by_mid.get(mid, ()):
                    self.by_mid[mid] = (*self.by_mid.get(mid, ()), number)
        if tokens:
            for _, tok, number in s.execute(replied.where(out_t.c.reply_token.in_(list(set(tokens))))):
                if number not in self.by_token.get(tok, ()):
                    self.by_token[tok] = (*self.by_token.get(tok, ()), number)

    def __init__(self, s: Connection, parsed: Sequence[Parsed], tokens: Sequence[str], failed: Sequence[str],
                 cited: Sequence[str] = ()) -> None:
        refs = list({r for p in parsed for r in p.refs})
        senders = list({p.sender for p in parsed})
        self.by_mid: dict[str, tuple[str, ...]] = {}
        for chunk in range(0, len(refs), 500):
            for mid, number in s.execute(
                    sa.select(out_t.c.message_id, inv_t.c.number).join(rem_t, rem_t.c.outbound_id == out_t.c.id)
                    .join(inv_t, inv_t.c.id == rem_t.c.invoice_id)
                    .where(out_t.c.message_id.in_(refs[chunk:chunk + 500]), rem_t.c.skipped.is_(False))):
                self.by_mid[mid] = (*self.by_mid.get(mid, ()), number)
        self.by_token: dict[str, tuple[str, ...]] = {}
        if tokens:
            for tok, number in s.execute(
                    sa.select(out_t.c.reply_token, inv_t.c.number).join(rem_t, rem_t.c.outbound_id == out_t.c.id)
                    .join(inv_t, inv_t.c.id == rem_t.c.invoice_id).where(out_t.c.reply_token.in_(list(set(tokens))))):
                self.by_token[tok] = (*self.by_token.get(tok, ()), number)
        self._replies(s, refs, tokens)
        # The open invoices of the clients those replies are about: "we paid this one and 0437 too".
        # The clients of the invoices these replies are tied to (thread, token, a full number cited):
        # their other invoices may be cited short ("we paid this one and 0437 too").
        referenced = list({*cited, *(n for ns in (*self.by_mid.values(), *self.by_token.values()) for n in ns)})
        self.siblings: dict[str, tuple[str, ...]] = {}
        self.client_of: dict[str, int] = {}  # an invoice number -> its client
        self.amounts: dict[str, tuple[Decimal, ...]] = {}  # an invoice number -> (its amount, what is still due)
        for chunk in range(0, len(referenced), 500):
            for number, client_id, amount, paid in s.execute(
                    sa.select(inv_t.c.number, inv_t.c.client_id, inv_t.c.amount, inv_t.c.paid)
                    .where(inv_t.c.number.in_(referenced[chunk:chunk + 500]))):
                self.client_of[number] = client_id
                self.amounts[number] = (amount, amount - paid)
        if referenced:
            sib = inv_t.alias("sibling")
            for chunk in range(0, len(referenced), 500):
                for number, other in s.execute(
                        sa.select(inv_t.c.number, sib.c.number).join(sib, sib.c.client_id == inv_t.c.client_id)
                        .where(inv_t.c.number.in_(referenced[chunk:chunk + 500]), sib.c.state.in_(OPEN))
                        .order_by(sib.c.number)):
                    self.siblings[number] = (*self.siblings.get(number, ()), other)
        self.sender_open: dict[str, list[str]] = {}
        for email, number, client_id in s.execute(
                sa.select(con_t.c.email, inv_t.c.number, inv_t.c.client_id)
                .join(con_t, con_t.c.client_id == inv_t.c.client_id)
                .where(con_t.c.email.in_(senders), inv_t.c.state.in_(OPEN)).distinct()
                .order_by(con_t.c.email, inv_t.c.number)):
            self.sender_open.setdefault(email, []).append(number)
            self.client_of[number] = client_id
        self.ignored = set(s.execute(sa.select(ign_t.c.address).where(ign_t.c.address.in_(senders))).scalars())
        self.known_senders = set(s.execute(sa.select(con_t.c.email).where(con_t.c.email.in_(senders))).scalars())
        self.named: dict[int, tuple[str, tuple[str, ...]]] = {}  # message id -> (client named, its open invoices)
        self.contacts: dict[str, list[int]] = {}  # a bounced address -> the contacts that have it
        self.contact_open: dict[str, list[str]] = {}  # a bounced address -> the open invoices it is the contact of
        if failed:
            for contact_id, email, number, state in s.execute(
                    sa.select(con_t.c.id, con_t.c.email, inv_t.c.number, inv_t.c.state)
                    .outerjoin(inv_t, inv_t.c.contact_id == con_t.c.id)
                    .where(sa.func.lower(con_t.c.email).in_(list(set(failed))))
                    .order_by(con_t.c.email, inv_t.c.number)):
                key = email.lower()
                if contact_id not in self.contacts.setdefault(key, []):
                    self.contacts[key].append(contact_id)
                if number is not None and state in OPEN and number not in self.contact_open.setdefault(key, []):
                    self.contact_open[key].append(number)

    def bounced(self, u: Understood, m: Match) -> Match:
        """A bounce that does not carry our Message-ID: the open invoices of the contacts it names."""
        if m.sure and m.numbers:
            return m
        numbers = [n for a in u.failed for n in self.contact_open.get(a, ())]
        if not numbers:
            return m
        return Match(tuple(dict.fromkeys(numbers)), "bounce", True, reason(
            "match.bounce", addresses=", ".join(a for a in u.failed if a in self.contact_open),
            numbers=", ".join(dict.fromkeys(numbers))))

    def load_named(self, s: Connection, named: dict[int, int]) -> None:
        """The open invoices of the clients named by unknown senders (message id -> client id)."""
        clients = sorted(set(named.values()))
        found: dict[int, tuple[str, list[str]]] = {}
        for chunk in range(0, len(clients), 500):
            for client_id, name, number in s.execute(
                    sa.select(cli_t.c.id, cli_t.c.name, inv_t.c.number).join(inv_t, inv_t.c.client_id == cli_t.c.id)
                    .where(cli_t.c.id.in_(clients[chunk:chunk + 500]), inv_t.c.state.in_(OPEN))
                    .order_by(inv_t.c.number)):
                found.setdefault(client_id, (name, []))[1].append(number)
        for message_id, client_id in named.items():
            if client_id in found:
                name, numbers = found[client_id]
                self.named[message_id] = (name, tuple(numbers))

    def known(self, message_id: int, p: Parsed, numbers: Numbers) -> Known:
        name, named_open = self.named.get(message_id, ("", ()))
        return Known(by_message_id=self.by_mid, by_token=self.by_token, by_normalised=numbers.by_normalised,
                     by_digits=numbers.by_digits, sender_open=tuple(self.sender_open.get(p.sender, ())),
                     siblings=self.siblings, named=name, named_open=named_open, client_of=self.client_of,
                     amounts=self.amounts)


def _client_of_stranger(sender: str, texts: Sequence[str], numbers: Numbers) -> int | None:
    """The client a sender the ledger does not know writes for: the one it names, or the one whose
    contacts write from its mail domain (a colleague); None when neither or when they disagree."""
    named = numbers.names.named(texts)
    colleague = numbers.domains.get(sender.rpartition("@")[2].lower())
    if named is not None and colleague is not None and named != colleague:
        return None
    return named if named is not None else colleague


def _reprocessed(s: Connection, inbound_id: int, u: Understanding, m: Match) -> tuple[str, str, list[str]]:
    """A message whose effects were applied before: never apply them twice. When it is understood
    as before, its status stays; otherwise a person compares the two readings, and the invoices
    either reading concerns (the third value) wait for that person."""
    old = s.execute(sa.select(in_t.c.kind, in_t.c.status, in_t.c.reason).where(in_t.c.id == inbound_id)).one()
    linked = sorted(set(s.execute(sa.select(inv_t.c.number).join(ev_t, ev_t.c.invoice_id == inv_t.c.id)
                                  .where(ev_t.c.inbound_id == inbound_id)).scalars()))
    if old.kind == u.kind.value and set(m.numbers) <= set(linked):
        return old.status, old.reason, []
    why = reason("triage.reread", kind=u.kind.value, numbers=", ".join(m.numbers) or "-", old=old.kind or "?",
                 old_numbers=", ".join(linked) or "-")
    return "triage", why, list(dict.fromkeys([*linked, *(m.numbers if m.sure else ())]))


def policy(config: Config) -> Policy:
    p = config.pause
    return Policy(human_reply_days=p.human_reply_days, promise_grace_days=p.promise_grace_days,
                  payment_claim_days=p.payment_claim_days,
                  auto_apply_margin=config.understanding.auto_apply_margin, zone=config.zone)


def held(inv: dict[str, Any]) -> Held:
    return Held(inv["number"], State(inv["state"]), inv["hold_until"])


class Effects:
    """The effects of understood messages on their invoices, as events, per `[pause]`. Invoices are
    read once per batch and written once at the end, so two messages about one invoice see each other."""

    def __init__(self, s: Connection, config: Config, now: datetime, lookups: Lookups, actor: str = "relance"
                 ) -> None:
        """`actor`: who the events are recorded for (the bot, or the person whose decision applies them)."""
        self.s, self.config, self.now, self.lookups, self.actor = s, config, now, lookups, actor
        self.policy = policy(config)
        self.invoices: dict[str, dict[str, Any]] = {}
        self.changed: dict[str, set[str]] = {}
        self.failing: dict[int, str] = {}  # contact id -> why it is failing
        self.events: list[dict[str, Any]] = []

    def load(self, numbers: Sequence[str]) -> list[dict[str, Any]]:
        """The invoices `numbers` (read from the store the first time the batch needs them)."""
        missing = list({n for n in numbers if n not in self.invoices})
        for chunk in range(0, len(missing), 500):
            for row in self.s.execute(sa.select(inv_t.c.id, inv_t.c.number, inv_t.c.state, inv_t.c.hold_until,
                                                inv_t.c.held_by, inv_t.c.contact_id)
                                      .where(inv_t.c.number.in_(missing[chunk:chunk + 500]))).mappings():
                self.invoices[row["number"]] = dict(row)
        return [self.invoices[n] for n in numbers if n in self.invoices]

    def _set(self, inv: dict[str, Any], **values: Any) -> None:
        inv.update(values)
        self.changed.setdefault(inv["number"], set()).update(values)

    def apply(self, message: Understood, u: Understanding, m: Match) -> tuple[str, str]:
        """The effects of `message`, understood as `u` and matched to `m`, as `rules.effects.decide`
        says. Returns its (status, reason)."""
        inbound_id, now = message.id, self.now
        # The contacts a bounce names, whichever invoices it was matched to (or none).
        named = [c for a in message.failed for c in self.lookups.contacts.get(a, ())] if u.kind is Kind.BOUNCE else []
        for contact_id in named:
            self.failing[contact_id] = reason("bounce.gave_up", addresses=", ".join(message.failed)[:300])
        matched = self.load(m.numbers) if m.sure else []
        matched_numbers = [i["number"] for i in matched]
        sender = message.parsed.sender if message.parsed is not None else ""
        # The invoices a person will look at: the sender's client's, the named client's, the guessed ones.
        family = [*self.lookups.sender_open.get(sender, []), *self.lookups.named.get(inbound_id, ("", ()))[1],
                  *(m.numbers if not m.sure else ()),
                  *(n for number in matched_numbers for n in self.lookups.siblings.get(number, ()))]
        client_open = self.load(list(dict.fromkeys(family)))
        decision = decide(u, m, [held(i) for i in matched], [held(i) for i in client_open], self.policy, now,
                          delayed_only=u.kind is Kind.BOUNCE and bool(message.delayed) and not message.failed)
        proposal = [c.removeprefix("proposes ") for c in u.cues if c.startswith("proposes ")]
        self._write(inbound_id, decision.effects, bool(named), proposal)
        return decision.status.value, decision.reason

    def hold_reread(self, inbound_id: int, numbers: Sequence[str]) -> None:
        """A message read differently than when its effects were applied: its invoices wait for a person."""
        self._write(inbound_id, reread([held(i) for i in self.load(numbers)], self.policy, self.now), False, [])

    def _write(self, inbound_id: int, effects: Sequence[Effect], named: bool, proposal: list[str]) -> None:
        now = self.now
        for e in effects:
            inv = self.invoices[e.number]
            base = {"invoice_id": inv["id"], "at": now, "inbound_id": inbound_id}
            self.events.append({**base, "kind": e.event, "reason": fit(e.reason)})
            if e.hold_until is not None:
                new = max(e.hold_until, inv["hold_until"]) if inv["hold_until"] else e.hold_until
                self._set(inv, hold_until=new)
                self.events.append({**base, "kind": "paused", "reason": e.reason, "data": {"until": new.isoformat()}})
            if e.until_decided:
                if inv["held_by"] is None:
                    self._set(inv, held_by=inbound_id)
                self.events.append({**base, "kind": "paused", "reason": UNTIL_DECIDED,
                                    "data": {"until_decided": True}})
            if e.state is not None:
                self._set(inv, state=e.state.value)
                if e.state is State.BOUNCED and not named:  # the bounce does not say which address failed
                    self.failing.setdefault(inv["contact_id"], reason("bounce.reported"))
                elif e.state in (State.PLAN, State.DISPUTED):
                    self.events.append({**base, "kind": e.state.value, "reason": UNTIL_DECIDED,
                                        "data": {"proposal": proposal} if proposal else {}})

    def flush(self) -> None:
        """Write the batch's invoice changes, contact failures and events."""
        for column in ("hold_until", "state", "held_by"):
            rows = [{"v_id": inv["id"], "v": inv[column]} for n, inv in self.invoices.items()
                    if column in self.changed.get(n, ())]
            if rows:
                self.s.execute(sa.update(inv_t).where(inv_t.c.id == sa.bindparam("v_id"))
                               .values({column: sa.bindparam("v")}), rows)
        if self.failing:
            self.s.execute(sa.update(con_t).where(con_t.c.id == sa.bindparam("v_id")).values(
                failing=True, failure_reason=sa.bindparam("v_reason")),
                [{"v_id": c, "v_reason": why} for c, why in sorted(self.failing.items())])
        record_events(self.s, [{"actor": self.actor, **e} for e in self.events])
