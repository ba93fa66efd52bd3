"""Upgrading a database that has lived: the schema of the previous release, with a reminder sent,
goes to the latest revision without losing a row (SQLite copies tables to alter them)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from bot import store
from bot.config import Config
from bot.mailer import MemoryMailer
from bot.tick import tick
from tests.conftest import at, no_sleep


def test_upgrading_a_database_with_sent_reminders(db_url: str, make_config: object, tmp_path: Path) -> None:
    engine: Engine = store.make_engine(db_url)
    cfg_alembic = store._alembic_config(engine)
    command.upgrade(cfg_alembic, "0003")
    with engine.begin() as c:  # what release 0003 wrote: a client, an invoice, a reminder sent
        c.execute(sa.text("INSERT INTO client (id, key, name, kind) VALUES (1, 'a', 'A', 'business')"))
        c.execute(sa.text("INSERT INTO contact (id, client_id, email, cc, failing) VALUES (1, 1, 'a@a.example', '', "
                          "false)"))
        c.execute(sa.text("INSERT INTO invoice (id, number, client_id, contact_id, amount_cents, paid_cents, currency,"
                          " issue_date, due_date, language, state, row_hash) VALUES (1, 'F-1', 1, 1, 10000, 0, 'EUR',"
                          " '2027-03-01', '2027-03-31', 'fr', 'active', '')"))
        c.execute(sa.text("INSERT INTO outbound (id, message_id, client_id, stage_index, stage, to_addr, cc, subject,"
                          " status, created_at, attempts) VALUES (1, '<m1@acme.example>', 1, 0, 'reminder',"
                          " 'a@a.example', '', 'Rappel', 'sent', '2027-04-05 08:00:00', 1)"))
        c.execute(sa.text("INSERT INTO reminder (id, invoice_id, stage_index, stage, outbound_id, skipped, at)"
                          " VALUES (1, 1, 0, 'reminder', 1, false, '2027-04-05 08:00:00')"))
        if c.dialect.name == "postgresql":  # the rows above were given their ids: move the sequences past them
            for t in ("client", "contact", "invoice", "outbound", "reminder"):
                c.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), 1)"))
    store.migrate(engine)
    with engine.connect() as c:
        counts = [c.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in ("invoice", "outbound", "reminder")]
        held = c.execute(sa.text("SELECT held_by FROM invoice")).scalar()
    assert counts == [1, 1, 1] and held is None
    cfg: Config = make_config(database={"url": db_url}, company={"operator_email": "op@acme.example"})  # type: ignore[operator]
    mailer = MemoryMailer()
    asyncio.run(tick(engine, cfg, mailer, at("2027-04-16T10:00"), datetime.now(UTC), sleep=no_sleep))
    assert mailer.sent, "the upgraded store goes on: the second reminder goes out"
    engine.dispose()


def test_received_messages_keep_their_bytes_when_they_move_to_a_table_of_their_own(db_url: str) -> None:
    """0010: the bytes leave `inbound` for `inbound_raw`, every message's, unchanged
    (NUL-free here: PostgreSQL's bytea and SQLite's blob both hold any byte), and the events that
    point at the messages still do."""
    engine: Engine = store.make_engine(db_url)
    command.upgrade(store._alembic_config(engine), "0008")
    raws = [b"From: a@client.example\r\nSubject: paid\r\n\r\nVirement effectu\xc3\xa9.\r\n", b"\xff\xfe not mail \x01"]
    with engine.begin() as c:
        for i, raw in enumerate(raws, 1):
            c.execute(sa.text("INSERT INTO inbound (id, message_id, folder, content_hash, raw, from_addr, subject, "
                              "stored_at, status, reason, text, cues, suggested) VALUES (:i, :m, 'INBOX', :h, :raw, "
                              "'a@client.example', 'paid', '2027-04-05 08:00:00', 'applied', '', '', '[]', '[]')"),
                      {"i": i, "m": f"<m{i}@client.example>", "h": f"h{i}", "raw": raw})
        c.execute(sa.text("INSERT INTO event (invoice_id, kind, at, actor, reason, data, inbound_id) "
                          "VALUES (NULL, 'triage_closed', '2027-04-05 09:00:00', 'test', '', '{}', 2)"))
    store.migrate(engine)
    with engine.connect() as c:
        assert store.inbound_raw(c, [1, 2, 3]) == {1: raws[0], 2: raws[1]}
        assert "raw" not in {col["name"] for col in sa.inspect(c).get_columns("inbound")}
        assert c.execute(sa.text("SELECT inbound_id FROM event")).scalar() == 2
    engine.dispose()
