"""Two passes over one mailbox (two instances, or a pass and a `relance sync` run by hand): each
message is stored once and its effects applied once, whichever pass gets there first."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import apply, inbound, ledger, store
from bot.config import Config
from bot.learn import shipped
from bot.mailbox import Fetched, MemorySource
from bot.models import Event, Inbound, Invoice, table
from bot.understand import understand_batch

NOW = datetime(2027, 4, 6, 9, tzinfo=UTC)
LEDGER = "number,client,email,amount,currency,issue_date,due_date,language\n" + "".join(
    f"F-{n},Client {n},c{n}@client.example,100.00,EUR,2027-02-01,2027-03-01,fr\n" for n in range(1, 21))


def claim(n: int) -> bytes:
    return (f"From: c{n}@client.example\r\nSubject: Facture F-{n}\r\nMessage-ID: <m{n}@client.example>\r\n"
            "Date: Tue, 06 Apr 2027 08:00:00 +0200\r\n\r\n"
            f"Bonjour, le virement pour la facture F-{n} est parti ce matin.\r\n").encode()


@pytest.fixture
def cfg(make_config: Callable[..., Config], engine: Engine, tmp_path: Path) -> Config:
    (tmp_path / "l.csv").write_text(LEDGER)
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), NOW, "l.csv")
    return make_config()


def events(engine: Engine) -> list[tuple[str, int]]:
    ev = table(Event)
    with engine.connect() as c:
        return sorted((k, i) for k, i in c.execute(sa.select(ev.c.kind, ev.c.inbound_id)
                                                    .where(ev.c.inbound_id.is_not(None))).all())


def test_a_message_understood_by_two_passes_is_applied_once(engine: Engine, cfg: Config) -> None:
    inbound.store_new(engine, MemorySource({"INBOX": [claim(n) for n in range(1, 21)]}), "INBOX", NOW,
                      inbound.SyncReport())
    with engine.connect() as c:
        rows = sorted(store.inbound_raw(c, list(c.execute(sa.select(table(Inbound).c.id)).scalars())).items())
    batch = understand_batch([(i, raw, False) for i, raw in rows], "acme.example", NOW.date(), shipped())
    numbers = apply.Numbers([f"F-{n}" for n in range(1, 21)])
    lines: list[list[str]] = []

    def one_pass() -> None:
        lines.append(apply.apply_batch(engine, cfg, NOW, batch, numbers))

    passes = [threading.Thread(target=one_pass) for _ in range(2)]
    for t in passes:
        t.start()
    for t in passes:
        t.join()
    assert sorted(len(x) for x in lines) == [0, 20], "one pass applied all twenty, the other none"
    kinds = [k for k, _ in events(engine)]
    assert kinds.count("message_payment_claim") == 20 and kinds.count("paused") == 20
    with engine.connect() as c:
        held = c.execute(sa.select(sa.func.count()).select_from(table(Invoice))
                         .where(table(Invoice).c.hold_until.is_not(None))).scalar()
    assert held == 20
    # A later pass finds nothing new to apply either.
    assert apply.apply_batch(engine, cfg, NOW, batch, numbers) == []
    assert len(events(engine)) == 40


def test_a_uid_another_pass_stored_first_is_not_stored_again(engine: Engine, cfg: Config) -> None:
    """The other pass stored UID 1 (the server had rewritten a header, so the bytes differ): this one
    stores only UID 2 and goes on, where the unique key used to end it with an IntegrityError."""
    inbound.store_new(engine, MemorySource({"INBOX": [claim(1)]}), "INBOX", NOW, inbound.SyncReport())
    report = inbound.SyncReport()
    ids, stored = inbound._store(engine, "INBOX", 1, [Fetched(1, claim(1) + b"X-Rewritten: yes\r\n", None),
                                                      Fetched(2, claim(2), None)], NOW, report)
    assert (stored, report.duplicates, len(ids)) == (1, 1, 1)
    with engine.connect() as c:
        assert sorted(c.execute(sa.select(table(Inbound).c.uid)).scalars()) == [1, 2]


def test_two_passes_storing_the_same_mailbox_at_once_store_each_message_once(engine: Engine, cfg: Config) -> None:
    source_messages = [claim(n) for n in range(1, 21)]
    errors: list[BaseException] = []

    def one_pass() -> None:
        try:
            inbound.store_new(engine, MemorySource({"INBOX": source_messages}), "INBOX", NOW, inbound.SyncReport())
        except BaseException as e:
            errors.append(e)

    for _ in range(5):
        passes = [threading.Thread(target=one_pass) for _ in range(2)]
        for t in passes:
            t.start()
        for t in passes:
            t.join()
    assert errors == []
    with engine.connect() as c:
        assert sorted(c.execute(sa.select(table(Inbound).c.uid)).scalars()) == list(range(1, 21))


def test_each_watched_folder_is_read_by_one_instance_and_taken_over_when_it_dies(db_url: str) -> None:
    """Two instances' leases on one database: on PostgreSQL the first takes both folders and the
    second none, until the first dies (here: SIGKILL of a process holding them); on SQLite (one
    daemon per file) an instance reads every folder."""
    import signal
    import subprocess
    import sys
    import time

    from bot.store import make_engine
    from bot.watcher import FolderLeases

    engine = make_engine(db_url)
    second = FolderLeases(engine, ["INBOX", "Paiements"])
    if engine.dialect.name != "postgresql":
        assert second.refresh() == ["INBOX", "Paiements"] and second.complete
        return
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom bot.store import make_engine\n"
         "from bot.watcher import FolderLeases\n"
         f"l = FolderLeases(make_engine({db_url!r}), ['INBOX', 'Paiements'])\nprint(l.refresh(), flush=True)\n"
         "time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "['INBOX', 'Paiements']"
        assert second.refresh() == [] and not second.complete
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        killed = time.monotonic()
        while second.refresh() != ["INBOX", "Paiements"]:
            assert time.monotonic() - killed < 30, "taken over within 30 s"
            time.sleep(0.2)
        print(f"taken over {time.monotonic() - killed:.1f} s after the SIGKILL")
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
        second.close()
        engine.dispose()
