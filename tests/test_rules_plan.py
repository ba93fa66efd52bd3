"""Amounts and dates of a payment-plan proposal, as clients write them."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from rules.plan import Instalment, amounts, instalments


@pytest.mark.parametrize(("text", "expected"), [
    ("400 € fin avril, 400 € fin mai", ("400.00", "400.00")),
    ("en 3 fois : 1 250,50 euros puis 1 000 €", ("1250.50", "1000.00")),
    ("three instalments of €1,250.50", ("1250.50",)),
    ("EUR 300 now and EUR 300.00 in May", ("300.00", "300.00")),
    ("en 3 fois, merci", ()),
])
def test_amounts(text: str, expected: tuple[str, ...]) -> None:
    assert amounts(text) == tuple(Decimal(e) for e in expected)


def test_instalments_pair_amounts_and_dates_in_order() -> None:
    got = instalments("400 € le 30 avril et 600 € le 31 mai", (date(2027, 4, 30), date(2027, 5, 31)))
    assert got == (Instalment(Decimal("400.00"), date(2027, 4, 30)), Instalment(Decimal("600.00"), date(2027, 5, 31)))
