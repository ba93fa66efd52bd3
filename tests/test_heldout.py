"""The frozen held-out batches through the real pipeline: no kind's precision may fall below the
figure first measured on the batch that guards (floor.json, committed with the change it judged),
nor may its wrong invoices or its reminders to a client who had answered grow. A batch without a
floor.json has not been measured yet; a spent one (its misses taught the training corpus) keeps
its record only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.understanding.cases import HERE, load
from tests.understanding.evaluate import replay, scores

BATCHES = sorted(p.parent for p in (HERE / "heldout").glob("*/floor.json"))
# A batch whose misses have taught the training corpus is spent: its first figures stay on record,
# and the next fresh batch guards (a spent batch would guard only what was tuned to it).
GUARDS = [b for b in BATCHES if "spent" not in json.loads((b / "floor.json").read_text())]


@pytest.mark.parametrize("batch", GUARDS, ids=[b.name for b in GUARDS])
def test_heldout_batch_keeps_its_first_figures(batch: Path, tmp_path: Path) -> None:
    floor = json.loads((batch / "floor.json").read_text())
    s = scores(replay(load(batch / "cases.toml"), tmp_path))
    print({k: round(v["precision"], 4) for k, v in s["per_kind"].items()})
    below = {k: (round(v["precision"], 4), floor["precision"][k]) for k, v in s["per_kind"].items()
             if round(v["precision"], 4) < floor["precision"][k]}
    assert not below, f"precision below the first measurement (now, then): {below}"
    assert s["kind_accuracy"] >= floor["kind_accuracy"] - 0.005, s["confusions"]
    assert len(s["threading"]["wrong_invoice"]) <= floor["wrong_invoice"], s["threading"]["wrong_invoice"]
    assert len(s["reminders_to_answered"]) <= floor["reminders_to_answered"], s["reminders_to_answered"]


@pytest.mark.parametrize("batch", BATCHES, ids=[b.name for b in BATCHES])
def test_a_measured_batch_is_never_edited(batch: Path) -> None:
    """floor.json names the digest of the cases it measured: an edited batch no longer counts as held out."""
    floor = json.loads((batch / "floor.json").read_text())
    assert hashlib.sha256((batch / "cases.toml").read_bytes()).hexdigest() == floor["cases_sha256"]
