"""The reply classifier on its own corpus: cross-validated accuracy per kind and margin, for
choosing the regularisation (bot/learn.py's C) and the default `auto_apply_margin`.

    python bench/learning.py             # 5-fold cross-validation of the shipped corpus, C in a range
    python bench/learning.py --curve     # held-out accuracy after 0, 20, 50, 100 corrections

A figure on the corpus the model learns from says how well it fits, not how well it reads new
mail: bench/understanding.py on the held-out batches says that."""

from __future__ import annotations

import argparse
import random
import sys
import tomllib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.learn import C, Example, corpus_examples, facts_of_case, fit
from rules.classify import classify

HERE = Path(__file__).resolve().parent.parent / "tests" / "understanding"


def folds(examples: list[Example], k: int, seed: int = 7) -> list[tuple[list[Example], list[Example]]]:
    shuffled = examples[:]
    random.Random(seed).shuffle(shuffled)
    return [([e for j, e in enumerate(shuffled) if j % k != i], [e for j, e in enumerate(shuffled) if j % k == i])
            for i in range(k)]


def judged(train: list[Example], test: list[Example], c: float) -> list[tuple[str, str, float]]:
    """(labelled, predicted, margin) for each test example, the model fitted on `train`."""
    model = fit(train, c=c)
    out = []
    for e in test:  # as the pipeline reads them: robots' rules first, then the model
        u = classify(e.facts, "acme.example", model)
        out.append((e.kind, u.kind.value, float(u.confidence)))
    return out


def report(results: list[tuple[str, str, float]], margins: tuple[float, ...] = (0.0, 0.15, 0.25, 0.4)) -> str:
    right = sum(1 for k, p, _ in results if k == p)
    lines = [f"accuracy {right}/{len(results)} = {right / len(results):.1%}"]
    for m in margins:
        sure = [(k, p) for k, p, g in results if g >= m]
        ok = sum(1 for k, p in sure if k == p)
        lines.append(f"  margin >= {m:.2f}: {len(sure)} sure ({len(sure) / len(results):.0%}), "
                     f"{ok / len(sure) if sure else 1:.1%} of them right")
    kinds = sorted({k for k, _, _ in results})
    for kind in kinds:
        tp = sum(1 for k, p, _ in results if k == p == kind)
        pred = sum(1 for _, p, _ in results if p == kind)
        act = sum(1 for k, _, _ in results if k == kind)
        lines.append(f"  {kind:<15} precision {tp / pred if pred else 1:.1%} recall {tp / act if act else 1:.1%}")
    lines.append("  confusions: " + str(Counter(f"{k}->{p}" for k, p, _ in results if k != p).most_common(8)))
    return "\n".join(lines)


def load_set(path: Path) -> list[Example]:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    return [Example(facts_of_case(c), c["kind"], f"{path.parent.name}:{c['id']}") for c in doc["case"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--c", type=float, nargs="*", default=[0.5, 1.0, 2.0, 4.0])
    ap.add_argument("--curve", action="store_true", help="learning curve: held-out after corrections from the pool")
    ap.add_argument("batches", nargs="*", type=Path, help="held-out batches for --curve (default: all)")
    args = ap.parse_args()
    examples = corpus_examples()
    print(f"corpus: {len(examples)} examples {dict(Counter(e.kind for e in examples))}")
    if args.curve:
        pool = load_set(HERE / "pool" / "cases.toml")
        for batch in args.batches or sorted((HERE / "heldout").glob("*/cases.toml")):
            test = load_set(batch)
            for n in (0, 20, 50, 100):
                scores = []
                for seed in range(5 if n else 1):  # which corrections a person happens to make: five draws
                    drawn = random.Random(seed).sample(pool, min(n, len(pool)))
                    scores.append(sum(1 for k, p, _ in judged(examples + drawn, test, C) if k == p) / len(test))
                print(f"{batch.parent.name}: {n:>3} corrections -> {sum(scores) / len(scores):.1%} "
                      f"(from {min(scores):.1%} to {max(scores):.1%} over {len(scores)} draws)")
        return
    for c in args.c:
        results = [r for train, test in folds(examples, 5) for r in judged(train, test, c)]
        print(f"C = {c}: " + report(results))


if __name__ == "__main__":
    main()
