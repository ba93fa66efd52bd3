"""The escalation ladder: when each stage goes out, tested with literal dates and properties."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.calendar import SendingCalendar
from rules.model import InvoiceView, Ladder, Stage, StageDone, State
from rules.schedule import plan, priority_key
from tests.conftest import PARIS, at

EASTER_MONDAY_2027 = date(2027, 3, 29)
CAL = SendingCalendar(zone=PARIS, holidays=frozenset({EASTER_MONDAY_2027, date(2027, 5, 1)}))
LADDER = Ladder((Stage("reminder", "reminder", 3), Stage("second_reminder", "second_reminder", 10),
                 Stage("formal_notice", "formal_notice", 15, penalties=True)))



def inv(due: str = "2027-03-31", done: tuple[tuple[int, str], ...] = (), **kw: object) -> InvoiceView:
    return InvoiceView(number="F-1", due_date=date.fromisoformat(due), amount_due=Decimal("100.00"),
                       done=tuple(StageDone(i, at(t)) for i, t in done), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("view", "now", "send", "skipped", "next_at"), [
    # due Wed 31 March + 3 days = Saturday 3 April: waits for Monday's window
    (inv(), "2027-04-02T10:00", None, (), "2027-04-05T09:00"),
    (inv(), "2027-04-03T10:00", None, (), "2027-04-05T09:00"),
    (inv(), "2027-04-05T08:59", None, (), "2027-04-05T09:00"),
    (inv(), "2027-04-05T10:00", 0, (), "2027-04-05T10:00"),
    (inv(), "2027-04-05T17:00", None, (), "2027-04-06T09:00"),
    # due Thu 25 March + 3 = Sunday 28; Monday 29 is Easter Monday: Tuesday
    (inv("2027-03-25"), "2027-03-29T10:00", None, (), "2027-03-30T09:00"),
    (inv("2027-03-25"), "2027-03-30T09:00", 0, (), "2027-03-30T09:00"),
    # the second stage counts from the day the first was really sent
    (inv(done=((0, "2027-04-05T10:00"),)), "2027-04-15T09:59", None, (), "2027-04-15T10:00"),
    (inv(done=((0, "2027-04-05T10:00"),)), "2027-04-15T10:00", 1, (), "2027-04-15T10:00"),
    # a late start (an invoice imported long overdue, a daemon that was down) sends the next
    # stage, never a jump: "despite our reminders" must be true
    (inv(), "2027-06-01T10:00", 0, (), "2027-06-01T10:00"),
    (inv(), "2027-04-14T10:00", 0, (), "2027-04-14T10:00"),
    (inv(done=((0, "2027-04-05T10:00"),)), "2027-09-01T10:00", 1, (), "2027-09-01T10:00"),
    # the previous stage still in the outbox (deferred by the server): the next one waits for it
    (InvoiceView("F-1", date(2027, 3, 31), Decimal("100.00"),
                 done=(StageDone(0, at("2027-04-05T10:00"), delivered=False),)), "2027-09-01T10:00", None, (), None),
    # paused time does not count: the stage due during the hold goes out when it ends
    (inv(done=((0, "2027-04-05T10:00"),), hold_until=at("2027-05-20T00:00")), "2027-06-01T10:00", 1, (),
     "2027-06-01T10:00"),
    (inv(done=((0, "2027-04-05T10:00"),), hold_until=at("2027-06-20T00:00")), "2027-06-01T10:00", None, (),
     "2027-06-21T09:00"),
])
def test_plan_table(view: InvoiceView, now: str, send: int | None, skipped: tuple[int, ...],
                    next_at: str | None) -> None:
    """Each row: what is sent at `now`, and when the next action is."""
    p = plan(view, LADDER, CAL, at(now))
    assert (p.send, p.skipped) == (send, skipped)
    assert p.next_at == (at(next_at) if next_at else None)


@pytest.mark.parametrize("view", [
    inv(state=State.PAID), inv(state=State.DISPUTED), inv(state=State.PLAN), inv(state=State.BOUNCED),
    InvoiceView("F-2", date(2027, 3, 31), Decimal("0.00")),
])
def test_nothing_for_settled_or_held_states(view: InvoiceView) -> None:
    """Paid, disputed, plan, bounced or nothing due: no reminder, whatever the date."""
    assert plan(view, LADDER, CAL, at("2027-09-01T10:00")).send is None


def test_finished_ladder_asks_for_a_person() -> None:
    """After the last stage the next action is manual follow-up, never a fourth email."""
    view = inv(done=((0, "2027-04-05T10:00"), (1, "2027-04-15T10:00"), (2, "2027-04-30T10:00")))
    p = plan(view, LADDER, CAL, at("2027-12-01T10:00"))
    assert (p.send, p.next_action) == (None, "manual")


def test_priority_largest_amount_then_oldest() -> None:
    keys = [("A", Decimal(10), date(2027, 1, 1)), ("B", Decimal(500), date(2027, 3, 1)),
            ("C", Decimal(500), date(2027, 2, 1))]
    ordered = sorted(keys, key=lambda k: priority_key(k[1], k[2], k[0]))
    assert [k[0] for k in ordered] == ["C", "B", "A"]


@settings(max_examples=150, deadline=None)
@given(
    due=st.dates(min_value=date(2026, 1, 1), max_value=date(2028, 12, 31)),
    delays=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=5),
    start=st.integers(min_value=-10, max_value=120),
    hours=st.lists(st.integers(min_value=0, max_value=23), min_size=1, max_size=3),
    step=st.integers(min_value=1, max_value=6),  # 7 could tick on Saturdays only
)
def test_ladder_properties(due: date, delays: list[int], start: int, hours: list[int], step: int) -> None:
    """Ticking at arbitrary moments: no stage twice, none early, none jumped, none outside the
    window, and every stage is eventually sent."""
    ladder = Ladder(tuple(Stage(f"s{i}", f"s{i}", d) for i, d in enumerate(delays)))
    view = InvoiceView("F-9", due, Decimal("50.00"))
    day = due + timedelta(days=start)
    end = due + timedelta(days=start + sum(delays) + 60)
    while day <= end:
        for h in sorted({*hours, 10}):  # at least one tick inside the window each day
            now = datetime(day.year, day.month, day.day, h, tzinfo=PARIS)
            p = plan(view, ladder, CAL, now)
            if p.send is None:
                continue
            last = max((d.index for d in view.done), default=-1)
            assert p.send == last + 1, "a stage sent twice, out of order, or jumped over"
            assert p.skipped == (), "a stage passed over"
            assert CAL.is_allowed(now), "sent outside the window or on a holiday"
            base = (datetime.combine(due, datetime.min.time(), PARIS) if last < 0
                    else max(d.at for d in view.done if d.index == last))
            earliest = base + timedelta(days=sum(delays[last + 1 if last >= 0 else 0:p.send + 1]))
            assert now >= earliest, "sent before its time"
            view = InvoiceView(view.number, view.due_date, view.amount_due,
                               done=(*view.done, *(StageDone(k, now) for k in p.skipped), StageDone(p.send, now)))
        day += timedelta(days=step)
    done = sorted(d.index for d in view.done)
    assert done == list(range(len(delays))), "a stage was never reached"
