"""Dates as clients write them, from the day they wrote (Wednesday 7 April 2027)."""

from __future__ import annotations

from datetime import date

import pytest

from bot.understand import find_dates
from rules.when import relative_dates

WED = date(2027, 4, 7)


@pytest.mark.parametrize(("text", "expected"), [
    ("Nous réglerons fin du mois.", date(2027, 4, 30)),
    ("paiement en fin de mois", date(2027, 4, 30)),
    ("We'll pay at month-end.", date(2027, 4, 30)),
    ("réglé fin du mois prochain", date(2027, 5, 31)),
    ("virement fin mai", date(2027, 5, 31)),
    ("by the end of June", date(2027, 6, 30)),
    ("début mai", date(2027, 5, 5)),
    ("early May", date(2027, 5, 5)),
    ("le mois prochain", date(2027, 5, 5)),
    ("mi-mai", date(2027, 5, 15)),
    ("mid June", date(2027, 6, 15)),
    ("fin T2", date(2027, 6, 30)),
    ("at the end of Q2", date(2027, 6, 30)),
    ("vendredi", date(2027, 4, 9)),
    ("vendredi prochain", date(2027, 4, 9)),
    ("next Monday", date(2027, 4, 12)),
    ("mercredi", date(2027, 4, 14)),  # today is Wednesday: the next one
    ("d'ici la semaine prochaine", date(2027, 4, 16)),
    ("fin de la semaine prochaine", date(2027, 4, 16)),
    ("early next week", date(2027, 4, 13)),
    ("en fin de semaine", date(2027, 4, 9)),
    ("this weekend", date(2027, 4, 11)),
    ("sous 15 jours", date(2027, 4, 22)),
    ("dans deux semaines", date(2027, 4, 21)),
    ("within 5 working days", date(2027, 4, 14)),
    ("sous huitaine", date(2027, 4, 15)),
    ("sous 48h", date(2027, 4, 9)),
    ("demain", date(2027, 4, 8)),
    ("le virement part dans la journée", date(2027, 4, 7)),
    ("ce sera fait le 30.", date(2027, 4, 30)),
    ("le 2", date(2027, 5, 2)),  # the 2nd is past this month: next month's
    ("by the 20th", date(2027, 4, 20)),
    ("after the 15th", date(2027, 4, 16)),
    ("on payday, which is the 28th", date(2027, 4, 28)),
])
def test_relative_dates(text: str, expected: date) -> None:
    assert find_dates(text, WED)[0] == expected


@pytest.mark.parametrize("text", [
    "à réception de notre paiement client", "dès que possible", "in our next payment run",
    "we returned the 2 invoices", "3 damaged units on the 3 pallets", "FA-2027-0412", "mon virement",
])
def test_no_date_is_made_up(text: str) -> None:
    assert relative_dates(text, WED) == ()


def test_a_past_day_without_a_year_is_not_next_years() -> None:
    """"mandatée le 2 avril", written on 7 April, is a past date, not 2 April 2028."""
    assert find_dates("Votre facture a été mandatée le 2 avril.", WED) == ()


def test_the_order_written_wins() -> None:
    assert find_dates("Le 0408 est payé ; le reste partira le 30, au plus tard début mai.", WED) == (
        date(2027, 4, 30), date(2027, 5, 5))


@pytest.mark.parametrize(("text", "expected"), [
    ("virement le 30/04", (date(2027, 4, 30),)),
    ("payé le 15/04/2027", (date(2027, 4, 15),)),
    ("règlement au 15.04.27", (date(2027, 4, 15),)),
    ("le 15.04", (date(2027, 4, 15),)),  # a day and a month, not a quarter past three (dateparser's reading)
    ("on 04/30", (date(2027, 4, 30),)),  # no 30th month: month first
    ("by 5/13", (date(2027, 5, 13),)),
    ("le 07/04", (date(2027, 4, 7),)),  # today itself
    ("le 03/04", ()),  # past this year; next year's is beyond the 300 days a promise may run
    ("due 2027-05-02", (date(2027, 5, 2),)),
    ("le 31/02", ()), ("le 00/04", ()), ("le 13/13/2027", ()), ("2027-02-30", ()),
])
def test_dates_in_digits(text: str, expected: tuple[date, ...]) -> None:
    assert find_dates(text, WED) == expected


def test_dates_in_digits_with_a_year_read_as_dateparser_reads_them() -> None:
    """Digits alone skip dateparser (its reading cost a millisecond a message): with a year, the
    two agree on every day and month, either order, separators and two- or four-digit years."""
    from bot.understand import _date_parser, _digit_date

    for first in range(1, 32):
        for second in range(1, 32):
            for fragment in (f"{first}/{second}/2027", f"{first:02d}.{second:02d}.2027", f"{first}/{second}/28"):
                parsed = _date_parser(WED).get_date_data(fragment).date_obj
                assert _digit_date(fragment, WED) == (parsed.date() if parsed else None), fragment
