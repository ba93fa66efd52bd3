"""The instalments a payment-plan proposal names: amounts and dates, in the order written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

_AMOUNT = re.compile(
    r"(?:€|EUR|eur)\s*(\d{1,3}(?:[ \u00a0\u202f.,]\d{3})*(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)"
    r"|(\d{1,3}(?:[ \u00a0\u202f.,]\d{3})*(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)\s*(?:€|euros?\b|EUR\b)",
    re.IGNORECASE)


@dataclass(frozen=True)
class Instalment:
    amount: Decimal | None
    due: date | None


def amounts(text: str) -> tuple[Decimal, ...]:
    """Money amounts written with a euro sign or word: "400 €", "€1,250.50", "1 250,50 euros"."""
    out = []
    for m in _AMOUNT.finditer(text):
        raw = (m.group(1) or m.group(2)).replace("\u00a0", " ").replace("\u202f", " ").replace(" ", "")
        if re.search(r"[.,]\d{1,2}$", raw):  # a decimal part: the last separator is the decimal point
            whole, frac = raw[:-len(raw.split(",")[-1].split(".")[-1]) - 1], raw.split(",")[-1].split(".")[-1]
            raw = re.sub(r"[.,]", "", whole) + "." + frac
        else:
            raw = re.sub(r"[.,]", "", raw)
        try:
            out.append(Decimal(raw).quantize(Decimal("0.01")))
        except InvalidOperation:
            continue
    return tuple(out)


def instalments(text: str, dates: tuple[date, ...]) -> tuple[Instalment, ...]:
    """Pairs the amounts and dates of a proposal in order; either side may be missing."""
    found = amounts(text)
    n = max(len(found), len(dates))
    return tuple(Instalment(found[i] if i < len(found) else None, dates[i] if i < len(dates) else None)
                 for i in range(n))
