"""The screens as a person sees them, at 80x24 and 160x48, from a fixed store and a fixed `--now`
(pytest-textual-snapshot: `pytest --snapshot-update` rewrites them after a wanted change; the
SVGs in tests/__snapshots__ are the reference to look at)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from bot import store
from bot.config import Config
from tests.test_tui import NOW, PLAN, deliver, seed
from tui.app import RelanceApp

SIZES = [(80, 24), (160, 48)]
SCREENS = {"queue": [], "item": ["enter"], "invoices": ["2"], "kpis": ["3"], "help": ["question_mark"],
           "reply": ["R"]}


async def settled(pilot: Pilot[None]) -> None:
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(snap_compare: Any, make_config: Callable[..., Config], tmp_path: Path, size: tuple[int, int],
                screen: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELANCE_LANG", "en")
    engine = store.make_engine(f"sqlite:///{tmp_path / 'relance.db'}")
    store.migrate(engine)
    cfg = make_config()
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "Plans", PLAN)
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:test", poll_seconds=3600)

    async def before(pilot: Pilot[None]) -> None:
        await settled(pilot)
        for key in SCREENS[screen]:
            await pilot.press(key)
            await settled(pilot)

    try:
        assert snap_compare(app, terminal_size=size, run_before=before)
    finally:
        engine.dispose()
