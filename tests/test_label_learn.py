"""A person's reading of replies: `relance label`, `relance learn`, `relance close` lifting holds,
`relance contact` after a bounce; through the command line as the contract gives it."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from bot import inbound, store
from bot.config import load
from bot.mailbox import MemorySource
from tests.conftest import at
from tests.test_contract_like import LEDGER

NOW = ("--now", "2027-04-12T10:00:00+02:00")


def deliver(cli: Any, *raws: bytes) -> None:
    """Replies arriving in the AR inbox, read as `relance sync` would."""
    cfg = load(cli.work / "config.toml")
    engine = store.make_engine(cfg.database.url)
    inbound.store_new(engine, MemorySource({"INBOX": list(raws)}), "INBOX", at("2027-04-12T09:00"),
                      inbound.SyncReport())
    inbound.process(engine, cfg, at("2027-04-12T09:00"))
    engine.dispose()


def receive(engine: Any, cfg: Any, tmp_path: Any, ledger_csv: str, *raws: bytes) -> None:
    """The ledger imported, then replies arriving and read, on the store directly."""
    from bot import ledger

    (tmp_path / "l.csv").write_text(ledger_csv)
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), at("2027-03-01T08:00"), "l.csv")
    inbound.store_new(engine, MemorySource({"INBOX": list(raws)}), "INBOX", at("2027-04-12T09:00"),
                      inbound.SyncReport())
    inbound.process(engine, cfg, at("2027-04-12T09:00"))


def reply(n: int, sender: str, text: str, subject: str = "Votre message") -> bytes:
    return (f"From: {sender}\r\nSubject: {subject}\r\nMessage-ID: <r{n}@client.example>\r\n"
            f"Date: Mon, 12 Apr 2027 08:30:00 +0200\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
            ).encode()


def status(cli: Any) -> dict[str, dict[str, Any]]:
    return {r["number"]: r for r in json.loads(cli("status", "--json", *NOW).stdout)}


def test_a_reply_waits_for_a_person_who_labels_it_and_the_classifier_learns(cli: Any) -> None:
    assert cli("init").returncode == 0
    (cli.work / "ledger.csv").write_text(LEDGER)
    assert cli("import", "ledger.csv").returncode == 0
    deliver(cli, reply(1, "compta@exemple.example", "Bonjour, je regarde ça avec notre comptable."))
    (m,) = json.loads(cli("messages", "--json", "--triage", *NOW).stdout)
    assert status(cli)["F-1001"]["next_action"] == "triage", "held until a person has read it"
    assert cli("tick", *NOW).returncode == 0
    assert [str(x["To"]) for x in cli.sink.messages()] == ["Example Ltd <ap@example-ltd.example>"], \
        "nothing goes to the client who answered"

    r = cli("label", str(m["id"]), "promise_to_pay", *NOW)
    assert r.returncode == 1 and "no date to come" in r.stderr and "(--until YYYY-MM-DD)" in r.stderr, \
        "the command line names the flag that gives the date"
    r = cli("label", str(m["id"]), "payment_claim", *NOW)
    assert r.returncode == 0 and "labelled payment claimed" in r.stdout, r.stderr
    (after,) = json.loads(cli("messages", "--json", *NOW).stdout)
    assert (after["kind"], after["status"]) == ("payment_claim", "applied")
    assert status(cli)["F-1001"]["state"] == "paused", "now held for payment_claim_days"

    r = cli("learn", *NOW)
    assert r.returncode == 0 and "1 labelled here" in r.stdout, r.stderr
    engine = sa.create_engine(f"sqlite:///{cli.work / 'relance.db'}")
    with engine.connect() as c:
        (examples, labelled) = c.execute(sa.text("SELECT examples, labelled FROM classifier")).one()
    engine.dispose()
    assert labelled == 1 and examples > 700

    r = cli("label", str(m["id"]), "cheese", *NOW)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_closing_a_message_lets_the_ladder_go_on_unless_another_holds(cli: Any) -> None:
    cli("init")
    (cli.work / "ledger.csv").write_text(LEDGER)
    cli("import", "ledger.csv")
    deliver(cli, reply(1, "compta@exemple.example", "Bonjour, qui dois-je contacter chez vous ?"),
            reply(2, "compta@exemple.example", "Et merci de noter notre nouvelle adresse postale."))
    first, second = json.loads(cli("messages", "--json", "--triage", *NOW).stdout)
    assert cli("close", str(first["id"]), *NOW).returncode == 0
    assert status(cli)["F-1001"]["next_action"] == "triage", "the second message still holds it"
    assert cli("close", str(second["id"]), *NOW).returncode == 0
    assert status(cli)["F-1001"]["next_action"] == "reminder", "read by a person: the ladder goes on"


def test_a_new_address_after_a_bounce(cli: Any) -> None:
    cli("init")
    (cli.work / "ledger.csv").write_text(LEDGER)
    cli("import", "ledger.csv")
    cli.sink.refuse = {"compta@exemple.example": "550 5.1.1 no such user"}
    cli("tick", *NOW)
    assert status(cli)["F-1001"]["state"] == "bounced"
    r = cli("contact", "F-1001", "--email", "bad\naddress@x", *NOW)
    assert r.returncode == 1 and "expected a plain email address" in r.stderr
    r = cli("contact", "F-1001", "--email", "factures@exemple.example", *NOW)
    assert r.returncode == 0, r.stderr
    row = status(cli)["F-1001"]
    assert (row["state"], row["email"]) == ("active", "factures@exemple.example")
    doc = json.loads(cli("show", "F-1001", "--json", *NOW).stdout)
    assert "contact_changed" in [e["kind"] for e in doc["events"]]


def test_the_daemon_refits_at_night_when_people_labelled_something(engine: sa.Engine,
                                                                   make_config: Any, tmp_path: Any) -> None:
    from bot import decisions, learn, ledger
    from rules.classify import Kind

    cfg = make_config()
    (tmp_path / "l.csv").write_text(LEDGER)
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), at("2027-03-01T08:00"), "l.csv")
    inbound.store_new(engine, MemorySource({"INBOX": [reply(1, "compta@exemple.example", "ok vu")]}), "INBOX",
                      at("2027-04-12T09:00"), inbound.SyncReport())
    inbound.process(engine, cfg, at("2027-04-12T09:00"))
    assert learn.refit_if_due(engine, cfg.zone, at("2027-04-13T03:00")) == "", "nothing labelled yet"
    decisions.label(engine, cfg, at("2027-04-12T15:00"), 1, Kind.HUMAN_REPLY, "cli:anne")
    assert learn.refit_if_due(engine, cfg.zone, at("2027-04-12T16:00")) == "", "not during the day"
    assert "1 labelled here" in learn.refit_if_due(engine, cfg.zone, at("2027-04-13T03:00"))
    assert learn.refit_if_due(engine, cfg.zone, at("2027-04-13T03:15")) == "", "once: nothing new since"
    assert learn.current(engine).version.startswith("2027-04-13"), "the refit model is the one in use"


def test_the_command_lines_kinds_are_the_classifiers() -> None:
    """bot/cli.py spells the kinds out (importing the classifier would slow every command by 60 ms)."""
    from bot.cli import KINDS
    from rules.classify import Kind

    assert sorted(KINDS) == sorted(k.value for k in Kind)


def test_an_unknown_sender_naming_the_client_holds_its_invoices_until_a_person_decides(
        engine: Any, make_config: Any, tmp_path: Any) -> None:
    from bot import actions

    cfg = make_config()
    text = ("Margaret from Greenleaf here, writing from my own email. My bank says the account name does not "
            "match: can you confirm your IBAN before I send anything?")
    receive(engine, cfg, tmp_path,
            "number,client,email,amount,currency,issue_date,due_date,language\n"
            "FA-1,Greenleaf Organics,accounts@greenleaf.example,720.00,EUR,2027-01-12,2027-04-02,en\n"
            "FA-2,Greenleaf Organics,accounts@greenleaf.example,1200.00,EUR,2027-02-28,2027-03-29,en\n"
            "FA-3,Brightlane Studio,ap@brightlane.example,300.00,EUR,2027-02-28,2027-03-29,en\n",
            reply(1, "margaret@mail.example", text, "Bank details"))
    with engine.connect() as c:
        (status_, reason), = c.execute(sa.text("SELECT status, reason FROM inbound")).all()
        held = dict(c.execute(sa.text("SELECT number, held_by FROM invoice")).all())
    assert status_ == "triage" and "Greenleaf Organics" in reason
    assert held == {"FA-1": 1, "FA-2": 1, "FA-3": None}, "the client it names waits; no other"
    actions.close_message(engine, 1, at("2027-04-12T15:00"), "cli:anne")
    with engine.connect() as c:
        assert set(c.execute(sa.text("SELECT held_by FROM invoice")).scalars()) == {None}


def test_labelling_a_message_a_person_had_filed_applies_what_the_kind_does(
        engine: Any, make_config: Any, tmp_path: Any, monkeypatch: Any) -> None:
    """Read as a claim without the margin, filed by a person, then labelled a claim: the claim's hold
    applies (it was skipped as if the bot had applied it alone)."""
    from decimal import Decimal

    from bot import actions, decisions, ledger, understand
    from rules.classify import Kind, Understanding

    cfg = make_config()
    (tmp_path / "l.csv").write_text(LEDGER)
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), at("2027-03-01T08:00"), "l.csv")
    monkeypatch.setattr(understand, "classify", lambda facts, domain, model, reading=None: Understanding(
        Kind.PAYMENT_CLAIM, Decimal("0.1"), ("unsure",)))
    inbound.store_new(engine, MemorySource({"INBOX": [reply(1, "compta@exemple.example", "F-1001 c'est bon")]}),
                      "INBOX", at("2027-04-12T09:00"), inbound.SyncReport())
    inbound.process(engine, cfg, at("2027-04-12T09:00"))
    actions.close_message(engine, 1, at("2027-04-12T10:00"), "cli:anne")
    decisions.label(engine, cfg, at("2027-04-12T11:00"), 1, Kind.PAYMENT_CLAIM, "cli:anne")
    with engine.connect() as c:
        until = c.execute(sa.text("SELECT hold_until FROM invoice WHERE number = 'F-1001'")).scalar()
    assert str(until).startswith("2027-04-22"), until


def test_mail_from_an_ignored_sender_never_waits_for_a_person_unless_it_speaks_of_paying(
        engine: Any, make_config: Any, tmp_path: Any) -> None:
    from bot import desk, ledger

    cfg = make_config()
    (tmp_path / "l.csv").write_text(LEDGER)
    ledger.import_rows(engine, ledger.read(tmp_path / "l.csv", "fr"), at("2027-03-01T08:00"), "l.csv")
    desk.ignore_sender(engine, "news@exemple.example", at("2027-04-12T08:00"), "cli:anne")
    inbound.store_new(engine, MemorySource({"INBOX": [
        reply(1, "news@exemple.example", "Découvrez nos nouveautés de printemps !", "Lettre d'avril"),
        reply(2, "news@exemple.example", "Nous avons effectué le virement pour la facture F-1001 ce matin.")]}),
        "INBOX", at("2027-04-12T09:00"), inbound.SyncReport())
    inbound.process(engine, cfg, at("2027-04-12T09:00"))
    with engine.connect() as c:
        rows = {i: (st, r) for i, st, r in c.execute(sa.text("SELECT id, status, reason FROM inbound ORDER BY id"))}
    assert rows[1][0] == "applied" and "ignore" in rows[1][1], "the newsletter is filed"
    assert "ignore" not in rows[2][1], "a payment it speaks of is still read"


def test_a_colleague_at_the_clients_domain_holds_its_invoices_until_a_person_decides(
        engine: Any, make_config: Any, tmp_path: Any) -> None:
    cfg = make_config()
    text = "I found your reminder rather curt. Our practice manager is back next week and will look at it then."
    receive(engine, cfg, tmp_path,
            "number,client,email,amount,currency,issue_date,due_date,language\n"
            "FA-1,Oakridge Dental Practice,admin@oakridge-dental.example,3250.00,EUR,2027-01-05,2027-03-29,en\n"
            "FA-3,Brightlane Studio,ap@brightlane.example,300.00,EUR,2027-02-28,2027-03-29,en\n",
            reply(1, "r.patel@oakridge-dental.example", text, "Your reminder"))
    with engine.connect() as c:
        held = dict(c.execute(sa.text("SELECT number, held_by FROM invoice")).all())
        reason = c.execute(sa.text("SELECT reason FROM inbound")).scalar()
    assert held == {"FA-1": 1, "FA-3": None} and "Oakridge Dental Practice" in reason
