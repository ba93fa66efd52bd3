"""Late-payment penalties (L441-10): worked examples, half-year split, floors and rounding."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.penalties import (
    ContractRateTooLowError,
    MissingRateError,
    PenaltyPolicy,
    compute,
    parse_half_year,
)

D = Decimal
ECB = {(2025, 1): D("3.15"), (2025, 2): D("2.15"), (2026, 1): D("2.15")}
POLICY = PenaltyPolicy(ecb_rates=ECB)


@pytest.mark.parametrize(("principal", "due", "on", "interest", "days"), [
    # 40 days in 2025-H2 at 2.15 + 10 = 12.15 %: 1234.56 x 12.15 % x 40 / 365 = 16.4378...
    ("1234.56", date(2025, 9, 22), date(2025, 11, 1), "16.44", 40),
    # 15 days at 13.15 % (H1) + 15 days at 12.15 % (H2): 5.4041 + 4.9932
    ("1000.00", date(2025, 6, 15), date(2025, 7, 15), "10.40", 30),
    # the due date itself bears nothing; the day after does
    ("1000.00", date(2025, 3, 10), date(2025, 3, 10), "0.00", 0),
    ("1000.00", date(2025, 3, 10), date(2025, 3, 11), "0.36", 1),
])
def test_worked_examples(principal: str, due: date, on: date, interest: str, days: int) -> None:
    p = compute(D(principal), due, on, POLICY)
    assert (p.interest, p.days) == (D(interest), days)


def test_half_year_segments_use_their_own_rate() -> None:
    p = compute(D("1000.00"), date(2025, 6, 15), date(2025, 7, 15), POLICY)
    assert [(s.first, s.last, s.days, s.rate) for s in p.segments] == [
        (date(2025, 6, 16), date(2025, 6, 30), 15, D("13.15")),
        (date(2025, 7, 1), date(2025, 7, 15), 15, D("12.15")),
    ]


def test_rounds_half_up_to_the_cent() -> None:
    """18.25 at 10 % for one day is exactly 0.005: half-up gives 0.01 (banker's rounding would give 0)."""
    policy = PenaltyPolicy(ecb_rates={(2025, 1): D(0)}, margin_points=D(10))
    assert compute(D("18.25"), date(2025, 2, 1), date(2025, 2, 2), policy).interest == D("0.01")


def test_indemnity_for_business_clients_only() -> None:
    business = compute(D("100.00"), date(2025, 2, 1), date(2025, 3, 1), POLICY, business_client=True)
    consumer = compute(D("100.00"), date(2025, 2, 1), date(2025, 3, 1), POLICY, business_client=False)
    assert (business.indemnity, consumer.indemnity) == (D("40.00"), D("0.00"))
    assert business.total == business.interest + D("40.00")


def test_missing_half_year_is_named() -> None:
    with pytest.raises(MissingRateError, match="2026-H2"):
        compute(D("100.00"), date(2026, 6, 1), date(2026, 8, 1), POLICY)


def test_contract_rate_replaces_ecb_and_has_a_floor() -> None:
    legal = {(2025, 2): D("2.76")}
    ok = PenaltyPolicy(contract_rate=D("9.00"), legal_rates=legal)
    p = compute(D("1000.00"), date(2025, 7, 1), date(2025, 7, 31), ok)
    assert p.contractual and p.rates == (D("9.00"),) and p.interest == D("7.40")
    low = PenaltyPolicy(contract_rate=D("8.00"), legal_rates=legal)  # 3 x 2.76 = 8.28
    with pytest.raises(ContractRateTooLowError, match="8.28"):
        compute(D("1000.00"), date(2025, 7, 1), date(2025, 7, 31), low)


@pytest.mark.parametrize("text", ["2025-H3", "2025H1", "25-H1", ""])
def test_half_year_keys_are_checked(text: str) -> None:
    with pytest.raises(ValueError, match="half-year"):
        parse_half_year(text)


RATES = {(y, h): D("2.50") for y in range(2020, 2031) for h in (1, 2)}


@given(
    cents=st.integers(min_value=1, max_value=10**10),
    due=st.dates(min_value=date(2020, 1, 1), max_value=date(2029, 12, 31)),
    a=st.integers(min_value=0, max_value=700), b=st.integers(min_value=0, max_value=700),
)
def test_interest_never_decreases_with_time(cents: int, due: date, a: int, b: int) -> None:
    from datetime import timedelta

    policy = PenaltyPolicy(ecb_rates=RATES)
    principal = D(cents) / 100
    early, late = sorted((a, b))
    p1 = compute(principal, due, min(due + timedelta(days=early), date(2030, 12, 31)), policy)
    p2 = compute(principal, due, min(due + timedelta(days=late), date(2030, 12, 31)), policy)
    assert p1.interest <= p2.interest
    assert p2.interest == p2.interest.quantize(D("0.01"))
