"""A person's reply to a client (bot/replies.py): drafted in the client's language, recorded before
it is sent, sent once through the outbox to a real SMTP server (aiosmtpd on loopback), threaded to
the client's message, undoable until it has gone; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import desk, replies
from bot.cli import main
from bot.config import Config
from bot.errors import RelanceError
from bot.mailer import SmtpMailer
from bot.outbox import Outbox
from bot.render import Renderer
from bot.tick import tick
from tests.conftest import EXAMPLE, merge, no_sleep
from tests.servers import SmtpSink
from tests.test_tui import NOW, deliver

HOSTILE = (b"From: b@client.example\r\nSubject: =?utf-8?q?Facture_F-2=0D=0ABcc:_thief@evil.example?=\r\n"
           b"Message-ID: <h3@client.example>\r\nReferences: <ok1@client.example> <bad ref> <x@y>\r\n\tBcc: x@evil\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nNous avons pay\xc3\xa9 la facture F-2 hier.\r\n")


def rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as c:
        return list(c.execute(sa.text(sql)).all())


def sent_replies(sink: SmtpSink) -> list[Any]:
    """The replies the server received (a tick also sends the reminders that are due)."""
    return [m for m in sink.messages() if ".reply." in str(m["Message-ID"])]


def run_tick(engine: Engine, cfg: Config) -> Any:
    return asyncio.run(tick(engine, cfg, SmtpMailer(cfg.smtp, None), NOW, datetime.now(UTC), sleep=no_sleep))


@pytest.mark.parametrize(("incoming", "expected"), [
    ("Facture F-2", "Re: Facture F-2"),
    ("RE: Re : TR: Facture F-2", "Re: Facture F-2"),
    ("Facture F-2\r\nBcc: thief@evil.example", "Re: Facture F-2 Bcc: thief@evil.example"),
    ("Facture\x00\x1b[31m F-2\u2028", "Re: Facture [31m F-2"),
    ("", "Fallback"),
    ("Re:   ", "Fallback"),
    ("x" * 500, "Re: " + "x" * 196),
])
def test_the_subject_of_a_reply_is_safe_for_a_header(incoming: str, expected: str) -> None:
    """No line end (a header of its own), control character or runaway length from the client's subject."""
    assert replies.reply_subject(incoming, "Fallback") == expected


@pytest.mark.parametrize(("mid", "raw", "expected"), [
    ("<a@b>", b"References: <r1@x> <r2@x>\r\n\r\n", ["<r1@x>", "<r2@x>", "<a@b>"]),
    ("<a@b>", b"References: <r1@x> <a@b>\r\n\r\n", ["<r1@x>", "<a@b>"]),
    ("<a@b>\r\nBcc: x", b"\r\n", []),
    ("not-an-id", b"References: <ok@x> <with space@x> <\xff@x>\r\n\r\n", ["<ok@x>"]),
    ("<a@b>", b"References: " + b" ".join(b"<r%d@x>" % i for i in range(300)) + b"\r\n\r\n",
     [f"<r{i}@x>" for i in range(180, 200)] + ["<a@b>"]),
])
def test_a_reply_threads_only_what_has_the_form_of_a_message_id(mid: str, raw: bytes, expected: list[str]) -> None:
    """In-Reply-To/References: the client's Message-ID and its last references, each a plain <...>."""
    assert replies.thread_of(mid, raw) == expected


def test_a_declined_plan_with_its_reply_goes_out_once_threaded(engine: Engine,
                                                               desk_with_plan: tuple[Config, SmtpSink]) -> None:
    """n with a reply: the invoice resumes and the reply is recorded pending in the same decision; the
    tick sends it to the client's sender, in French, Re: its subject, In-Reply-To its Message-ID;
    the next tick sends nothing more."""
    cfg, sink = desk_with_plan
    composed = replies.prepare(engine, cfg, 2, "decline_plan", None, NOW)
    assert composed.to == "b@client.example"
    text = desk.decide(engine, NOW, "tui:me", "reject_plan", "too long", desk.Scope(invoices=("F-2",), inbounds=(2,)),
                       lambda: desk.reject_plan(engine, "F-2", NOW, "tui:me", "too long", 2, reply=composed)).text
    assert "plan declined" in text and "b@client.example" in text
    assert rows(engine, "SELECT status, stage FROM outbound") == [("pending", "reply")], "recorded before it is sent"
    assert rows(engine, "SELECT kind, actor, reason FROM event WHERE kind = 'reply_queued'") == [
        ("reply_queued", "tui:me", "too long")]
    report = run_tick(engine, cfg)
    assert report.sent and not report.failed
    (msg,) = sent_replies(sink)
    assert msg["To"] == "b@client.example"
    assert msg["Subject"] == "Re: Facture F-2"
    assert msg["In-Reply-To"] == "<p2@client.example>"
    assert msg["References"] == "<p2@client.example>"
    body = msg.get_content()
    assert "400,00\xa0€ le 30 avril 2027" in body and "900,00\xa0€ restent dus" in body, "the proposal, in French"
    assert rows(engine, "SELECT status FROM outbound WHERE stage = 'reply'") == [("sent",)]
    assert ("reply_sent",) in rows(engine, "SELECT kind FROM event WHERE outbound_id IS NOT NULL")
    run_tick(engine, cfg)
    assert len(sent_replies(sink)) == 1, "never twice"


def test_undo_cancels_a_reply_until_it_has_gone(engine: Engine, desk_with_plan: tuple[Config, SmtpSink]) -> None:
    """Undone while pending: cancelled, never sent. Once sent: the undo is refused and says so."""
    cfg, sink = desk_with_plan
    desk.decide(engine, NOW, "cli:me", "reply", "ack", desk.Scope(inbounds=(1,)),
                lambda: desk.reply(engine, cfg, 1, "answer_dispute", "Nous regardons.\n", NOW, "cli:me"))
    assert desk.undo(engine, NOW, "cli:me").startswith("undone: reply to a@client.example")
    assert rows(engine, "SELECT status FROM outbound") == [("cancelled",)]
    assert ("reply_cancelled", "cli:me") in rows(engine, "SELECT kind, actor FROM event")
    run_tick(engine, cfg)
    assert sent_replies(sink) == [], "a cancelled reply never goes"
    desk.decide(engine, NOW, "cli:me", "reply", "ack", desk.Scope(inbounds=(1,)),
                lambda: desk.reply(engine, cfg, 1, "answer_dispute", "Nous regardons.\n", NOW, "cli:me"))
    run_tick(engine, cfg)
    assert len(sent_replies(sink)) == 1
    with pytest.raises(RelanceError, match="already sent: a mail that went out cannot be undone"):
        desk.undo(engine, NOW, "cli:me")
    assert rows(engine, "SELECT status FROM outbound ORDER BY id") == [("cancelled",), ("sent",)]


def test_a_reply_left_sending_by_a_crash_is_never_sent_again(engine: Engine,
                                                             desk_with_plan: tuple[Config, SmtpSink]) -> None:
    """Claimed (sending) then the process dies: the next pass counts it uncertain, sends nothing."""
    cfg, sink = desk_with_plan
    q = replies.queue(engine, cfg, 2, "accept_plan", None, NOW, "cli:me")
    dead = Outbox(engine, cfg, Renderer.from_config(cfg), NOW, datetime.now(UTC), instance="elsewhere:1")
    assert dead.claim(q.outbound_id) is not None
    assert dead.claim(q.outbound_id) is None, "claimed once"
    later = Outbox(engine, cfg, Renderer.from_config(cfg), NOW, datetime(2100, 1, 1, tzinfo=UTC))
    assert later.resolve_stale() == [q.message_id]
    run_tick(engine, cfg)
    assert sent_replies(sink) == []
    assert rows(engine, "SELECT status FROM outbound") == [("uncertain",)]
    assert ("delivery_uncertain",) in rows(engine, "SELECT kind FROM event")


def test_a_hostile_message_gets_a_clean_reply(engine: Engine, desk_with_plan: tuple[Config, SmtpSink]) -> None:
    """An encoded CR/LF in the subject and junk in References reach no header of the reply."""
    cfg, sink = desk_with_plan
    deliver(engine, cfg, "Evil", HOSTILE)
    (mid,) = rows(engine, "SELECT id FROM inbound WHERE message_id = '<h3@client.example>'")[0]
    replies.queue(engine, cfg, mid, "ack_claim", None, NOW, "cli:me")
    run_tick(engine, cfg)
    (msg,) = sent_replies(sink)
    raw = msg.as_bytes()
    assert b"\r\nBcc:" not in raw and msg["Bcc"] is None
    assert msg["Subject"] == "Re: Facture F-2 Bcc: thief@evil.example"
    assert msg["References"] == "<ok1@client.example> <x@y> <h3@client.example>"
    assert [r for _, r, data in sink.received if b".reply." in data] == [["b@client.example"]]


def test_a_reply_needs_an_invoice_and_an_address(engine: Engine, desk_with_plan: tuple[Config, SmtpSink]) -> None:
    """Refused, with why, before anything is recorded: a message tied to no invoice, an empty text,
    a template that does not exist, a sender that is no plain address."""
    cfg, _ = desk_with_plan
    deliver(engine, cfg, "Other",
            b"From: stranger@nowhere.example\r\nSubject: hi\r\nMessage-ID: <s@n>\r\n\r\nhello\r\n")
    (stranger,) = rows(engine, "SELECT id FROM inbound WHERE message_id = '<s@n>'")[0]
    with pytest.raises(RelanceError, match="concerns no invoice"):
        replies.queue(engine, cfg, stranger, "ack_claim", None, NOW, "cli:me")
    with pytest.raises(RelanceError, match="empty"):
        replies.queue(engine, cfg, 2, "ack_claim", " \n\n", NOW, "cli:me")
    with pytest.raises(RelanceError, match="expected one of"):
        replies.queue(engine, cfg, 2, "insult", None, NOW, "cli:me")
    with engine.begin() as c:
        c.execute(sa.text("UPDATE inbound SET from_addr = 'b@client.example>, x@evil' WHERE id = 2"))
    with pytest.raises(RelanceError, match="not an address a reply can go to"):
        replies.queue(engine, cfg, 2, "ack_claim", None, NOW, "cli:me")
    assert rows(engine, "SELECT count(*) FROM outbound") == [(0,)]


def test_the_clients_answer_to_a_reply_threads_to_its_invoice(engine: Engine,
                                                              desk_with_plan: tuple[Config, SmtpSink]) -> None:
    """A client answering our reply (In-Reply-To its Message-ID only) is tied to the invoice."""
    cfg, _ = desk_with_plan
    q = replies.queue(engine, cfg, 2, "decline_plan", None, NOW, "cli:me")
    run_tick(engine, cfg)
    deliver(engine, cfg, "Back", b"From: other@elsewhere.example\r\nSubject: ok\r\nMessage-ID: <back@e>\r\n"
            b"In-Reply-To: " + q.message_id.encode() + b"\r\n\r\nEntendu, merci.\r\n")
    assert rows(engine, "SELECT i.number FROM event e JOIN invoice i ON i.id = e.invoice_id "
                        "JOIN inbound m ON m.id = e.inbound_id WHERE m.message_id = '<back@e>'")[0] == ("F-2",)


def test_relance_reply_from_the_command_line(engine: Engine, db_url: str, desk_with_plan: tuple[Config, SmtpSink],
                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--draft prints and records nothing; --body-file --send queues and sends the text as written,
    recorded with --as; a message named by its Message-ID works too."""
    from tests.test_contract_like import toml_dump

    cfg, sink = desk_with_plan
    port = cfg.smtp.port
    (tmp_path / "config.toml").write_text(toml_dump(merge(EXAMPLE, {
        "database": {"url": db_url}, "company": {"language": "en"},
        "smtp": {"host": "127.0.0.1", "port": port, "tls": "none", "username": "", "rate_per_minute": 0}})))
    base = ["--config", str(tmp_path / "config.toml"), "--now", "2027-04-06T11:00:00+02:00"]
    assert main(["reply", *base, "2", "--template", "ack_claim", "--draft"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("To: b@client.example\nSubject: Re: Facture F-2\n") and "Merci de nous avoir" in out
    assert rows(engine, "SELECT count(*) FROM outbound") == [(0,)]
    (tmp_path / "body.txt").write_text("Bien reçu, merci.\n", encoding="utf-8")
    assert main(["reply", *base, "<p2@client.example>", "--template", "ack_claim", "--body-file",
                 str(tmp_path / "body.txt"), "--send", "--as", "alice", "--reason", "claim"]) == 0
    (msg,) = sent_replies(sink)
    assert msg.get_content() == "Bien reçu, merci.\n"
    assert rows(engine, "SELECT kind, actor, reason FROM event WHERE kind IN ('reply_queued', 'decision') "
                        "ORDER BY id") == [
        ("reply_queued", "cli:alice", "claim"), ("decision", "cli:alice", "claim")]
    assert main(["undo", *base[:2], "--now", "2027-04-06T11:00:00+02:00"]) == 1, "cli:<OS user> has nothing to undo"
    assert main(["reply", *base, "99", "--template", "ack_claim"]) == 1


REPLY_TO = (b"From: noreply@client.example\r\nReply-To: Comptabilit\xc3\xa9 <Compta@Client.example>\r\n"
            b"Subject: Facture F-2\r\nMessage-ID: <rt1@client.example>\r\nReferences: <r0@client.example>\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nNous avons pay\xc3\xa9 la facture F-2 hier.\r\n")


def test_a_reply_goes_to_the_reply_to_of_the_message(engine: Engine, desk_with_plan: tuple[Config, SmtpSink]) -> None:
    """A client writing from a no-reply address with a Reply-To is answered at the Reply-To (To and
    RCPT), threaded to its message as any reply."""
    cfg, sink = desk_with_plan
    deliver(engine, cfg, "ReplyTo", REPLY_TO)
    (mid,) = rows(engine, "SELECT id FROM inbound WHERE message_id = '<rt1@client.example>'")[0]
    with engine.connect() as c:
        assert replies.draft(c, cfg, mid, "ack_claim", NOW).to == "compta@client.example"
    replies.queue(engine, cfg, mid, "ack_claim", None, NOW, "cli:me")
    run_tick(engine, cfg)
    (msg,) = sent_replies(sink)
    assert msg["To"] == "compta@client.example"
    assert [r for _, r, data in sink.received if b".reply." in data] == [["compta@client.example"]]
    assert msg["In-Reply-To"] == "<rt1@client.example>"
    assert msg["References"] == "<r0@client.example> <rt1@client.example>"


@pytest.mark.parametrize("reply_to", [
    b"b@client.example>, thief@evil.example",  # a second address smuggled past a naive split
    b"=?utf-8?q?Compta=0D=0ABcc:_thief@evil.example?= <compta@client.example>",  # a CR/LF once decoded
    b"compta@[127.0.0.1]",  # a domain literal: not a plain address
    b"nobody",
])
def test_a_reply_to_that_is_no_plain_address_is_refused(engine: Engine, desk_with_plan: tuple[Config, SmtpSink],
                                                        reply_to: bytes) -> None:
    """The Reply-To is checked as any address that comes in: refused with the header named, nothing
    recorded (never a silent fall back to the sender, who asked for answers elsewhere)."""
    cfg, _ = desk_with_plan
    deliver(engine, cfg, "ReplyTo", REPLY_TO.replace(b"Comptabilit\xc3\xa9 <Compta@Client.example>", reply_to))
    (mid,) = rows(engine, "SELECT id FROM inbound WHERE message_id = '<rt1@client.example>'")[0]
    with pytest.raises(RelanceError, match=r"its Reply-To .* is not an address a reply can go to"):
        replies.queue(engine, cfg, mid, "ack_claim", None, NOW, "cli:me")
    assert rows(engine, "SELECT count(*) FROM outbound WHERE stage = 'reply'") == [(0,)]
