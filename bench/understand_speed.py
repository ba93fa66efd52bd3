"""How long understanding takes in this process, per message: parsing (mail-parser, quotes and
forwards), classifying (robots' rules, the model), dates, instalments, bounced addresses.

The process first reads the shipped training corpus (so that the libraries' one-time costs, regex
compilation and dateparser's locale set-up, are paid, as in a daemon that has been running), then
times one pass over a held-out batch it has not seen.

    python bench/understand_speed.py [tests/understanding/heldout/a/cases.toml]"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.learn import shipped
from bot.understand import _parse, understand_batch
from tests.understanding.cases import HERE, load, render

TODAY = date(2027, 4, 7)


def main() -> None:
    batch = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "heldout" / "a" / "cases.toml"
    corpus = Path(__file__).resolve().parent.parent / "bot" / "corpus"
    warm = [(i, render(c, {}), False) for i, c in enumerate(load(corpus / "en.toml") + load(corpus / "fr.toml"))]
    model = shipped()
    understand_batch(warm, "acme.example", TODAY, model)
    raws = [(i, render(c, {}), False) for i, c in enumerate(load(batch))]
    started, cpu = time.perf_counter(), time.process_time()
    understand_batch(raws, "acme.example", TODAY, model)
    whole, whole_cpu = ms(started, time.perf_counter(), len(raws)), ms(cpu, time.process_time(), len(raws))
    started, cpu = time.perf_counter(), time.process_time()
    for _, raw, _ in raws:
        _parse(raw)
    parse, parse_cpu = ms(started, time.perf_counter(), len(raws)), ms(cpu, time.process_time(), len(raws))
    print(f"{len(raws)} messages not seen before, after {len(warm)} others: {whole:.3f} ms a message in all, "
          f"of which {parse:.3f} ms parsing and {whole - parse:.3f} ms classifying, dates and the rest")
    print(f"  CPU time of this process (less sensitive to other work on the machine): {whole_cpu:.3f} ms a "
          f"message in all, of which {parse_cpu:.3f} ms parsing (target: 1 ms in all)")


def ms(start: float, end: float, n: int) -> float:
    return (end - start) / n * 1000


if __name__ == "__main__":
    main()
