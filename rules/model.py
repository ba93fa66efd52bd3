"""The values the rules work on: frozen dataclasses, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum


class State(StrEnum):
    """The stored state of an invoice. `paused` is derived: active with a hold in the future."""

    ACTIVE = "active"
    PAUSED = "paused"
    DISPUTED = "disputed"
    PLAN = "plan"
    PAID = "paid"
    BOUNCED = "bounced"


@dataclass(frozen=True)
class Stage:
    """One rung of the escalation ladder."""

    name: str
    template: str
    delay_days: int  # the first stage: after the due date; later ones: after the previous one sent
    attach_invoice: bool = False
    penalties: bool = False


@dataclass(frozen=True)
class Ladder:
    stages: tuple[Stage, ...]

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, index: int) -> Stage:
        return self.stages[index]


@dataclass(frozen=True, slots=True)
class StageDone:
    """A stage already recorded for an invoice: sent (or uncertain, which counts as sent), still
    in the outbox (`delivered` false), or passed over by a late start of an earlier version."""

    index: int
    at: datetime
    delivered: bool = True


@dataclass(frozen=True, slots=True)
class InvoiceView:
    """What the scheduler needs to know of one invoice."""

    number: str
    due_date: date
    amount_due: Decimal
    state: State = State.ACTIVE
    hold_until: datetime | None = None  # end of the last pause (past or future), or None
    held_for_person: bool = False  # a client's message waits for a person: nothing goes out until then
    done: tuple[StageDone, ...] = ()
