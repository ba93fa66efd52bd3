"""The labelled corpus (tests/corpus/labelled) through the real pipeline: kinds and invoices."""

from __future__ import annotations

from pathlib import Path

from tests.corpus.labelled.evaluate import evaluate, scores


def test_labelled_corpus(tmp_path: Path) -> None:
    """Every class recognised; never a wrong invoice (a wrong match is worse than none)."""
    s = scores(evaluate(tmp_path))
    print(s)
    assert s["match_precision"] == 1.0, s["wrong"]
    assert s["match_recall"] >= 0.97, s["missed"]
    for kind, (precision, recall, n) in s["per_kind"].items():  # type: ignore[attr-defined]
        assert n >= 2, f"the corpus needs at least two {kind} cases"
        assert precision >= 0.9 and recall >= 0.9, (kind, precision, recall, s["confusions"])
