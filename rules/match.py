"""Which invoices a message is about, in order of evidence:

1. `In-Reply-To` / `References` naming our reminders' Message-IDs;
2. a reply token in the address it was sent to (`ar+TOKEN@...`);
3. invoice numbers in the subject, body or attachment names, normalised ("F-2026-001",
   "F2026001", "facture n° 2026-001");
4. the sender's client, when it has exactly one open invoice.

When the evidence is weak or conflicting the result says so, and the message goes to a person:
a wrong match is worse than no match."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_CANDIDATE = re.compile(r"[A-Za-z]{0,6}[\s\-_/.°#:]{0,4}(?:n[o°]?\s*)?\d(?:[\dA-Za-z\-_/.]| (?=\d))*")


_NOT_ALNUM = re.compile(r"[^0-9A-Z]")
_NOT_DIGIT = re.compile(r"\D")
_PREFIX = re.compile(r"^[A-Za-z]{0,6}[\s\-_/.°#:]{0,4}(?:n[o°]?\s*)?")  # "facture n° ", "F-", "Inv#"


def normalise(number: str) -> str:
    return _NOT_ALNUM.sub("", number.upper())


def digits(number: str) -> str:
    return _NOT_DIGIT.sub("", number)


@dataclass(frozen=True)
class Known:
    """What the store knows, as lookup tables (built by the caller)."""

    by_message_id: Mapping[str, tuple[str, ...]]  # our reminders' Message-IDs -> invoice numbers
    by_token: Mapping[str, tuple[str, ...]]
    by_normalised: Mapping[str, str]  # normalise(number) -> number
    by_digits: Mapping[str, tuple[str, ...]]  # digits(number) -> numbers (ambiguous when several)
    sender_open: tuple[str, ...] = ()  # open invoices of the sender's client


@dataclass(frozen=True)
class Match:
    numbers: tuple[str, ...]
    method: str  # headers | token | number | sender | none
    sure: bool
    reason: str


def find_numbers(texts: Sequence[str], known: Known) -> tuple[list[str], list[str]]:
    """Invoice numbers cited in `texts`: (certain, ambiguous digit-only hits)."""
    found: list[str] = []
    ambiguous: list[str] = []
    for text in texts:
        for m in _CANDIDATE.finditer(text):
            token = m.group(0).rstrip("-_/.")  # "F-2026-001." at the end of a sentence
            hit = known.by_normalised.get(normalise(token))
            tail = _PREFIX.sub("", token)
            if hit is None:
                hit = known.by_normalised.get(normalise(tail))
            if hit is None and len(digits(tail)) >= 4:
                cands = known.by_digits.get(digits(tail), ())
                if len(cands) == 1:
                    hit = cands[0]
                elif cands:
                    ambiguous += [c for c in cands if c not in ambiguous]
            if hit is not None and hit not in found:
                found.append(hit)
    return found, ambiguous


def match(refs: Sequence[str], tokens: Sequence[str], texts: Sequence[str], known: Known) -> Match:
    by_headers: list[str] = []
    for ref in refs:
        for n in known.by_message_id.get(ref.strip(), ()):
            if n not in by_headers:
                by_headers.append(n)
    cited, ambiguous = find_numbers(texts, known)
    if by_headers:
        extra = [n for n in cited if n not in by_headers]
        if extra:  # "one transfer for three invoices": the reply thread plus numbers it cites
            return Match(tuple(by_headers + extra), "headers", True,
                         f"replies to our reminder of {', '.join(by_headers)}; also cites {', '.join(extra)}")
        return Match(tuple(by_headers), "headers", True, f"replies to our reminder of {', '.join(by_headers)}")
    by_token = [n for t in tokens for n in known.by_token.get(t, ())]
    if by_token:
        return Match(tuple(dict.fromkeys(by_token + cited)), "token", True, "sent to a reply address of ours")
    if cited:
        return Match(tuple(cited), "number", True, f"cites {', '.join(cited)}")
    if ambiguous:
        return Match((), "none", False, f"a number that could be several invoices: {', '.join(ambiguous)}")
    if len(known.sender_open) == 1:
        return Match(known.sender_open, "sender", False,
                     f"the sender's only open invoice is {known.sender_open[0]} (to confirm)")
    if known.sender_open:
        return Match((), "none", False, f"the sender has {len(known.sender_open)} open invoices and cites none")
    return Match((), "none", False, "no reminder, invoice number or known sender")
