"""Threading a message to its invoices: headers, tokens, numbers as people write them, sender."""

from __future__ import annotations

import pytest

from rules.match import Known, digits, match, normalise

NUMBERS = ["F-2026-001", "F-2026-002", "F-2026-010", "INV-7788", "A-12345", "B-12345", "F-9"]


def known(sender_open: tuple[str, ...] = ()) -> Known:
    by_digits: dict[str, tuple[str, ...]] = {}
    for n in NUMBERS:
        by_digits[digits(n)] = (*by_digits.get(digits(n), ()), n)
    return Known(by_message_id={"<r1@acme.example>": ("F-2026-001",)}, by_token={"a1b2c3d4e5": ("INV-7788",)},
                 by_normalised={normalise(n): n for n in NUMBERS}, by_digits=by_digits, sender_open=sender_open)


@pytest.mark.parametrize(("refs", "tokens", "texts", "numbers", "method", "sure"), [
    (["<r1@acme.example>"], [], ["Re: Rappel", "ok"], ("F-2026-001",), "headers", True),
    (["<r1@acme.example>"], [], ["Re: Rappel", "virement pour F-2026-001 et F-2026-002"],
     ("F-2026-001", "F-2026-002"), "headers", True),
    ([], ["a1b2c3d4e5"], ["Re: relance", "payé"], ("INV-7788",), "token", True),
    ([], [], ["Facture F2026001", ""], ("F-2026-001",), "number", True),
    ([], [], ["Facture F-9", "réglée"], ("F-9",), "number", True),  # a short number, as small companies use
    ([], [], ["Re: votre relance", "concernant la facture n° 2026-010"], ("F-2026-010",), "number", True),
    ([], [], ["", "invoices F-2026-001, f 2026 002 and INV 7788 paid"],
     ("F-2026-001", "F-2026-002", "INV-7788"), "number", True),
    ([], [], ["", "remittance"], (), "none", False),
    ([], [], ["", "paiement de la facture 12345"], (), "none", False),  # A-12345 or B-12345?
    ([], [], ["", "Tel 01 23 45 67 89, code 75008"], (), "none", False),  # numbers that are not invoices
])
def test_match_table(refs: list[str], tokens: list[str], texts: list[str], numbers: tuple[str, ...], method: str,
                     sure: bool) -> None:
    m = match(refs, tokens, texts, known())
    assert (m.numbers, m.method, m.sure) == (numbers, method, sure), m.reason


def test_the_senders_only_open_invoice_is_a_guess_for_a_person() -> None:
    m = match([], [], ["Re: relance", "c'est fait"], known(sender_open=("F-2026-002",)))
    assert m.numbers == ("F-2026-002",) and not m.sure


def test_several_open_invoices_and_no_number_is_no_match() -> None:
    m = match([], [], ["", "c'est fait"], known(sender_open=("F-2026-001", "F-2026-002")))
    assert m.numbers == () and not m.sure and "2 open invoices" in m.reason
