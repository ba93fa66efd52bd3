"""The labelled corpus (tests/corpus/labelled) through the real pipeline: kinds and invoices."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.reasons import CATALOG
from tests.corpus.labelled.evaluate import evaluate, scores


def test_labelled_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every class recognised; never a wrong invoice (a wrong match is worse than none); and every
    reason the pipeline gave is a code of the catalog, so that it reads in French (bot/reasons.py)."""
    results = evaluate(tmp_path)
    untranslated = sorted({str(p) for r in results for p in r.pieces
                           if not isinstance(p, dict) or p["code"] not in CATALOG})
    assert not untranslated
    assert all(r.pieces for r in results if r.reason), "every reason stored as codes"
    s = scores(results)
    print(s)
    assert s["match_precision"] == 1.0, s["wrong"]
    assert s["match_recall"] >= 0.97, s["missed"]
    for kind, (precision, recall, n) in s["per_kind"].items():  # type: ignore[attr-defined]
        assert n >= 2, f"the corpus needs at least two {kind} cases"
        assert precision >= 0.9 and recall >= 0.9, (kind, precision, recall, s["confusions"])
