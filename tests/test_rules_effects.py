"""The policy (rules.effects.decide) as tables: every kind, sure or not, matched for sure, guessed or
not at all, with and without open invoices of the sender's client."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from rules.classify import Kind, Understanding
from rules.effects import Held, Policy, Status, decide
from rules.match import Match
from rules.model import State

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2027, 4, 7, 9, tzinfo=UTC)
POLICY = Policy(zone=PARIS)  # margin 0.25, human_reply_days 0, grace 3, claim 10
SURE, UNSURE = Decimal("0.6"), Decimal("0.1")
F1, F2 = Held("F-1", State.ACTIVE), Held("F-2", State.ACTIVE)
THREADED = Match(("F-1",), "headers", True, "replies to our reminder of F-1")
GUESSED = Match(("F-1",), "sender", False, "the sender's only open invoice is F-1 (to confirm)")
NONE = Match((), "none", False, "no reminder, invoice number or known sender")
CLAIM_HOLD = NOW + timedelta(days=10)
PROMISE_HOLD = datetime(2027, 4, 23, tzinfo=PARIS)  # 20 April + 3 days of grace
BACK = datetime(2027, 4, 20, tzinfo=PARIS)  # the day after an out-of-office's return


def u(kind: Kind, confidence: Decimal = SURE, when: date | None = None) -> Understanding:
    return Understanding(kind, confidence, ("cue",), when)


# (understanding, match, matched invoices, client's open invoices) -> (status, per invoice: hold, for a person, state)
CASES = [
    # Sure readings applied alone.
    (u(Kind.PAYMENT_CLAIM), THREADED, [F1], [], Status.APPLIED, {"F-1": (CLAIM_HOLD, False, None)}),
    (u(Kind.PROMISE_TO_PAY, when=date(2027, 4, 20)), THREADED, [F1], [], Status.APPLIED,
     {"F-1": (PROMISE_HOLD, False, None)}),
    (u(Kind.AUTO_REPLY, when=date(2027, 4, 19)), THREADED, [F1], [], Status.APPLIED, {"F-1": (BACK, False, None)}),
    (u(Kind.AUTO_REPLY), THREADED, [F1], [], Status.APPLIED, {"F-1": (None, False, None)}),
    (u(Kind.AUTO_REPLY), NONE, [], [F1], Status.APPLIED, {}),  # a robot is not an answer
    # Plans and disputes: the state waits for a person.
    (u(Kind.PAYMENT_PLAN), THREADED, [F1], [], Status.TRIAGE, {"F-1": (None, False, State.PLAN)}),
    (u(Kind.DISPUTE), THREADED, [F1], [], Status.TRIAGE, {"F-1": (None, False, State.DISPUTED)}),
    # Anything else a person wrote: held until a person has read it.
    (u(Kind.HUMAN_REPLY), THREADED, [F1], [], Status.TRIAGE, {"F-1": (None, True, None)}),
    (u(Kind.PROMISE_TO_PAY), THREADED, [F1], [], Status.TRIAGE, {"F-1": (None, True, None)}),  # no date
    (u(Kind.PROMISE_TO_PAY, when=date(2027, 4, 1)), THREADED, [F1], [], Status.TRIAGE,  # a date already gone
     {"F-1": (None, True, None)}),
    (u(Kind.PAYMENT_CLAIM, UNSURE), THREADED, [F1], [], Status.TRIAGE, {"F-1": (None, True, None)}),
    (u(Kind.PROMISE_TO_PAY, UNSURE, date(2027, 4, 20)), THREADED, [F1], [], Status.TRIAGE,
     {"F-1": (None, True, None)}),
    (u(Kind.DISPUTE, UNSURE), THREADED, [F1], [], Status.TRIAGE, {"F-1": (None, True, None)}),
    (u(Kind.PAYMENT_PLAN, UNSURE), THREADED, [F1], [], Status.TRIAGE, {"F-1": (None, True, None)}),
    (u(Kind.AUTO_REPLY, UNSURE), THREADED, [F1], [], Status.TRIAGE, {"F-1": (None, True, None)}),
    # A person reads it: the client's other open invoices wait with the ones it is about ("the
    # 720 one I can pay next week" in the thread of another); a sure reading holds only its own.
    (u(Kind.PAYMENT_PLAN), THREADED, [F1], [F1, F2], Status.TRIAGE,
     {"F-1": (None, False, State.PLAN), "F-2": (None, True, None)}),
    (u(Kind.HUMAN_REPLY), THREADED, [F1], [F1, F2, Held("F-3", State.PAID)], Status.TRIAGE,
     {"F-1": (None, True, None), "F-2": (None, True, None)}),
    (u(Kind.PAYMENT_CLAIM), THREADED, [F1], [F1, F2], Status.APPLIED, {"F-1": (CLAIM_HOLD, False, None)}),
    (u(Kind.AUTO_REPLY), THREADED, [F1], [F1, F2], Status.APPLIED, {"F-1": (None, False, None)}),
    (u(Kind.BOUNCE), THREADED, [F1], [F1, F2], Status.TRIAGE, {"F-1": (None, False, State.BOUNCED)}),
    # Not tied to an invoice for sure: every open invoice of the client waits for a person.
    (u(Kind.PAYMENT_CLAIM), GUESSED, [], [F1], Status.TRIAGE, {"F-1": (None, True, None)}),
    (u(Kind.HUMAN_REPLY), NONE, [], [F1, F2], Status.TRIAGE, {"F-1": (None, True, None), "F-2": (None, True, None)}),
    (u(Kind.DISPUTE), NONE, [], [F1, Held("F-3", State.PAID)], Status.TRIAGE, {"F-1": (None, True, None)}),
    (u(Kind.PAYMENT_CLAIM), NONE, [], [], Status.TRIAGE, {}),  # an unknown sender: nothing to hold
    # Bounces: the invoice is marked, a person fixes the contact.
    (u(Kind.BOUNCE), THREADED, [F1], [], Status.TRIAGE, {"F-1": (None, False, State.BOUNCED)}),
    (u(Kind.BOUNCE), NONE, [], [F1], Status.TRIAGE, {}),
]


@pytest.mark.parametrize(("understood", "match", "matched", "client_open", "status", "expected"), CASES)
def test_policy_table(understood: Understanding, match: Match, matched: list[Held], client_open: list[Held],
                      status: Status, expected: dict[str, tuple[datetime | None, bool, State | None]]) -> None:
    d = decide(understood, match, matched, client_open, POLICY, NOW)
    assert d.status is status, d.reason
    got = {e.number: (e.hold_until, e.until_decided, e.state) for e in d.effects}
    assert got == expected, d.reason


def test_a_paid_invoice_only_records_the_reply() -> None:
    d = decide(u(Kind.DISPUTE), THREADED, [Held("F-1", State.PAID)], [], POLICY, NOW)
    assert [(e.number, e.event, e.state) for e in d.effects] == [("F-1", "reply_recorded", None)]


def test_a_positive_human_reply_days_is_a_timed_hold() -> None:
    """`pause.human_reply_days = 5`: the ladder goes on by itself after five days."""
    d = decide(u(Kind.HUMAN_REPLY), THREADED, [F1], [], Policy(zone=PARIS, human_reply_days=5), NOW)
    assert [(e.hold_until, e.until_decided) for e in d.effects] == [(NOW + timedelta(days=5), False)]


@pytest.mark.parametrize(("margin", "status"), [(Decimal("0.59"), Status.APPLIED), (Decimal("0.61"), Status.TRIAGE)])
def test_the_margin_is_the_configs(margin: Decimal, status: Status) -> None:
    """`understanding.auto_apply_margin` decides what is sure: the same reading, two settings."""
    d = decide(u(Kind.PAYMENT_CLAIM, SURE), THREADED, [F1], [], Policy(zone=PARIS, auto_apply_margin=margin), NOW)
    assert d.status is status


def test_a_delay_warning_changes_nothing() -> None:
    d = decide(u(Kind.BOUNCE), THREADED, [F1], [], POLICY, NOW, delayed_only=True)
    assert d.status is Status.APPLIED and [(e.event, e.state, e.hold_until) for e in d.effects] == [
        ("delivery_delayed", None, None)]


def test_a_claim_naming_a_day_to_come_holds_until_that_day() -> None:
    """"The transfer goes out with our run of the 26th" read as a claim: held to the 26th plus grace,
    not only payment_claim_days (a promise misread as a claim must not bring a reminder before it)."""
    d = decide(u(Kind.PAYMENT_CLAIM, when=date(2027, 4, 26)), THREADED, [F1], [], POLICY, NOW)
    assert [e.hold_until for e in d.effects] == [datetime(2027, 4, 29, tzinfo=PARIS)]


BOTH = Match(("FA-2027-0418", "FA-2027-0419"), "headers", True, "replies to our reminder of FA-2027-0418, FA-2027-0419")
FA418, FA419 = Held("FA-2027-0418", State.ACTIVE), Held("FA-2027-0419", State.ACTIVE)


@pytest.mark.parametrize(("kind", "sentence", "applied"), [
    # The sentence that says it was paid (or will be) names one of the two: the other is another matter.
    (Kind.PAYMENT_CLAIM, "la 418 a été réglée le 2 avril.", False),
    (Kind.PAYMENT_CLAIM, "invoice fa-2027-0418 was released early following our treasury review;", False),
    (Kind.PROMISE_TO_PAY, "0418 goes out on friday.", False),
    # It names both, as people write lists and ranges, or none: it is about both.
    (Kind.PAYMENT_CLAIM, "les factures 418 et 419 ont été payées en un seul virement.", True),
    (Kind.PAYMENT_CLAIM, "les factures 0418 à 0419 ont été réglées le 31/03.", True),
    (Kind.PAYMENT_CLAIM, "le virement est parti hier.", True),
])
def test_a_claim_whose_sentence_names_only_some_of_its_invoices_waits_for_a_person(
        kind: Kind, sentence: str, applied: bool) -> None:
    reading = Understanding(kind, SURE, ("cue",), date(2027, 4, 20), evidence=sentence, sentence=sentence)
    d = decide(reading, BOTH, [FA418, FA419], [FA418, FA419], POLICY, NOW)
    assert (d.status is Status.APPLIED) is applied, d.reason
    if not applied:
        assert all(e.until_decided for e in d.effects), "both wait for the person"
