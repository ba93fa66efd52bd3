"""Shared fixtures: config factory, databases (SQLite and PostgreSQL), an SMTP server."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine

from bot import store
from bot.config import Config, from_dict
from tests.servers import SmtpSink, fresh_database, postgres_cluster, smtp_server

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")


def at(text: str) -> datetime:
    """A Paris wall-clock time, as the tests write them: at("2027-04-05T10:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=PARIS)
EXAMPLE = tomllib.loads((ROOT / "config.example.toml").read_text())


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def make_config() -> Callable[..., Config]:
    def make(**sections: Any) -> Config:
        return from_dict(merge(EXAMPLE, sections), "test.toml")
    return make


@pytest.fixture(scope="session")
def pg_base() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'relance.db'}"
        return
    with fresh_database(request.getfixturevalue("pg_base"), "t_") as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = store.make_engine(db_url)
    store.migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Any]:
    """The command line as other programs drive it (a subprocess), with an SMTP server of its own."""
    from tests.test_contract_like import Cli

    with smtp_server() as (sink, port):
        c = Cli(tmp_path, port)
        c.sink = sink  # type: ignore[attr-defined]
        yield c


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    with smtp_server() as server:
        yield server


async def no_sleep(_: float) -> None:
    """A sleep that returns at once: retries and rate limits without waiting, in tests."""
    return


@pytest.fixture
def desk_with_plan(engine: Engine, smtp: tuple[SmtpSink, int], make_config: Callable[..., Config],
                   tmp_path: Path) -> tuple[Config, SmtpSink]:
    """The triage desk of tests/test_tui.py over a real SMTP sink: F-1 disputed (message 1), F-2's
    plan proposed (message 2, from b@client.example)."""
    from tests.test_tui import PLAN, deliver, seed

    sink, port = smtp
    cfg = make_config(smtp={"host": "127.0.0.1", "port": port, "tls": "none", "username": "",
                            "rate_per_minute": 0, "retries": 0})
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "Plans", PLAN)
    return cfg, sink
