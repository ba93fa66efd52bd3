"""Bad input never stops the inbound side: each message is kept, marked with the reason, visible."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import apply, decisions, inbound, ledger, pool, reports, store
from bot.config import Config
from bot.learn import shipped
from bot.mailbox import MemorySource
from bot.models import Inbound, table

NOW = datetime(2027, 4, 6, 9, tzinfo=UTC)


def run(engine: Engine, cfg: Config, raws: list[bytes]) -> list[dict[str, Any]]:
    report = inbound.SyncReport()
    inbound.store_new(engine, MemorySource({"INBOX": raws}), "INBOX", NOW, report)
    inbound.process(engine, cfg, NOW)
    with engine.connect() as c:
        return reports.messages(c)


def msg(headers: str, body: bytes = b"Bonjour.\r\n") -> bytes:
    return headers.replace("\n", "\r\n").encode() + b"\r\n" + body


@pytest.fixture
def cfg(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.mark.parametrize(("raw", "why"), [
    (msg("From: a@b.example\nSubject: x\nContent-Type: text/plain; charset=x-unknown-charset\n",
         "Réglé hier".encode("latin-1")), "an unknown charset"),
    (msg("From: a@b.example\nSubject: x\n", "Payé hier, merci. Été.".encode("latin-1")), "8-bit, no charset"),
    (msg("From: a@b.example\nSubject: x\nContent-Type: multipart/mixed; boundary=\"nope\"\n",
         b"--wrong\r\nbroken"), "a broken multipart"),
    (msg("From: a@b.example\nSubject: x\nReferences: " + " ".join(f"<{i}@x.example>" for i in range(5000)) + "\n"),
     "5,000 References"),
    (msg("From: a@b.example\nSubject: =?utf-8?q?Hello=0D=0ABcc=3A_victim=40example=2Ecom?=\n"), "header injection"),
    (b"\x00\xff\xfe not a message at all \x00", "binary garbage"),
    (b"", "an empty message"),
])
def test_bad_messages_are_kept_and_visible(engine: Engine, cfg: Config, raw: bytes, why: str) -> None:
    rows = run(engine, cfg, [raw, msg("From: c@d.example\nSubject: ok\nMessage-ID: <ok@d.example>\n")])
    assert len(rows) == 2, f"{why}: both messages stored"
    assert {r["status"] for r in rows} <= {"applied", "triage", "quarantined"}, why
    assert any(r["message_id"] == "<ok@d.example>" for r in rows), "the next message went on"


def test_a_25_mb_attachment(engine: Engine, cfg: Config) -> None:
    blob = base64.encodebytes(b"\x00" * (25 * 1024 * 1024))
    head = 'From: a@b.example\nSubject: remittance\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B"\n'
    raw = msg(head, b"--B\r\nContent-Type: text/plain\r\n\r\nVirement effectu\xc3\xa9.\r\n--B\r\n"
                    b'Content-Type: application/pdf; name="avis_de_virement.pdf"\r\n'
                    b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"\r\n--B--\r\n")
    (row,) = run(engine, cfg, [raw])
    assert row["kind"] == "payment_claim" and row["status"] == "triage"


def test_our_own_reminder_coming_back_changes_nothing(engine: Engine, cfg: Config) -> None:
    raw = msg("From: ACME SAS <relances@acme.example>\nSubject: Rappel : facture F-1\n"
              "Message-ID: <loop@acme.example>\n")
    (row,) = run(engine, cfg, [raw])
    assert row["kind"] == "auto_reply" and row["status"] == "applied" and row["invoices"] == []


def test_reprocess_after_the_invoice_is_imported(engine: Engine, cfg: Config, tmp_path: Path) -> None:
    """A reply citing an invoice Relance did not know goes to triage; once imported, reprocess threads it."""
    raw = msg("From: compta@client.example\nSubject: Facture F-9001\nMessage-ID: <r1@client.example>\n",
              "Nous avons effectué le virement.".encode())
    (row,) = run(engine, cfg, [raw])
    assert (row["status"], row["invoices"]) == ("triage", [])
    (tmp_path / "l.csv").write_text("number,client,email,amount,currency,issue_date,due_date\n"
                                    "F-9001,Client,compta@client.example,10.00,EUR,2027-03-01,2027-03-31\n")
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), NOW, "l.csv")
    with engine.connect() as c:
        (inbound_id,) = c.execute(sa.select(table(Inbound).c.id)).scalars()
    inbound.process(engine, cfg, NOW, [inbound_id])
    with engine.connect() as c:
        (row,) = reports.messages(c)
    assert (row["status"], row["invoices"], row["kind"]) == ("applied", ["F-9001"], "payment_claim")


def test_a_plan_proposal_keeps_its_amounts_and_dates(engine: Engine, cfg: Config, tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("number,client,email,amount,currency,issue_date,due_date\n"
                                    "F-9002,Client,compta@client.example,800.00,EUR,2027-03-01,2027-03-31\n")
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), NOW, "l.csv")
    raw = msg("From: compta@client.example\nSubject: Facture F-9002\nMessage-ID: <p1@client.example>\n"
              "Content-Type: text/plain; charset=utf-8\n",
              "Pouvons-nous payer en 2 fois : 400 € le 30 avril 2027 et 400 € le 31 mai 2027 ?".encode())
    (row,) = run(engine, cfg, [raw])
    assert (row["kind"], row["status"], row["invoices"]) == ("payment_plan", "triage", ["F-9002"])
    assert "proposes 400.00 on 2027-04-30" in row["cues"] and "proposes 400.00 on 2027-05-31" in row["cues"]


def test_a_bounce_is_threaded_through_the_original_it_carries(engine: Engine, cfg: Config, tmp_path: Path) -> None:
    """A DSN has no In-Reply-To; the reminder it returns, attached, names the invoice."""
    import asyncio

    from bot.mailer import MemoryMailer
    from bot.tick import tick

    (tmp_path / "l.csv").write_text("number,client,email,amount,currency,issue_date,due_date\n"
                                    "F-9003,Client,gone@client.example,80.00,EUR,2027-03-01,2027-03-31\n")
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), NOW, "l.csv")
    mailer = MemoryMailer()
    asyncio.run(tick(engine, cfg, mailer, datetime(2027, 4, 5, 8, tzinfo=UTC), NOW))
    ((_, _, original),) = mailer.sent
    dsn = msg('From: MAILER-DAEMON@mx.client.example\nSubject: Undelivered Mail Returned to Sender\n'
              'Message-ID: <dsn1@mx.client.example>\nMIME-Version: 1.0\n'
              'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\n',
              b"--R\r\nContent-Type: text/plain\r\n\r\n<gone@client.example>: 550 5.1.1 User unknown\r\n"
              b"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.client.example\r\n\r\n"
              b"Final-Recipient: rfc822; gone@client.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
              b"--R\r\nContent-Type: text/rfc822-headers\r\n\r\n" + original.split(b"\r\n\r\n")[0] + b"\r\n--R--\r\n")
    rows = run(engine, cfg, [dsn])
    (row,) = [r for r in rows if r["message_id"] == "<dsn1@mx.client.example>"]
    assert (row["kind"], row["invoices"], row["status"]) == ("bounce", ["F-9003"], "triage")
    with engine.connect() as c:
        state = c.execute(sa.text("SELECT state FROM invoice WHERE number = 'F-9003'")).scalar_one()
    assert state == "bounced"


def _import(engine: Engine, tmp_path: Path, *numbers: str) -> None:
    rows = "".join(f"{n},Client,compta@client.example,10.00,EUR,2027-03-01,2027-03-31\n" for n in numbers)
    (tmp_path / "l.csv").write_text("number,client,email,amount,currency,issue_date,due_date\n" + rows)
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), NOW, "l.csv")


def _events(engine: Engine) -> list[tuple[str, int | None]]:
    from bot.models import Event

    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.select(table(Event).c.kind, table(Event).c.inbound_id)
                                             .where(table(Event).c.inbound_id.is_not(None)))]


def test_reprocess_never_applies_a_message_twice(engine: Engine, cfg: Config, tmp_path: Path) -> None:
    _import(engine, tmp_path, "F-9101")
    raw = msg("From: compta@client.example\nSubject: Facture F-9101\nMessage-ID: <t1@client.example>\n",
              "Nous avons effectué le virement hier.".encode())
    (row,) = run(engine, cfg, [raw])
    assert (row["status"], row["kind"]) == ("applied", "payment_claim")
    before = _events(engine)
    assert ("message_payment_claim", row["id"]) in before
    lines = inbound.process(engine, cfg, NOW, [row["id"]])
    assert len(lines) == 1 and _events(engine) == before, "no second pause, no second event"
    with engine.connect() as c:
        (again,) = reports.messages(c)
    assert (again["status"], again["kind"], again["invoices"]) == ("applied", "payment_claim", ["F-9101"])


def test_reprocess_that_reads_a_message_differently_asks_a_person(engine: Engine, cfg: Config, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _import(engine, tmp_path, "F-9102")
    raw = msg("From: compta@client.example\nSubject: Facture F-9102\nMessage-ID: <t2@client.example>\n",
              "Nous avons effectué le virement hier.".encode())
    (row,) = run(engine, cfg, [raw])
    before = _events(engine)
    from bot import understand
    from rules.classify import Kind, Understanding

    monkeypatch.setattr(understand, "classify",
                        lambda facts, domain, model, reading=None: Understanding(Kind.DISPUTE, 0, ("upgraded",)))
    inbound.process(engine, cfg, NOW, [row["id"]])
    with engine.connect() as c:
        (again,) = reports.messages(c)
    assert again["status"] == "triage" and again["kind"] == "dispute"
    assert "was payment_claim for F-9102" in again["reason"]
    after = _events(engine)
    assert after[:len(before)] == before, "the first reading's effects stay"
    assert {k for k, _ in after[len(before):]} == {"held", "paused"}, "nothing of a dispute is applied"
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT held_by FROM invoice WHERE number = 'F-9102'")).scalar() == row["id"], \
            "the invoice waits for the person who compares the readings"


def test_one_failing_message_does_not_hold_back_its_batch(engine: Engine, cfg: Config, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _import(engine, tmp_path, "F-9103", "F-9104")
    raws = [msg(f"From: compta@client.example\nSubject: Facture {n}\nMessage-ID: <b{n}@client.example>\n",
                "Nous avons effectué le virement.".encode()) for n in ("F-9103", "F-9104")]
    real = apply.Effects.apply

    def failing(self: Any, message: Any, u: Any, m: Any) -> tuple[str, str]:
        if m.numbers == ("F-9103",):
            raise RuntimeError("a bug met on the way")
        return real(self, message, u, m)

    monkeypatch.setattr(apply.Effects, "apply", failing)
    rows = run(engine, cfg, raws)
    by_id = {r["message_id"]: r for r in rows}
    assert by_id["<bF-9103@client.example>"]["status"] == "quarantined"
    assert "RuntimeError: a bug met on the way" in by_id["<bF-9103@client.example>"]["reason"]
    assert (by_id["<bF-9104@client.example>"]["status"], by_id["<bF-9104@client.example>"]["invoices"]) == (
        "applied", ["F-9104"])


def test_two_messages_about_one_invoice_in_one_batch_keep_the_later_hold(engine: Engine, cfg: Config,
                                                                          tmp_path: Path) -> None:
    """A promise for the 30th, then a plain reply (7 days) in the same pass: the hold stays at the promise."""
    from bot.models import Invoice

    _import(engine, tmp_path, "F-9105")
    raws = [msg("From: compta@client.example\nSubject: Facture F-9105\nMessage-ID: <p@client.example>\n",
                "Nous réglerons le 30 avril 2027.".encode()),
            msg("From: compta@client.example\nSubject: Facture F-9105\nMessage-ID: <q@client.example>\n",
                b"Merci pour votre message.")]
    run(engine, cfg, raws)
    with engine.connect() as c:
        hold = c.execute(sa.select(table(Invoice).c.hold_until)).scalar_one()
    promise_plus_grace = datetime(2027, 4, 30, tzinfo=cfg.zone) + timedelta(days=cfg.pause.promise_grace_days)
    assert hold == promise_plus_grace.astimezone(UTC)


def test_a_large_backlog_is_parsed_by_worker_processes_with_the_same_result(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _import(engine, tmp_path, "F-9106", "F-9107")
    raws = [msg(f"From: compta@client.example\nSubject: Facture F-{9106 + i % 2}\nMessage-ID: <w{i}@client.example>\n",
                ("Nous réglerons le 30 avril 2027." if i % 3 else "Virement effectué.").encode()) for i in range(40)]
    raws.insert(7, b"\x00\xff garbage")
    serial = run(engine, make_config(imap={"workers": 1}), raws)
    for statement in ("DELETE FROM event WHERE inbound_id IS NOT NULL", "DELETE FROM inbound_raw",
                      "DELETE FROM inbound", "DELETE FROM mailbox"):
        with engine.begin() as c:
            c.execute(sa.text(statement))
    monkeypatch.setattr(pool, "PARALLEL_FROM", 10)
    monkeypatch.setattr(inbound, "BATCH", 8)  # several batches in flight
    spawned: list[int] = []
    real = pool.ProcessPoolExecutor

    def counted(workers: int, **kw: Any) -> Any:
        spawned.append(workers)
        return real(workers, **kw)

    monkeypatch.setattr(pool, "ProcessPoolExecutor", counted)
    parallel = run(engine, make_config(imap={"workers": 2}), raws)
    assert spawned == [2]
    keep = ("subject", "from", "kind", "status", "invoices", "text", "cues", "reason")  # ids differ
    assert [{k: r[k] for k in keep} for r in parallel] == [{k: r[k] for k in keep} for r in serial]
    assert len(parallel) == 41 and {r["kind"] for r in parallel} >= {"promise_to_pay", "payment_claim"}


def test_sync_overlaps_fetching_with_parsing_and_gives_the_serial_result(
        engine: Engine, make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sync` hands each stored batch to the workers while it fetches the next; a message left `new`
    by an earlier pass goes first; the result is the serial one, message for message."""
    _import(engine, tmp_path, "F-9108", "F-9109")
    raws = [msg(f"From: compta@client.example\nSubject: Facture F-{9108 + i % 2}\nMessage-ID: <s{i}@client.example>\n",
                ("Nous réglerons le 30 avril 2027." if i % 3 else "Virement effectué.").encode()) for i in range(30)]
    serial = run(engine, make_config(imap={"workers": 1}), raws)
    for statement in ("DELETE FROM event WHERE inbound_id IS NOT NULL", "DELETE FROM inbound_raw",
                      "DELETE FROM inbound", "DELETE FROM mailbox"):
        with engine.begin() as c:
            c.execute(sa.text(statement))
    inbound.store_new(engine, MemorySource({"INBOX": raws[:3]}), "INBOX", NOW, inbound.SyncReport())  # left `new`
    monkeypatch.setattr(pool, "PARALLEL_FROM", 10)
    monkeypatch.setattr(inbound, "BATCH", 4)
    cfg = make_config(imap={"workers": 2, "folders": ["INBOX"]})
    report = inbound.SyncReport()
    lines = inbound.sync(engine, MemorySource({"INBOX": raws}), cfg, NOW, report)
    with engine.connect() as c:
        parallel = reports.messages(c)
    assert (report.stored, report.expected, len(lines)) == (27, 30, 30)
    keep = ("subject", "from", "kind", "status", "invoices", "text", "cues", "reason")
    assert [{k: r[k] for k in keep} for r in parallel] == [{k: r[k] for k in keep} for r in serial]


def test_sync_stops_fetching_when_asked_and_the_next_pass_goes_on(engine: Engine, cfg: Config,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM mid-pass: what is stored is finished, nothing more is fetched; the next pass resumes
    at the next UID, each message understood once."""
    import threading

    monkeypatch.setattr(inbound, "BATCH", 4)
    raws = [msg(f"From: c{i}@client.example\nSubject: x\nMessage-ID: <t{i}@client.example>\n") for i in range(10)]
    stop = threading.Event()
    stop.set()
    first = inbound.sync(engine, MemorySource({"INBOX": raws}), cfg, NOW, inbound.SyncReport(), stop)
    assert len(first) == 4
    rest = inbound.sync(engine, MemorySource({"INBOX": raws}), cfg, NOW, inbound.SyncReport())
    assert len(rest) == 6
    with engine.connect() as c:
        rows = reports.messages(c)
    assert sorted(r["message_id"] for r in rows) == sorted(f"<t{i}@client.example>" for i in range(10))
    assert all(r["status"] == "triage" for r in rows)


def test_a_batch_a_worker_cannot_return_is_read_here(engine: Engine, cfg: Config) -> None:
    """A worker's result that cannot come back (here a pickling error) costs a re-read, not the batch."""
    import pickle
    from concurrent.futures import Future

    raws = [msg(f"From: c{i}@client.example\nSubject: x\nMessage-ID: <p{i}@client.example>\n") for i in range(3)]
    inbound.store_new(engine, MemorySource({"INBOX": raws}), "INBOX", NOW, inbound.SyncReport())
    lost: Future[list[Any]] = Future()
    lost.set_exception(pickle.PicklingError("Can't pickle <class 'x'>"))
    done, broken = pool._result(engine, [1, 2, 3], lost, "acme.example", NOW.date(), shipped(), False)
    assert [u.id for u in done] == [1, 2, 3] and all(u.parsed is not None for u in done)
    assert broken is False, "the pool itself is fine: later batches still go to it"


FLUFL = Path(__file__).parent / "corpus" / "bounces" / "flufl"


def _ledger_for(engine: Engine, tmp_path: Path, email: str, *numbers: str) -> None:
    rows = "".join(f"{n},Client,{email},10.00,EUR,2027-03-01,2027-03-31\n" for n in numbers)
    (tmp_path / "b.csv").write_text("number,client,email,amount,currency,issue_date,due_date\n" + rows)
    ledger.import_rows(engine, ledger.read(tmp_path / "b.csv", "fr"), NOW, "b.csv")


def test_a_bounce_without_our_message_id_is_threaded_through_the_address_it_names(
        engine: Engine, cfg: Config, tmp_path: Path) -> None:
    """AOL's bounce (a real one) keeps no copy of the original: flufl.bounce reads the failed address."""
    from bot.models import Contact, Invoice

    _ledger_for(engine, tmp_path, "screenname@aol.com", "F-9201", "F-9202")
    (row,) = run(engine, cfg, [(FLUFL / "aol_01.txt").read_bytes()])
    assert (row["kind"], row["status"], row["invoices"]) == ("bounce", "triage", ["F-9201", "F-9202"])
    assert "failed: screenname@aol.com" in row["cues"]
    with engine.connect() as c:
        assert set(c.execute(sa.select(table(Invoice).c.state)).scalars()) == {"bounced"}
        failing, why = c.execute(sa.select(table(Contact).c.failing, table(Contact).c.failure_reason)).one()
    assert failing and "screenname@aol.com" in why


def test_a_delay_warning_changes_nothing(engine: Engine, cfg: Config, tmp_path: Path) -> None:
    """"Delayed Mail (still being retried)": the server has not given up, neither do we."""
    from bot.models import Contact, Invoice

    _ledger_for(engine, tmp_path, "christine.barsas@sivarikeskus.fi", "F-9203")
    (row,) = run(engine, cfg, [(FLUFL / "dsn_17.txt").read_bytes()])
    assert (row["kind"], row["status"]) == ("bounce", "applied")
    assert "delayed, the server keeps trying: christine.barsas@sivarikeskus.fi" in row["cues"]
    with engine.connect() as c:
        assert c.execute(sa.select(table(Invoice).c.state)).scalar_one() == "active"
        assert c.execute(sa.select(table(Contact).c.failing)).scalar_one() is False


def test_failed_addresses_are_found_in_most_real_bounces() -> None:
    """flufl.bounce names the failed address in most of the 103 real bounces (it is not needed to
    recognise one, only to say which address failed)."""
    from bot.understand import bounce_recipients

    files = sorted(FLUFL.glob("*.txt"))
    named = [p.name for p in files if any(bounce_recipients(p.read_bytes()))]
    print(f"failed or delayed address found in {len(named)}/{len(files)} real bounces")
    assert len(named) >= 0.9 * len(files)


def test_a_person_confirms_the_suggested_invoice(engine: Engine, cfg: Config, tmp_path: Path) -> None:
    """No number, no thread: the sender's only open invoice is a guess, held until a person decides;
    `assign` lifts that hold and applies the message to it."""
    from bot.errors import NotFoundError, RelanceError
    from bot.models import Event, Invoice

    _import(engine, tmp_path, "F-9301")
    raw = msg("From: compta@client.example\nSubject: Paiement\nMessage-ID: <g1@client.example>\n",
              "Nous avons effectué le virement ce matin.".encode())
    (row,) = run(engine, cfg, [raw])
    assert (row["status"], row["invoices"], row["suggested"]) == ("triage", [], ["F-9301"])
    with pytest.raises(NotFoundError, match="no invoice F-0000"):
        decisions.assign(engine, cfg, NOW, row["id"], ["F-0000"], "cli:anne")
    line = decisions.assign(engine, cfg, NOW, row["id"], ["F-9301"], "cli:anne")
    assert line == f"#{row['id']} payment claimed -> F-9301: applied"
    with engine.connect() as c:
        (after,) = reports.messages(c)
        hold, held_by = c.execute(sa.select(table(Invoice).c.hold_until, table(Invoice).c.held_by)).one()
        kinds = list(c.execute(sa.select(table(Event).c.kind, table(Event).c.actor)
                               .where(table(Event).c.inbound_id == row["id"]).order_by(table(Event).c.id)))
    assert (after["status"], after["invoices"], after["suggested"]) == ("applied", ["F-9301"], [])
    assert after["reason"].startswith("assigned by cli:anne to F-9301")
    assert hold == NOW + timedelta(days=cfg.pause.payment_claim_days) and held_by is None
    # What the person's assignment applies is recorded as theirs (an undo tells it from others' changes).
    assert [tuple(k) for k in kinds] == [("held", "relance"), ("paused", "relance"), ("released", "cli:anne"),
                                         ("message_payment_claim", "cli:anne"), ("paused", "cli:anne"),
                                         ("message_assigned", "cli:anne")]
    with pytest.raises(RelanceError, match="already applied to F-9301"):
        decisions.assign(engine, cfg, NOW, row["id"], ["F-9301"], "cli:anne")


def test_without_worker_processes_the_backlog_is_parsed_here(engine: Engine, make_config: Callable[..., Config],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine that refuses new processes (limits, a sandbox) still gets every message understood."""
    monkeypatch.setattr(pool, "PARALLEL_FROM", 5)
    monkeypatch.setattr(inbound, "BATCH", 4)

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(pool, "ProcessPoolExecutor", refuse)
    raws = [msg(f"From: c{i}@client.example\nSubject: x\nMessage-ID: <n{i}@client.example>\n") for i in range(10)]
    rows = run(engine, make_config(imap={"workers": 2}), raws)
    assert len(rows) == 10 and all(r["status"] == "triage" for r in rows)


def test_a_renumbered_folder_dedupes_by_message_id_too(engine: Engine, cfg: Config) -> None:
    """After a UIDVALIDITY change, a message the server rewrote a header of is still the same message."""
    first = msg("From: a@client.example\nSubject: x\nMessage-ID: <same@client.example>\n")
    report = inbound.SyncReport()
    inbound.store_new(engine, MemorySource({"INBOX": [first]}), "INBOX", NOW, report)
    rewritten = msg("X-Spam-Score: 0.1\nFrom: a@client.example\nSubject: x\nMessage-ID: <same@client.example>\n")
    other = msg("From: b@client.example\nSubject: y\nMessage-ID: <new@client.example>\n")
    report = inbound.SyncReport()
    inbound.store_new(engine, MemorySource({"INBOX": [rewritten, other]}, uidvalidity=2), "INBOX", NOW, report)
    assert (report.rescanned, report.stored, report.duplicates) == (["INBOX"], 1, 1)


def test_each_mail_line_carries_its_message_and_invoices_for_a_json_log(engine: Engine, cfg: Config,
                                                                        tmp_path: Path) -> None:
    """`--log-format json`: a line about a message carries its Message-ID, invoices, kind and status
    as fields a log collector can filter on, not only in the sentence."""
    import json
    import logging

    from bot.logs import JsonFormatter, fields

    (tmp_path / "l.csv").write_text("number,client,email,amount,currency,issue_date,due_date\n"
                                    "F-2026-001,Client,a@b.example,10.00,EUR,2027-03-01,2027-03-31\n")
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), NOW, "l.csv")
    inbound.store_new(engine, MemorySource({"INBOX": [
        msg("From: a@b.example\nSubject: Facture F-2026-001\nMessage-ID: <m1@b.example>\n", b"Paid yesterday.\r\n"),
        b""]}), "INBOX", NOW, inbound.SyncReport())
    lines = inbound.process(engine, cfg, NOW)
    docs = []
    for line in lines:
        record = logging.LogRecord("relance", logging.INFO, __file__, 1, "mail %s", (line,), None)
        record.__dict__.update(fields(line))
        docs.append(json.loads(JsonFormatter().format(record)))
    read = next(d for d in docs if d.get("message_id"))
    assert read["message_id"] == "<m1@b.example>" and read["invoices"] == ["F-2026-001"]
    assert read["kind"] and read["status"] and read["message"].startswith("mail ")
    assert fields(inbound._quarantine(engine, 2, "could not be processed")) == {"inbound_id": 2,
                                                                              "status": "quarantined"}


def test_a_large_message_is_stored_byte_for_byte(engine: Engine) -> None:
    """Over a MB, SQLite gets the bytes a MB at a time (a blob made to size), PostgreSQL in one
    statement: either way the store gives back what the server gave."""
    big = msg("From: compta@client.example\nSubject: scan\nMessage-ID: <big@client.example>\n",
              b"Ci-joint le scan.\r\n" + bytes(range(256)) * 12_000 + b"\x00 end")
    small = msg("From: compta@client.example\nSubject: ok\nMessage-ID: <small@client.example>\n")
    inbound.store_new(engine, MemorySource({"INBOX": [small, big]}), "INBOX", NOW, inbound.SyncReport())
    with engine.connect() as c:
        ids = list(c.execute(sa.select(table(Inbound).c.id).order_by(table(Inbound).c.id)).scalars())
        assert list(store.inbound_raw(c, ids).values()) == [small, big]
