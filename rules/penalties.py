"""Late-payment penalties under French commercial law (Code de commerce L441-10, directive 2011/7/EU).

Interest is simple interest on the unpaid amount including VAT, from the day after the due date
to the computation date inclusive, over 365 days, at the ECB main refinancing rate in force on
1 January (for January-June) or 1 July (for July-December) plus `margin_points`, or at a
contractual rate, which may not be below three times the legal interest rate. Each half-year
crossed is counted at its own rate. The sum is rounded half-up to the cent. Business clients
also owe a fixed recovery indemnity (40 EUR, D441-5) per invoice; consumers never do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

HalfYear = tuple[int, int]  # (year, 1 or 2)
CENT = Decimal("0.01")
_HALF_YEAR = re.compile(r"^(\d{4})-H([12])$")


class MissingRateError(ValueError):
    """A half-year the computation crosses has no rate in the config table."""

    def __init__(self, table: str, half: HalfYear) -> None:
        self.half = half
        super().__init__(f"penalties.{table} has no rate for {format_half_year(half)}: add "
                         f'"{format_half_year(half)}" = "<rate>" to the table')


class ContractRateTooLowError(ValueError):
    """The contractual rate is below three times the legal interest rate of a half-year."""


def parse_half_year(text: str) -> HalfYear:
    m = _HALF_YEAR.match(text)
    if not m:
        raise ValueError(f"not a half-year: {text!r} (expected e.g. 2025-H1)")
    return int(m.group(1)), int(m.group(2))


def format_half_year(half: HalfYear) -> str:
    return f"{half[0]}-H{half[1]}"


def half_year_of(day: date) -> HalfYear:
    return day.year, 1 if day.month <= 6 else 2


def _half_year_end(day: date) -> date:
    return date(day.year, 6, 30) if day.month <= 6 else date(day.year, 12, 31)


@dataclass(frozen=True)
class PenaltyPolicy:
    ecb_rates: Mapping[HalfYear, Decimal] = field(default_factory=dict)
    margin_points: Decimal = Decimal(10)
    contract_rate: Decimal | None = None
    legal_rates: Mapping[HalfYear, Decimal] = field(default_factory=dict)
    fixed_indemnity: Decimal = Decimal("40.00")

    def annual_rate(self, half: HalfYear) -> Decimal:
        """The annual rate in percent applying to `half`."""
        if self.contract_rate is not None:
            legal = self.legal_rates.get(half)
            if legal is None:
                raise MissingRateError("legal_rates", half)
            if self.contract_rate < 3 * legal:
                raise ContractRateTooLowError(
                    f"penalties.contract_rate = {self.contract_rate} % is below three times the legal "
                    f"interest rate of {format_half_year(half)} (3 x {legal} % = {3 * legal} %), "
                    "the floor set by L441-10")
            return self.contract_rate
        ecb = self.ecb_rates.get(half)
        if ecb is None:
            raise MissingRateError("ecb_rates", half)
        return ecb + self.margin_points


@dataclass(frozen=True)
class Segment:
    """The days of one half-year and the interest they bear (unrounded)."""

    first: date
    last: date
    days: int
    rate: Decimal
    interest: Decimal


@dataclass(frozen=True)
class Penalties:
    principal: Decimal
    due_date: date
    on_date: date
    days: int
    segments: tuple[Segment, ...]
    interest: Decimal  # rounded half-up to the cent
    indemnity: Decimal
    contractual: bool

    @property
    def total(self) -> Decimal:
        return self.interest + self.indemnity

    @property
    def rates(self) -> tuple[Decimal, ...]:
        return tuple(dict.fromkeys(s.rate for s in self.segments))


def compute(principal: Decimal, due_date: date, on_date: date, policy: PenaltyPolicy,
            business_client: bool = True) -> Penalties:
    """Penalties owed on `principal` (incl. VAT) unpaid since `due_date`, as of `on_date`."""
    segments: list[Segment] = []
    day = due_date + timedelta(days=1)
    while day <= on_date:
        last = min(_half_year_end(day), on_date)
        days = (last - day).days + 1
        rate = policy.annual_rate(half_year_of(day))
        segments.append(Segment(day, last, days, rate, principal * rate * days / Decimal(36500)))
        day = last + timedelta(days=1)
    interest = sum((s.interest for s in segments), Decimal(0)).quantize(CENT, rounding=ROUND_HALF_UP)
    owed = principal > 0 and on_date > due_date
    return Penalties(
        principal=principal,
        due_date=due_date,
        on_date=on_date,
        days=max((on_date - due_date).days, 0),
        segments=tuple(segments),
        interest=interest if owed else Decimal("0.00"),
        indemnity=policy.fixed_indemnity if (business_client and owed) else Decimal("0.00"),
        contractual=policy.contract_rate is not None,
    )
