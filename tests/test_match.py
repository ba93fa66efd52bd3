"""Threading a message to its invoices: headers, tokens, numbers as people write them, sender."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from bot.reasons import plain_text
from rules.match import Known, NameIndex, digits, match, normalise

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
    assert m.numbers == () and not m.sure and "2 open invoices" in plain_text(m.reason)


OWN = ("FA-2027-0402", "FA-2027-0403", "FA-2027-0404", "FA-2027-0418", "FA-2027-0419", "FA-2027-0420")


def thread_known(sender_open: tuple[str, ...] = OWN) -> Known:
    """A client with six open invoices; our reminder of FA-2027-0402 is <r2@acme.example>."""
    base = known()
    return Known(by_message_id={"<r2@acme.example>": ("FA-2027-0402",)}, by_token={},
                 by_normalised={**base.by_normalised, **{normalise(n): n for n in OWN}},
                 by_digits=base.by_digits, sender_open=sender_open, siblings={"FA-2027-0402": OWN})


@pytest.mark.parametrize(("refs", "text", "numbers"), [
    ([], "les factures 402, 403 et 404 sont réglées", ("FA-2027-0402", "FA-2027-0403", "FA-2027-0404")),
    ([], "Les factures 0418 à 0420 ont été payées", ("FA-2027-0418", "FA-2027-0419", "FA-2027-0420")),
    ([], "virement pour fa 2027 403", ("FA-2027-0403",)),
    (["<r2@acme.example>"], "payé, ainsi que la facture 404", ("FA-2027-0402", "FA-2027-0404")),
    (["<r2@acme.example>"], "invoices 418 and 419 too", ("FA-2027-0402", "FA-2027-0418", "FA-2027-0419")),
])
def test_numbers_as_people_shorten_them(refs: list[str], text: str, numbers: tuple[str, ...]) -> None:
    """Only among the invoices of the client the message is about (the sender's, the thread's)."""
    m = match(refs, [], ["", text], thread_known())
    assert (m.numbers, m.sure) == (numbers, True), m.reason


@pytest.mark.parametrize(("text", "numbers"), [
    ("concernant la n°2027/0419", ("FA-2027-0419",)),
    ("La 0403 et la 0404 partiront le 30", ("FA-2027-0403", "FA-2027-0404")),
    ("réglé, réf. #0418", ("FA-2027-0418",)),
])
def test_a_number_without_an_invoice_word_is_a_guess_for_a_person(text: str, numbers: tuple[str, ...]) -> None:
    """"n° 12 rue…", "Commande no 45": a bare number may be anything; the client's invoice it fits is
    suggested, not taken (with our reminder's thread it is, among that client's invoices)."""
    m = match([], [], ["", text], thread_known())
    assert (m.numbers, m.sure) == (numbers, False), m.reason
    threaded = match(["<r2@acme.example>"], [], ["", text], thread_known())
    assert threaded.sure and set(numbers) <= set(threaded.numbers)


def test_a_short_number_of_another_client_is_never_taken() -> None:
    """"facture 403" from a sender whose client has no invoice 403: no match, a person decides."""
    m = match([], [], ["", "la facture 403 est réglée"], thread_known(sender_open=("FA-2027-0410", "FA-2027-0411")))
    assert m.numbers == () and not m.sure


@pytest.mark.parametrize("text", ["réglé le 30 avril, 1200 € pour les 3 factures", "facture 0419 : 1500 € réglés",
                                  "n° 12 rue des Lilas", "Commande no 45"])
def test_an_amount_an_address_or_an_order_is_not_an_invoice(text: str) -> None:
    m = match([], [], ["", text], thread_known())
    assert set(m.numbers) <= {"FA-2027-0419"}, m.reason


@pytest.mark.parametrize(("refs", "text", "numbers"), [
    (["<r2@acme.example>"], "vir fait hier soir pr les 418 a 420", ("FA-2027-0402", "FA-2027-0418", "FA-2027-0419",
                                                                  "FA-2027-0420")),
    (["<r2@acme.example>"], "0403 and 0404 are the same job", ("FA-2027-0402", "FA-2027-0403", "FA-2027-0404")),
    ([], "renvoyez-moi les factures FA-2027-0402, 0403 et 0404", ("FA-2027-0402", "FA-2027-0403", "FA-2027-0404")),
])
def test_bare_numbers_among_the_invoices_of_a_client_already_known(refs: list[str], text: str,
                                                                    numbers: tuple[str, ...]) -> None:
    """Tied to a client by our thread or by a full number it cites, a message's bare numbers are
    read among that client's invoices (from a sender the ledger does not know)."""
    m = match(refs, [], ["", text], thread_known(sender_open=()))
    assert (m.numbers, m.sure) == (numbers, True), m.reason


CLIENTS = {1: "Greenleaf Organics", 2: "Paul Marchand", 3: "Boulangerie Martin", 4: "Garage Leroux SARL",
           5: "Pharmacie Rose", 6: "Fleuriste Rose & Lys", 7: "Auto-école Vitesse"}


@pytest.mark.parametrize(("texts", "client"), [
    (["Greenleaf - bank details query", "Margaret from Greenleaf here"], 1),  # a word of its name alone
    (["facture 0435 Paul Marchand", "Bonsoir, je vous écris de ma nouvelle adresse"], 2),  # the whole name
    (["", "De la part du GARAGE LEROUX, voici le virement"], 4),
    (["", "Ecrit pour l'auto-ecole vitesse"], 7),  # accents and case as people drop them
    (["", "Paul a eu un petit retard, Martin vous rappelle"], None),  # first names, words of the dictionary
    (["", "la rose est jolie"], None),  # a word two clients' names share
    (["", "Greenleaf and Leroux"], None),  # two clients named: a person tells
])
def test_the_client_an_unknown_sender_names(texts: list[str], client: int | None) -> None:
    assert NameIndex.of(CLIENTS).named(texts) == client


def test_an_unknown_sender_naming_a_client_is_a_guess_for_a_person() -> None:
    named = replace(known(), named="Greenleaf Organics", named_open=("F-2026-001", "F-2026-010"))
    m = match([], [], ["", "I went to pay invoice 10 but the account name does not match"], named)
    assert (m.numbers, m.method, m.sure) == (("F-2026-010",), "name", False), m.reason
    m = match([], [], ["", "Can you confirm your IBAN?"], named)
    assert (m.numbers, m.method, m.sure) == ((), "name", False) and "Greenleaf Organics" in m.reason
    # A number it cites in full still wins, and a known sender's own invoices come first.
    assert match([], [], ["", "facture F-2026-002"], named).numbers == ("F-2026-002",)


def test_a_number_read_from_its_digits_alone_is_not_taken_from_another_client() -> None:
    """A payment advice's own reference ("advice 2026-010") or a date in a file name is not an
    invoice of another client; written in full, another client's number is meant (an accountant)."""
    clients = {"F-2026-001": 1, "F-2026-002": 1, "F-2026-010": 2}
    k = replace(known(), client_of=clients)
    m = match([], [], ["Payment advice 2026-010", "we settled F-2026-001 and F-2026-002"], k)
    assert (m.numbers, m.sure) == (("F-2026-001", "F-2026-002"), True) and "F-2026-010" in m.reason
    m = match([], [], ["", "paid F-2026-001", "remittance_2026010.pdf"], replace(k, sender_open=("F-2026-001",)))
    assert m.numbers == ("F-2026-001",)
    # Written in full by someone who is the contact of client 1: it writes for client 2.
    m = match([], [], ["", "pour le compte de notre autre client, la facture F-2026-010 est réglée"],
              replace(k, sender_open=("F-2026-001",)))
    assert (m.numbers, m.sure) == (("F-2026-010",), True)
    # A stranger citing two clients' invoices in full: a person decides.
    m = match([], [], ["", "F-2026-001 and F-2026-010 are paid"], k)
    assert (m.numbers, m.sure) == (("F-2026-001", "F-2026-010"), False)


def test_the_client_whose_contacts_write_from_a_senders_own_domain() -> None:
    """A colleague at the client's own domain is a guess for that client; a domain several clients
    share, or a public one, says nothing."""
    from rules.match import domain_index

    index = domain_index([(1, "admin@oakridge-dental.example"), (2, "a@shared.example"), (3, "b@shared.example"),
                          (4, "someone@gmail.com")])
    assert index == {"oakridge-dental.example": 1}


def test_a_subject_naming_several_invoices_over_a_text_about_one() -> None:
    """"RE: Invoices F-2026-001 and F-2026-002" over "your question about F-2026-002": the text says which."""
    k = replace(known(), siblings={"F-2026-001": ("F-2026-001", "F-2026-002"),
                                   "F-2026-002": ("F-2026-001", "F-2026-002")})
    m = match([], [], ["RE: Invoices F-2026-001 and F-2026-002", "About the VAT on invoice F-2026-002: we check."], k)
    assert (m.numbers, m.sure) == (("F-2026-002",), True)
    assert "the subject also names F-2026-001" in plain_text(m.reason)
    m = match([], [], ["RE: Invoices F-2026-001 and F-2026-002", "Both are paid."], k)
    assert m.numbers == ("F-2026-001", "F-2026-002"), "a text that names none leaves the subject's"
    m = match([], [], ["RE: Rappel facture F-2026-001", "F-2026-002 est payée aussi."], k)
    assert set(m.numbers) == {"F-2026-001", "F-2026-002"}, "one number in the subject: kept"


AMOUNTS = {"F-2026-001": (Decimal("2400.80"), Decimal("2400.80")), "F-2026-002": (Decimal("350.00"), Decimal("350.00")),
           "F-2026-010": (Decimal("1200.20"), Decimal("700.20"))}  # 500 of F-2026-010 already paid
THREE = ("F-2026-001", "F-2026-002", "F-2026-010")


@pytest.mark.parametrize(("refs", "texts", "numbers", "sure"), [
    # The thread is one invoice's, the subject cites three, the text writes the thread's amount: that one, sure.
    (["<r1@acme.example>"], ["RE: Rappel factures F-2026-001, F-2026-002, F-2026-010",
                             "La facture de 2 400,80 € partira avec le virement du 20."], ("F-2026-001",), True),
    # A reminder for three, a text about the amount of one: that one, for a person to confirm.
    (["<r3@acme.example>"], ["RE: Rappel", "Concernant la facture de 350,00 €, elle part vendredi."],
     ("F-2026-002",), False),
    (["<r3@acme.example>"], ["RE: Rappel", "The €700.20 still due goes out on Friday."], ("F-2026-010",), False),
    # The subject cites three, the text the amount of one: a guess.
    ([], ["RE: Factures F-2026-001, F-2026-002 et F-2026-010", "Pour celle de 350 €, c'est réglé."],
     ("F-2026-002",), False),
    # No amount, an amount none has, or the amounts of two: every invoice, as before.
    (["<r3@acme.example>"], ["RE: Rappel", "Tout part vendredi."], THREE, True),
    (["<r3@acme.example>"], ["RE: Rappel", "Nous avons viré 99,00 € d'acompte."], THREE, True),
    (["<r3@acme.example>"], ["RE: Rappel", "Les factures de 350,00 € et 700,20 € partent vendredi."], THREE, True),
])
def test_a_message_about_several_invoices_that_writes_the_amount_of_one(
        refs: list[str], texts: list[str], numbers: tuple[str, ...], sure: bool) -> None:
    """People name an invoice by its amount ("la facture de 350 €"): among the several a thread or
    a subject is about, the one whose amount (in full or still due) the text writes."""
    k = replace(known(), by_message_id={"<r1@acme.example>": ("F-2026-001",), "<r3@acme.example>": THREE},
                siblings=dict.fromkeys(THREE, THREE), amounts=AMOUNTS)
    m = match(refs, [], texts, k)
    assert (m.numbers, m.sure) == (numbers, sure), m.reason
