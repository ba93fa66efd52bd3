"""Reads labelled sets of replies through the real pipeline and prints what it understood.

    python bench/understanding.py                      # the training corpus and every held-out batch
    python bench/understanding.py tests/understanding/heldout/a/cases.toml

For each set: per-kind precision and recall, what was applied without a person and how much of
it was right, the confusions, threading (exact, guessed, wrong invoices) and the reminders the
ladder sent to a client who had answered (tests/understanding/evaluate.py says how)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.understanding.cases import HERE, load
from tests.understanding.evaluate import replay, scores, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="*", type=Path, help="TOML files of labelled cases (default: all)")
    ap.add_argument("--json", action="store_true", help="print the scores as JSON")
    ap.add_argument("--wrong", action="store_true", help="list every misread case")
    args = ap.parse_args()
    sets = args.sets or sorted((HERE / "training").glob("*.toml")) + sorted((HERE / "heldout").glob("*/cases.toml"))
    for path in sets:
        cases = load(path)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            run = replay(cases, Path(work))
        s = scores(run)
        print(f"== {path} ({time.perf_counter() - started:.1f} s)")
        print(json.dumps(s, default=str, ensure_ascii=False, indent=1) if args.json else summary(s))
        if args.wrong:
            for r in run.results:
                if r.kind != r.case.kind:
                    print(f"  {r.case.id}: {r.case.kind} read as {r.kind} ({r.status}): "
                          f"{' '.join(r.case.body.split())[:150]}")
        print()


if __name__ == "__main__":
    main()
