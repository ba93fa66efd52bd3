"""What an understood message does to its invoices: the policy, as a pure decision.

The promise Relance makes is that nobody gets a firmer letter after answering. So:

- a reading the bot is sure of (its margin at least `auto_apply_margin`) is applied alone: a
  payment claim holds the invoice for `payment_claim_days` (or until a day to come it names), a
  promise with a date until that date plus `promise_grace_days` (never less than a claim), an
  out-of-office until the day after its return;
- anything else a person wrote holds every invoice it concerns until a person has read it (or for
  `human_reply_days` when that is positive): a human reply, a promise with no date, a reading the
  bot is not sure of. The client's other open invoices wait with them: a plan, a dispute or a
  question often speaks of invoices it does not cite ("the 720 one I can pay next week"), and a
  person reads it within a day. When the message cannot be tied to an invoice for sure, every open
  invoice of the sender's client is held, since that client has answered something;
- a payment plan or a dispute the bot is sure of sets the invoice's state (`plan`, `disputed`),
  which waits for a person;
- robots never count as an answer: an out-of-office only postpones, a bounce marks the invoice
  and its contact, a delay warning changes nothing. A message the model alone takes for an
  out-of-office, without the margin, is treated as a person's: a person reads it.

`decide` returns the effects as values; `bot/apply.py` writes them with the message's events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from rules.classify import Kind, Understanding
from rules.match import Match, normalise, sequence, short_numbers
from rules.model import State
from rules.reasons import join, reason

CLAIM_HOLD = reason("hold.claim")  # the reason of a hold for a claim applied (sure, or a person's)
LEGACY_CLAIM_HOLD = "the client says it has paid"  # the same, as rows written before codes say it
UNTIL_DECIDED = reason("hold.until_decided")


class Status(StrEnum):
    """Where a message stands: its effects applied alone, or waiting for a person."""

    APPLIED = "applied"
    TRIAGE = "triage"


@dataclass(frozen=True)
class Policy:
    zone: ZoneInfo
    human_reply_days: int = 0  # 0: until a person decides
    promise_grace_days: int = 3
    payment_claim_days: int = 10
    auto_apply_margin: Decimal = Decimal("0.25")


@dataclass(frozen=True)
class Held:
    """An invoice as the policy sees it."""

    number: str
    state: State
    hold_until: datetime | None = None


@dataclass(frozen=True)
class Effect:
    """What happens to one invoice. `event` is the event kind recorded (with `reason`)."""

    number: str
    event: str
    reason: str = ""
    hold_until: datetime | None = None  # a timed hold, never shortening one in force
    until_decided: bool = False  # held until a person has read the message
    state: State | None = None  # a new state


@dataclass(frozen=True)
class Decision:
    status: Status
    reason: str
    effects: tuple[Effect, ...] = ()


def decide(u: Understanding, m: Match, matched: Sequence[Held], client_open: Sequence[Held], policy: Policy,
           now: datetime, delayed_only: bool = False) -> Decision:
    """The effects of message `u` matched to `m` (`matched`: its invoices as stored; `client_open`: the
    open invoices of the client it comes from or is about, held with them when a person must read it)."""
    sure_match = m.sure and bool(m.numbers)
    targets = [h for h in matched if h.state is not State.PAID] if sure_match else []
    on_paid = tuple(Effect(h.number, "reply_recorded", reason("reply.about_paid", kind=u.kind.value))
                    for h in matched if sure_match and h.state is State.PAID)
    if sure_match and not targets:  # every invoice it is about is paid: noted, nothing to hold
        return Decision(Status.APPLIED, m.reason, on_paid)
    if u.kind is Kind.BOUNCE:
        if delayed_only:
            return Decision(Status.APPLIED, reason("bounce.delayed"),
                            tuple(Effect(h.number, "delivery_delayed") for h in targets))
        if not targets:
            return Decision(Status.TRIAGE, m.reason)
        return Decision(Status.TRIAGE, reason("bounce.fix_contact"),
                        (*(Effect(h.number, "message_bounce", _cues(u), state=State.BOUNCED) for h in targets),
                         *on_paid))
    if u.kind is Kind.AUTO_REPLY and u.confidence >= policy.auto_apply_margin:
        if not targets:
            return Decision(Status.APPLIED if not m.numbers else Status.TRIAGE,
                            reason("auto.no_invoice", why=m.reason) if not m.numbers else m.reason)
        back = (datetime.combine(u.date + timedelta(days=1), time(0), policy.zone) if u.date else None)
        return Decision(Status.APPLIED, m.reason, (*(_auto(h, u, back) for h in targets), *on_paid))
    # A person wrote it.
    sure = u.confidence >= policy.auto_apply_margin
    if not targets:
        held = [h for h in client_open if h.state is not State.PAID]
        if not held:
            return Decision(Status.TRIAGE, m.reason)
        return Decision(Status.TRIAGE, join(m.reason, reason("triage.client_waits")),
                        tuple(_for_person(h, policy, now, reason("hold.client_answered")) for h in held))
    event = f"message_{u.kind.value}"
    partly = _partly_named(u, targets)
    if sure and partly:
        # "0439 was released early; 0440 remains on the schedule agreed": the clause that says it
        # was paid (or will be) names some of the invoices only; the others are another matter.
        return Decision(Status.TRIAGE, reason("triage.partly_named", kind=u.kind.value, named=", ".join(partly[0]),
                                              others=", ".join(partly[1])), (*(
                            _for_person(h, policy, now, reason("hold.client_answered"), event) for h in targets),
                            *on_paid, *_others(targets, client_open, policy, now)))
    if sure and u.kind is Kind.PAYMENT_CLAIM:
        # A day to come in a claim ("it will reach you on the 26th") holds until then too: a promise
        # misread as a claim must not let the ladder go on before the day the client named.
        until = now + timedelta(days=policy.payment_claim_days)
        if u.date is not None:
            until = max(until, promise_until(u.date, policy))
        return Decision(Status.APPLIED, m.reason, (*(
            Effect(h.number, event, CLAIM_HOLD, hold_until=until) for h in targets), *on_paid))
    if sure and u.kind is Kind.PROMISE_TO_PAY and u.date is not None:
        until = promise_until(u.date, policy)
        if until > now:
            # "we pay today": the money still has to arrive; a promise waits at least as a claim would
            until = max(until, now + timedelta(days=policy.payment_claim_days))
            return Decision(Status.APPLIED, m.reason, (*(
                Effect(h.number, event, reason("hold.promise", until=u.date.isoformat()), hold_until=until)
                for h in targets), *on_paid))
    if sure and u.kind in (Kind.PAYMENT_PLAN, Kind.DISPUTE):
        state = State.PLAN if u.kind is Kind.PAYMENT_PLAN else State.DISPUTED
        return Decision(Status.TRIAGE, reason("triage.decides", kind=u.kind.value), (*(
            Effect(h.number, event, UNTIL_DECIDED, state=state) for h in targets), *on_paid,
            *_others(targets, client_open, policy, now)))
    if u.kind is Kind.PROMISE_TO_PAY and sure:
        why = reason("triage.promise_no_date")
    elif u.kind is Kind.HUMAN_REPLY:
        why = reason("triage.human_reply")
    else:
        why = reason("triage.not_sure", kind=u.kind.value, margin=str(u.confidence),
                     threshold=str(policy.auto_apply_margin))
    return Decision(Status.TRIAGE, why, (*(_for_person(h, policy, now, reason("hold.client_answered"), event)
                                          for h in targets), *on_paid, *_others(targets, client_open, policy, now)))


def _partly_named(u: Understanding, targets: Sequence[Held]) -> tuple[list[str], list[str]] | None:
    """(named, not named) when the sentence a claim or a promise rests on writes some of its
    invoices' numbers (in full, or as people shorten them: "la 418 et la 420", "0418 à 0420") and
    not the others."""
    sentence = u.sentence or u.evidence
    if u.kind not in (Kind.PAYMENT_CLAIM, Kind.PROMISE_TO_PAY) or len(targets) < 2 or not sentence:
        return None
    whole, shorts = normalise(sentence), set(short_numbers([sentence], loose=True))
    named = [h.number for h in targets if normalise(h.number) in whole or sequence(h.number) in shorts]
    if not named or len(named) == len(targets):
        return None
    return named, [h.number for h in targets if h.number not in named]


def _others(targets: Sequence[Held], client_open: Sequence[Held], policy: Policy, now: datetime) -> tuple[Effect, ...]:
    """The client's other open invoices, held while a person reads what it wrote about some of them."""
    mine = {h.number for h in targets}
    return tuple(_for_person(h, policy, now, reason("hold.other_invoice"))
                 for h in client_open if h.number not in mine and h.state is not State.PAID)


def reread(matched: Sequence[Held], policy: Policy, now: datetime) -> tuple[Effect, ...]:
    """A message whose effects were applied before, read differently now (`relance reprocess` after an
    upgrade): its first effects stay, never applied twice, and its invoices wait for a person who
    compares the two readings."""
    return tuple(_for_person(h, policy, now, reason("hold.reread"))
                 for h in matched if h.state is not State.PAID)


def _auto(h: Held, u: Understanding, back: datetime | None) -> Effect:
    """An out-of-office only postpones, until the day after its return date."""
    if back is None:
        return Effect(h.number, "message_auto_reply", _cues(u))
    return Effect(h.number, "message_auto_reply",
                  reason("hold.out_of_office", until=u.date.isoformat() if u.date else ""), hold_until=back)


def _for_person(h: Held, policy: Policy, now: datetime, why: str, event: str = "held") -> Effect:
    if policy.human_reply_days > 0:
        return Effect(h.number, event, why, hold_until=now + timedelta(days=policy.human_reply_days))
    return Effect(h.number, event, why, until_decided=True)


def _cues(u: Understanding) -> str:
    return "; ".join(u.cues)[:500]


def promise_until(day: date, policy: Policy) -> datetime:
    return datetime.combine(day + timedelta(days=policy.promise_grace_days), time(0), policy.zone)
