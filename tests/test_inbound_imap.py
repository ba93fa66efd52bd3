"""The inbound side against a real Dovecot: store, resume, dedupe, understand, pause escalation."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from imapclient import IMAPClient
from sqlalchemy.engine import Engine

from bot import inbound, ledger, reports
from bot.config import Config
from bot.mailbox import ImapSource
from bot.mailer import MemoryMailer
from bot.models import Inbound, InboundRaw, Invoice, table
from bot.tick import tick
from tests.conftest import at, no_sleep
from tests.servers import Dovecot, dovecot_server

HEADER = "number,client,email,amount,currency,issue_date,due_date,language\n"
ROWS = ("F-2027-001,Client A,compta@client-a.example,1000.00,EUR,2027-03-01,2027-03-31,fr\n"
        "F-2027-002,Client B,ap@client-b.example,500.00,EUR,2027-03-01,2027-03-31,en\n")



@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with dovecot_server() as d:
        yield d


@pytest.fixture
def imap(dovecot: Dovecot) -> Iterator[IMAPClient]:
    c = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
    c.login(dovecot.user, dovecot.password)
    for folder in ("INBOX",):
        c.select_folder(folder)
        uids = c.search("ALL")
        if uids:
            c.delete_messages(uids)
            c.expunge()
    yield c
    c.logout()


@pytest.fixture
def world(engine: Engine, dovecot: Dovecot, imap: IMAPClient, tmp_path: Path, make_config: Callable[..., Config],
          monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.password)
    cfg = make_config(imap={"host": "127.0.0.1", "port": dovecot.port, "tls": "none", "username": dovecot.user,
                            "password_env": "TEST_IMAP_PASSWORD", "folders": ["INBOX"]})
    path = tmp_path / "l.csv"
    path.write_text(HEADER + ROWS)
    ledger.import_rows(engine, ledger.read(path, "fr"), at("2027-03-01T08:00"), "l.csv")
    mailer = MemoryMailer()
    asyncio.run(tick(engine, cfg, mailer, at("2027-04-05T10:00"), datetime.now(UTC), sleep=no_sleep))
    sent = {message_from_bytes(raw)["X-Relance-Invoices"]: message_from_bytes(raw) for _, _, raw in mailer.sent}

    def sync(now: str) -> inbound.SyncReport:
        report = inbound.SyncReport()
        source = ImapSource(cfg.imap, cfg.imap.password(cfg.source))
        try:
            inbound.store_new(engine, source, "INBOX", at(now), report)
        finally:
            source.close()
        report.processed = inbound.process(engine, cfg, at(now))
        return report

    def reply(to_invoice: str, body: str, subject: str = "", sender: str = "compta@client-a.example",
              extra: str = "") -> bytes:
        original = sent[to_invoice]
        raw = (f"From: Jean Client <{sender}>\r\nTo: relances@acme.example\r\n"
               f"Subject: {subject or 'Re: ' + str(original['Subject'])}\r\n"
               f"Message-ID: <{abs(hash(body))}.{len(body)}@client.example>\r\n"
               f"In-Reply-To: {original['Message-ID']}\r\nReferences: {original['Message-ID']}\r\n{extra}"
               "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
               f"{body}\r\n\r\nLe lun. 5 avr. 2027 à 10:00, ACME SAS <relances@acme.example> a écrit :\r\n"
               "> Bonjour,\r\n> Sauf erreur de notre part...\r\n").encode()
        imap.append("INBOX", raw)
        return raw

    def invoice(number: str) -> Any:
        with engine.connect() as c:
            return c.execute(sa.select(table(Invoice)).where(table(Invoice).c.number == number)).one()

    def messages() -> list[dict[str, Any]]:
        with engine.connect() as c:
            return reports.messages(c)

    return type("World", (), {"engine": engine, "cfg": cfg, "sync": staticmethod(sync), "reply": staticmethod(reply),
                              "invoice": staticmethod(invoice), "messages": staticmethod(messages), "imap": imap})


def test_a_payment_claim_pauses_its_invoice_and_nothing_is_marked_read(world: Any) -> None:
    world.reply("F-2027-001", "Bonjour,\r\n\r\nNous avons effectué le virement hier.\r\n\r\nCordialement,\r\nJean")
    report = world.sync("2027-04-06T09:00")
    assert report.stored == 1
    (m,) = world.messages()
    assert (m["kind"], m["invoices"], m["status"]) == ("payment_claim", ["F-2027-001"], "applied")
    assert m["text"] == "Bonjour,\n\nNous avons effectué le virement hier.", "quote and signature removed"
    assert world.invoice("F-2027-001").hold_until == at("2027-04-16T09:00")
    world.imap.select_folder("INBOX", readonly=True)
    flags = world.imap.get_flags(world.imap.search("ALL"))
    assert all(b"\\Seen" not in f for f in flags.values()), "the shared mailbox looks untouched"


def test_escalation_pauses_after_a_reply(world: Any) -> None:
    """No second reminder the day after a client promised to pay."""
    world.reply("F-2027-001", "Nous réglerons la facture le 30 avril.")
    world.sync("2027-04-06T09:00")
    (m,) = world.messages()
    assert m["kind"] == "promise_to_pay"
    mailer = MemoryMailer()
    asyncio.run(tick(world.engine, world.cfg, mailer, at("2027-04-15T10:00"), datetime.now(UTC), sleep=no_sleep))
    assert [message_from_bytes(r)["X-Relance-Invoices"] for _, _, r in mailer.sent] == ["F-2027-002"]
    assert world.invoice("F-2027-001").hold_until == at("2027-05-03T00:00"), "promised date + 3 days' grace"


def test_received_is_when_the_server_got_it_not_what_the_sender_wrote(world: Any) -> None:
    """The sender's Date header can be wrong (a clock off by years); INTERNALDATE is the server's (a
    date in the past here: Dovecot replaces one in the future with its own clock)."""
    raw = (b"From: <compta@client-a.example>\r\nTo: relances@acme.example\r\nSubject: Re: facture F-2027-001\r\n"
           b"Date: Mon, 01 Jan 2001 00:00:00 +0000\r\nMessage-ID: <skewed-clock@client.example>\r\n\r\nPaye.\r\n")
    world.imap.append("INBOX", raw, msg_time=datetime(2026, 3, 2, 8, 15, tzinfo=UTC))
    world.sync("2027-04-06T09:00")
    (m,) = world.messages()
    assert datetime.fromisoformat(m["received_at"]) == datetime(2026, 3, 2, 8, 15, tzinfo=UTC)


def test_restart_resumes_without_duplicates(world: Any) -> None:
    world.reply("F-2027-001", "Merci, nous regardons.")
    assert world.sync("2027-04-06T09:00").stored == 1
    assert world.sync("2027-04-06T09:05").stored == 0, "a second pass stores nothing again"
    world.reply("F-2027-002", "We will pay by the end of the month.", sender="ap@client-b.example")
    assert world.sync("2027-04-06T09:10").stored == 1
    assert [m["invoices"] for m in world.messages()] == [["F-2027-001"], ["F-2027-002"]]


def test_crash_between_fetch_and_commit_loses_nothing(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world.reply("F-2027-001", "Premier message.")
    world.reply("F-2027-001", "Deuxième message.")
    real = inbound._header
    monkeypatch.setattr(inbound, "_header", lambda raw, name: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        world.sync("2027-04-06T09:00")
    monkeypatch.setattr(inbound, "_header", real)
    assert world.messages() == []
    assert world.sync("2027-04-06T09:05").stored == 2
    assert world.sync("2027-04-06T09:10").stored == 0


def test_uidvalidity_change_rescans_without_duplicates(world: Any, engine: Engine) -> None:
    world.reply("F-2027-001", "Un message.")
    world.sync("2027-04-06T09:00")
    with engine.begin() as c:  # as if the server had renumbered the folder
        c.execute(sa.text("UPDATE mailbox SET uidvalidity = 1"))
    world.reply("F-2027-002", "Another one.", sender="ap@client-b.example")
    report = world.sync("2027-04-06T09:05")
    assert report.rescanned == ["INBOX"] and report.stored == 1 and report.duplicates == 1


def test_unreadable_message_is_kept_and_quarantined(world: Any) -> None:
    world.imap.append("INBOX", b"\x00\xff garbage that is not a message \xfe" * 10)
    world.reply("F-2027-001", "Nous avons payé.")
    world.sync("2027-04-06T09:00")
    raw_t = table(InboundRaw)
    with world.engine.connect() as c:
        rows = c.execute(sa.select(table(Inbound).c.status, raw_t.c.raw)
                         .join(raw_t, raw_t.c.inbound_id == table(Inbound).c.id)).all()
    assert len(rows) == 2, "both stored, the bad one too"
    assert b"garbage that is not a message" in b"".join(r.raw for r in rows)
    assert sorted(r.status for r in rows)[-1] in ("applied", "triage")


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise TimeoutError


def start_watcher(world: Any, dovecot: Dovecot, **imap: Any) -> tuple[Any, threading.Event, threading.Thread]:
    """The watcher in its thread, after its first pass, its IDLEs in place; renewals every 90 s."""
    from bot.watcher import Watcher

    cfg = replace(world.cfg, imap=replace(world.cfg.imap, **{"idle_seconds": 90, **imap}))
    stop = threading.Event()
    watcher = Watcher(world.engine, cfg, stop, clock=lambda: at("2027-04-06T09:00"))
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    wait_until(lambda: watcher.passes >= 1)
    time.sleep(1.5)  # let it enter IDLE: these tests are about IDLE waking it up
    return watcher, stop, thread


def test_idle_wakes_the_watcher_within_seconds(world: Any, dovecot: Dovecot) -> None:
    _, stop, thread = start_watcher(world, dovecot)
    try:
        world.reply("F-2027-001", "Nous avons payé hier.")
        latency = wait_until(lambda: [m["kind"] for m in world.messages()] == ["payment_claim"], timeout=60)
        assert latency < 30, "IDLE, not the 90 s renewal, brought the message in (in ~0.3 s when idle)"
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive(), "the watcher stops within seconds"


def test_idle_on_every_watched_folder(world: Any, dovecot: Dovecot) -> None:
    """IDLE watches one folder per connection: mail in the second folder wakes the watcher too,
    long before the 90 s renewal (and there is no polling to fall back on here)."""
    if not world.imap.folder_exists("Paiements"):
        world.imap.create_folder("Paiements")
    watcher, stop, thread = start_watcher(world, dovecot, folders=["INBOX", "Paiements"], poll_seconds=3600)
    try:
        passes = watcher.passes
        raw = (b"From: <compta@client-a.example>\r\nTo: relances@acme.example\r\nSubject: Virement F-2027-001\r\n"
               b"Message-ID: <in-paiements@client.example>\r\n\r\nNous avons fait le virement.\r\n")
        world.imap.append("Paiements", raw)
        # The pass that read it counts itself once it is over, a moment after the message shows.
        latency = wait_until(lambda: watcher.passes > passes and any(
            m["message_id"] == "<in-paiements@client.example>" and m["kind"] for m in world.messages()), timeout=60)
        assert latency < 30
    finally:
        stop.set()
        thread.join(timeout=20)
        world.imap.select_folder("Paiements")
        world.imap.delete_messages(world.imap.search("ALL"))
        world.imap.expunge()
    assert not thread.is_alive(), "the watcher and its IDLE threads stop within seconds"


def test_without_idle_the_watcher_polls(world: Any, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that does not offer IDLE: new mail is found by polling every `imap.poll_seconds`."""
    monkeypatch.setattr(ImapSource, "can_idle", lambda _self: False)
    monkeypatch.setattr(ImapSource, "wait", lambda *_a, **_k: pytest.fail("IDLE used on a server without it"))
    _, stop, thread = start_watcher(world, dovecot, poll_seconds=2)
    try:
        world.reply("F-2027-001", "Nous avons payé hier.")
        latency = wait_until(lambda: [m["kind"] for m in world.messages()] == ["payment_claim"], timeout=30)
        assert latency < 10
    finally:
        stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive()


def test_a_folder_the_server_will_not_open_does_not_stop_the_others(world: Any) -> None:
    """A watched folder deleted or renamed by a person: the rest of the mailbox is still read."""
    world.reply("F-2027-001", "Nous avons payé hier.")
    cfg = replace(world.cfg, imap=replace(world.cfg.imap, folders=["Supprimé", "INBOX"]))
    report = inbound.SyncReport()
    source = ImapSource(cfg.imap, cfg.imap.password(cfg.source))
    try:
        lines = inbound.sync(world.engine, source, cfg, at("2027-04-06T09:00"), report)
    finally:
        source.close()
    assert len(lines) == 1 and [m["kind"] for m in world.messages()] == ["payment_claim"]
    assert len(report.unreadable) == 1 and "cannot open folder 'Supprimé'" in report.unreadable[0]


def test_a_connection_reset_while_fetching_is_retried_not_fatal(world: Any, dovecot: Dovecot,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """imaplib does not wrap a socket error on read: the watcher still reconnects and goes on."""
    survives_one_failure(world, dovecot, monkeypatch, IMAPClient, "fetch",
                         ConnectionResetError(104, "Connection reset by peer"))


def survives_one_failure(world: Any, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str,
                         error: Exception) -> None:
    """`owner.name` fails once with `error`: the watcher goes on, and the reply waiting is read."""
    real = getattr(owner, name)
    failures = [error]

    def flaky(*a: Any, **k: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*a, **k)

    monkeypatch.setattr(owner, name, flaky)
    world.reply("F-2027-001", "Nous avons payé hier.")
    _, stop, thread = start_watcher(world, dovecot)
    try:
        wait_until(lambda: [m["kind"] for m in world.messages()] == ["payment_claim"], timeout=30)
        assert not failures and thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=20)


def test_watcher_survives_a_server_restart_during_idle(world: Any, dovecot: Dovecot) -> None:
    _, stop, thread = start_watcher(world, dovecot)
    try:
        dovecot.stop()
        dovecot.start()
        c = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
        c.login(dovecot.user, dovecot.password)
        raw = (b"From: <compta@client-a.example>\r\nTo: relances@acme.example\r\nSubject: Re: facture F-2027-001\r\n"
               b"Message-ID: <after-restart@client.example>\r\n\r\nNous avons fait le virement.\r\n")
        c.append("INBOX", raw)
        wait_until(lambda: any(m["message_id"] == "<after-restart@client.example>" and m["kind"]
                               for m in world.messages()), timeout=30)
        c.logout()
    finally:
        stop.set()
        thread.join(timeout=10)


def test_expunged_messages_do_not_leave_the_watcher_spinning(world: Any, engine: Engine) -> None:
    """UIDs deleted by a person before we saw them: the folder's position moves past them."""
    world.reply("F-2027-001", "Un message.")
    world.sync("2027-04-06T09:00")
    world.imap.select_folder("INBOX")
    world.reply("F-2027-001", "Supprimé avant lecture.")
    uid = max(world.imap.search("ALL"))
    world.imap.delete_messages([uid])
    world.imap.expunge()
    world.sync("2027-04-06T09:05")
    with engine.connect() as c:
        last = c.execute(sa.text("SELECT last_uid FROM mailbox")).scalar_one()
    assert last == uid


def test_handled_messages_move_to_a_folder_when_asked(world: Any, engine: Engine) -> None:
    """imap.move_handled_to: a settled payment claim moves; a dispute waiting for a person stays in
    INBOX; flags are kept (still unread); a second pass moves nothing twice."""
    dest = "Traité par Relance"
    if world.imap.folder_exists(dest):
        world.imap.delete_folder(dest)
    world.reply("F-2027-001", "Nous avons effectué le virement hier.")
    world.reply("F-2027-002", "We dispute this invoice: wrong amount.", sender="ap@client-b.example")
    cfg = replace(world.cfg, imap=replace(world.cfg.imap, move_handled_to=dest))
    world.sync("2027-04-06T09:00")
    source = ImapSource(cfg.imap, cfg.imap.password(cfg.source))
    try:
        assert inbound.move_handled(engine, source, dest, at("2027-04-06T09:01")) == 1
        assert inbound.move_handled(engine, source, dest, at("2027-04-06T09:02")) == 0
    finally:
        source.close()
    world.imap.select_folder("INBOX", readonly=True)
    inbox = world.imap.fetch(world.imap.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "FLAGS"])
    assert [b"dispute" in v[b"BODY[HEADER.FIELDS (SUBJECT)]"].lower() or b"F-2027-002" in
            v[b"BODY[HEADER.FIELDS (SUBJECT)]"] for v in inbox.values()] == [True], "the dispute stays for people"
    world.imap.select_folder(dest, readonly=True)
    moved = world.imap.fetch(world.imap.search("ALL"), ["BODY.PEEK[]", "FLAGS"])
    (only,) = moved.values()
    assert b"virement" in only[b"BODY[]"] and b"\\Seen" not in only[b"FLAGS"]
    with engine.connect() as c:
        rows = c.execute(sa.select(table(Inbound).c.status, table(Inbound).c.moved_at).order_by(table(Inbound).c.id))
        assert [(r.status, r.moved_at is not None) for r in rows] == [("applied", True), ("triage", False)]
    world.imap.delete_folder(dest)


def test_move_handled_to_must_not_be_a_watched_folder(make_config: Callable[..., Config]) -> None:
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match="imap.move_handled_to = 'INBOX': expected a folder that is not watched"):
        make_config(imap={"folders": ["INBOX"], "move_handled_to": "INBOX"})


def test_a_move_the_server_refuses_never_stops_the_mail(world: Any, engine: Engine,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A destination the server will not create: logged, retried next pass, the mail still read."""
    world.reply("F-2027-001", "Nous avons effectué le virement hier.")
    world.sync("2027-04-06T09:00")
    cfg = world.cfg
    source = ImapSource(cfg.imap, cfg.imap.password(cfg.source))
    try:
        assert inbound.move_handled(engine, source, "INBOX/\x7f bad", at("2027-04-06T09:01")) == 0
    finally:
        source.close()
    assert "will try again on the next pass" in caplog.text
    with engine.connect() as c:
        assert c.execute(sa.select(table(Inbound).c.moved_at)).scalar_one() is None


def test_the_database_going_away_is_retried_not_fatal(world: Any, dovecot: Dovecot,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL restart (or SQLite locked past its timeout) during a pass: the watcher backs off
    and the next pass reads the mail."""
    survives_one_failure(world, dovecot, monkeypatch, inbound, "sync", sa.exc.OperationalError(
        "INSERT", {}, Exception("server closed the connection unexpectedly")))


def test_check_online_logs_in_and_opens_every_folder(dovecot: Dovecot, tmp_path: Path) -> None:
    """`relance check --online`, before `relance run`: both servers answer, each folder opens."""
    import subprocess
    import sys

    from tests.conftest import EXAMPLE, merge
    from tests.servers import smtp_server
    from tests.test_contract_like import toml_dump

    def check(port: int, folders: list[str]) -> subprocess.CompletedProcess[str]:
        cfg = merge(EXAMPLE, {
            "database": {"url": f"sqlite:///{tmp_path / 'relance.db'}"},
            "smtp": {"host": "127.0.0.1", "port": port, "tls": "none", "username": ""},
            "imap": {"host": "127.0.0.1", "port": dovecot.port, "tls": "none", "username": dovecot.user,
                     "password_env": "TEST_IMAP_PASSWORD", "folders": folders}})
        (tmp_path / "config.toml").write_text(toml_dump(cfg))
        run = [sys.executable, "-m", "bot.cli", "--config", str(tmp_path / "config.toml")]
        subprocess.run([*run, "init"], check=True, capture_output=True)
        return subprocess.run([*run, "check", "--online", "--now", "2026-03-02T10:00:00+01:00"],  # a rated half-year
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "TEST_IMAP_PASSWORD": dovecot.password, "RELANCE_LANG": "en"})

    with smtp_server() as (_, port):
        ok = check(port, ["INBOX"])
        missing = check(port, ["INBOX", "Absent"])
    assert ok.returncode == 0, ok.stderr
    assert "smtp: connected; no login" in ok.stdout, "username is empty: nothing was logged in to"
    assert "imap: connected and logged in (password)" in ok.stdout, "the method that logged in is named"
    assert "imap: folder 'INBOX' opens read-only" in ok.stdout and "imap: IDLE yes" in ok.stdout
    assert dovecot.password not in ok.stdout + ok.stderr
    assert missing.returncode == 1 and "cannot open folder 'Absent'" in missing.stderr
    down = check(1, ["INBOX"])  # nothing listens on port 1
    assert down.returncode == 1 and "smtp: cannot reach SMTP server 127.0.0.1:1" in down.stderr


def test_a_backlog_is_searched_once_and_what_arrives_meanwhile_is_read_too(world: Any, engine: Engine,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A first sync of a big mailbox asks the server for the UIDs once, not once a batch (each
    SEARCH `UID n:*` sent every UID still to come: quadratic in the backlog); what arrives during the
    pass is found by the SEARCH that ends it."""
    for i in range(7):
        world.reply("F-2027-001", f"Message {i} du lot.")
    monkeypatch.setattr(inbound, "BATCH", 2)
    searches: list[object] = []
    real_search = IMAPClient.search

    def search(self: IMAPClient, criteria: object = "ALL", charset: str | None = None) -> Any:
        searches.append(criteria)
        if len(searches) == 1:  # a message arrives while the pass goes on
            world.reply("F-2027-001", "Arrivé pendant la lecture.")
        return real_search(self, criteria, charset)

    monkeypatch.setattr(IMAPClient, "search", search)
    report = world.sync("2027-04-06T09:00")
    assert report.stored == 8
    assert len(searches) == 3  # the backlog, the message that came meanwhile, nothing more


def test_a_batch_expunged_between_search_and_fetch_does_not_end_the_pass(world: Any, dovecot: Dovecot,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A person deletes the next messages after the SEARCH found them: the pass goes on to the ones
    after (it ended there, and the folder's position moved past messages never read)."""
    for i in range(6):
        world.reply("F-2027-001", f"Message {i}.")
    world.imap.select_folder("INBOX")
    uids = sorted(world.imap.search("ALL"))
    source = ImapSource(world.cfg.imap, world.cfg.imap.password(world.cfg.source))
    try:
        source.select("INBOX")
        first = source.fetch_after(0, 2, 10_000_000)
        world.imap.delete_messages(uids[2:4])
        world.imap.expunge()
        after = source.fetch_after(first[-1].uid, 2, 10_000_000)
    finally:
        source.close()
    assert [f.uid for f in first] == uids[:2]
    assert [f.uid for f in after] == uids[4:6]
