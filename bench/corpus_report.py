"""Precision and recall of classification and matching on the labelled corpus, and bounce recall
on 103 real bounces. Usage: python bench/corpus_report.py"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.understand import parse  # noqa: E402
from rules.classify import Kind, classify  # noqa: E402
from tests.corpus.labelled.evaluate import evaluate, scores  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        results = evaluate(Path(work))
    s = scores(results)
    print(f"labelled corpus: {len(results)} messages")
    print(f"{'kind':<16}{'precision':>10}{'recall':>8}{'n':>4}")
    for kind, (p, r, n) in s["per_kind"].items():  # type: ignore[attr-defined]
        print(f"{kind:<16}{p:>10.1%}{r:>8.1%}{n:>4}")
    print(f"matching precision {s['match_precision']:.1%} (wrong: {s['wrong']}), "
          f"recall {s['match_recall']:.1%} (missed: {s['missed']})")
    files = sorted((ROOT / "tests" / "corpus" / "bounces" / "flufl").glob("*.txt"))
    hits = sum(classify(parse(p.read_bytes()).facts, "acme.example").kind is Kind.BOUNCE for p in files)
    print(f"bounce recall on real bounces: {hits}/{len(files)} ({hits / len(files):.1%})")


if __name__ == "__main__":
    main()
