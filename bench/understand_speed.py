"""How long understanding takes in this process, per message: parsing (mail-parser, quotes and
forwards), classifying (robots' rules, the model), dates, instalments, bounced addresses.

The process first reads the shipped training corpus (so that the libraries' one-time costs, regex
compilation and dateparser's locale set-up, are paid, as in a daemon that has been running), then
times one pass over a held-out batch it has not seen; then the message stream of bench/inbound.py
(the labelled corpus' shapes with the transport headers of real mail, each its own message), which
repeats its shapes as a mailbox repeats greetings and signatures.

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

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from inbound import TRANSPORT  # noqa: PLC0415 - bench/inbound.py's transport headers

    from tests.corpus.labelled.build import load as load_labelled  # noqa: PLC0415
    from tests.corpus.labelled.build import render as render_labelled  # noqa: PLC0415
    from tests.corpus.labelled.evaluate import variants  # noqa: PLC0415

    shapes = [TRANSPORT + render_labelled(c, {}) for c in variants(load_labelled())]
    stream = [(i, shapes[i % len(shapes)].replace(b"@client.example>", f".{i}@client.example>".encode(), 1), False)
              for i in range(2400)]
    understand_batch(stream[:400], "acme.example", TODAY, model)
    cpu = time.process_time()
    understand_batch(stream[400:], "acme.example", TODAY, model)
    print(f"bench/inbound.py's stream ({len(shapes)} shapes, {len(stream) - 400} messages after 400): "
          f"{ms(cpu, time.process_time(), len(stream) - 400):.3f} ms of CPU a message in all")


def ms(start: float, end: float, n: int) -> float:
    return (end - start) / n * 1000


if __name__ == "__main__":
    main()
