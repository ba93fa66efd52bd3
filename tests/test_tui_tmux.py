"""`relance tui` in a real terminal: started in tmux at 80x24, driven with keys, the pane read back,
its decision found in the store with who made it (`--as`) and when (`--now`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot import store
from bot.config import Config, from_dict
from tests.conftest import EXAMPLE, merge
from tests.test_contract_like import toml_dump
from tests.test_tui import PLAN, deliver, seed

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None and not os.environ.get("CI"),
                                reason="tmux is not installed (CI installs it)")


@pytest.fixture
def session() -> Iterator[str]:
    name = f"relance-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)


def pane(name: str) -> str:
    r = subprocess.run(["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise AssertionError(f"the UI is gone (it exited or crashed): {r.stderr.strip()}")
    return r.stdout


def wait_for(name: str, text: str, seconds: float = 30) -> str:
    """The pane once `text` shows in it (the UI starts, reads in a worker, repaints)."""
    end, seen = time.monotonic() + seconds, ""
    while time.monotonic() < end:
        seen = pane(name)
        if text in seen:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never showed; the pane:\n{seen}")


def test_accept_a_plan_in_a_real_terminal(tmp_path: Path, session: str, make_config: Callable[..., Config]) -> None:
    url = f"sqlite:///{tmp_path / 'relance.db'}"
    doc = merge(EXAMPLE, {"database": {"url": url}, "company": {"language": "en"}})
    (tmp_path / "config.toml").write_text(toml_dump(doc))
    engine = store.make_engine(url)
    store.migrate(engine)
    cfg = from_dict(doc, "config.toml")
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "Plans", PLAN)
    relance = Path(sys.executable).with_name("relance")
    env = {k: v for k, v in os.environ.items() if k not in ("RELANCE_LANG", "RELANCE_CONFIG")}
    command = f"{relance} --config {tmp_path / 'config.toml'} tui --now 2027-04-06 --as alice"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command],
                   check=True, env={**env, "TERM": "xterm-256color"}, cwd=tmp_path)
    wait_for(session, "payment plan proposed")
    first = wait_for(session, "? Help")  # the footer keeps the key that lists the others (painted last)
    assert first.index("€900.00") < first.index("€100.00"), "the most at stake first"
    subprocess.run(["tmux", "send-keys", "-t", session, "y"], check=True)
    prompt = wait_for(session, "400.00 2027-04-30, 500.00 2027-05-31")
    assert "instalments for F-2" in prompt
    subprocess.run(["tmux", "send-keys", "-t", session, "Enter"], check=True)
    wait_for(session, "Nous acceptons l")  # the reply, in the client's language (the ledger's default, fr)
    subprocess.run(["tmux", "send-keys", "-t", session, "C-s"], check=True)
    wait_for(session, "u: undo · F-2: plan of 2 instalment(s) accepted")
    subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
    with engine.connect() as c:
        kind, actor, at = c.execute(sa.text("SELECT kind, actor, at FROM event WHERE kind = 'plan_accepted'")).one()
        queued = c.execute(sa.text("SELECT status, to_addr FROM outbound")).one()
    engine.dispose()
    assert (kind, actor, str(at)[:10]) == ("plan_accepted", "tui:alice", "2027-04-06")
    assert tuple(queued) == ("pending", "b@client.example"), "Ctrl+S in a real terminal queues the reply"
