"""Hostile text through every pattern that reads client mail: quote stripping, the reader of intent,
dates, invoice numbers. Each must stay linear: the time for 1 MB should be about ten times that of
100 KB. Prints the seconds per shape and size (a bench, not a test: times depend on the machine).

    python bench/hostile.py"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.learn import shipped
from bot.understand import find_dates, strip_quotes
from rules.classify import MailFacts, classify
from rules.match import short_numbers

SHAPES = {
    "Bonjour < a@a@a@...": lambda n: "Bonjour <" + "a@" * (n // 2),
    "one long line of a@": lambda n: "a@" * (n // 2),
    "words, no punctuation": lambda n: "nous paierons la facture " * (n // 25),
    "numbers and commas": lambda n: "factures " + ", ".join(["0412"] * (n // 6)),
    "dashes and newlines": lambda n: "-\n" * (n // 2),
    "le 30 le 30": lambda n: "le 30 " * (n // 6),
}


def main() -> None:
    model = shipped()
    steps = {
        "strip_quotes": strip_quotes,
        "classify": lambda t: classify(MailFacts("a@b.example", "x", t), "acme.example", model),
        "find_dates": lambda t: find_dates(t, date(2027, 4, 7)),
        "short_numbers": lambda t: short_numbers([t]),
    }
    print(f"{'shape':<24}{'step':<15}{'100 KB':>9}{'1 MB':>9}")
    for name, make in SHAPES.items():
        for step, fn in steps.items():
            times = []
            for size in (100_000, 1_000_000):
                text = make(size)
                started = time.perf_counter()
                fn(text)
                times.append(time.perf_counter() - started)
            print(f"{name:<24}{step:<15}{times[0]:>8.3f}s{times[1]:>8.3f}s")


if __name__ == "__main__":
    main()
