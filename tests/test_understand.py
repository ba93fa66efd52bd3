"""Parsing and understanding real mail: quote stripping on public corpora, bounces, intents."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from bot.learn import shipped
from bot.understand import find_dates, html_to_text, parse, strip_quotes, understand_batch
from rules.classify import Kind, MailFacts, classify

CORPUS = Path(__file__).parent / "corpus"
MODEL = shipped()
LOREM_END = "nibh."  # the crisp fixtures' reply paragraph ends with this word


def crisp_cases() -> list[tuple[str, str, str]]:
    """(name, text, expected reply) for every crisp fixture whose reply is the Lorem paragraph."""
    cases = []
    for p in sorted((CORPUS / "quoted-replies" / "crisp").glob("*.txt")):
        text = p.read_text(errors="replace")
        if text.startswith("Fusce bibendum"):
            cases.append((p.name, text, text[:text.index(LOREM_END) + len(LOREM_END)].strip()))
    return cases


def test_quote_stripping_on_the_crisp_corpus() -> None:
    """What the person wrote, exactly, in at least 95 % of the public fixtures (all languages)."""
    cases = crisp_cases()
    misses = [name for name, text, expected in cases if strip_quotes(text) != expected]
    rate = 1 - len(misses) / len(cases)
    print(f"quote stripping: {len(cases) - len(misses)}/{len(cases)} exact ({rate:.1%}); misses: {misses}")
    assert len(cases) >= 40
    assert rate >= 0.95, misses


@pytest.mark.parametrize(("name", "expected"), [("iphone.eml", "Hello"), ("sparrow.eml", "Hello")])
def test_talon_phone_replies(name: str, expected: str) -> None:
    parsed = parse((CORPUS / "quoted-replies" / "talon" / name).read_bytes())
    assert parsed.facts.text == expected


def talon_cases() -> list[tuple[str, str, str]]:
    """(name, text we keep, expected) for talon's fixtures, as talon's own tests expect them:
    "Hello" for a message, "Hi. I am fine." for an HTML page. (Talon's `iphone_reply_text` and
    `sparrow_reply_text` keep the signature, "Sent from my iPhone", which Relance strips.)"""
    cases = []
    for p in sorted((CORPUS / "quoted-replies" / "talon").iterdir()):
        if p.suffix == ".eml":
            cases.append((p.name, parse(p.read_bytes()).facts.text, "Hello"))
        elif p.suffix == ".html":
            cases.append((p.name, strip_quotes(html_to_text(p.read_text(errors="replace"))), "Hi. I am fine."))
    return cases


def test_quote_stripping_on_every_public_reply_with_a_known_text() -> None:
    """The issue's measure: the 64 real quoted replies whose expected text is known (talon's 21,
    crisp's 43); the best library alone kept exactly what the person wrote in about half."""
    results = [(n, " ".join(got.split()) == " ".join(want.split())) for n, got, want in talon_cases()]
    results += [(n, strip_quotes(text) == want) for n, text, want in crisp_cases()]
    misses = [n for n, ok in results if not ok]
    rate = 1 - len(misses) / len(results)
    print(f"quote stripping: {len(results) - len(misses)}/{len(results)} exact ({rate:.1%}); misses: {misses}")
    assert len(results) == 64
    assert rate >= 0.95, misses  # the issue asks for 90 %; we hold what we reached


def test_every_talon_message_parses() -> None:
    for p in (CORPUS / "quoted-replies" / "talon").glob("*.eml"):
        parsed = parse(p.read_bytes())
        assert parsed.facts.text, p.name
        assert "wrote:" not in parsed.facts.text and "\n>" not in parsed.facts.text, p.name


def test_bounce_recall_on_real_bounces() -> None:
    """103 real bounces from many servers (flufl.bounce's corpus): recognised without flufl."""
    files = sorted((CORPUS / "bounces" / "flufl").glob("*.txt"))
    missed = [p.name for p in files
              if classify(parse(p.read_bytes()).facts, "acme.example", MODEL).kind is not Kind.BOUNCE]
    print(f"bounce recall: {len(files) - len(missed)}/{len(files)}; missed: {missed}")
    assert len(files) >= 100
    assert len(missed) / len(files) <= 0.01, missed


def facts(text: str, subject: str = "Re: Rappel : facture F-1", **headers: str) -> MailFacts:
    return MailFacts(sender="compta@client.example", subject=subject, text=text,
                     headers={k.replace("_", "-").lower(): v for k, v in headers.items()})


@pytest.mark.parametrize(("text", "subject", "headers", "kind"), [
    ("Nous avons effectué le virement ce matin.", "", {}, Kind.PAYMENT_CLAIM),
    ("Le règlement a été envoyé hier par chèque.", "", {}, Kind.PAYMENT_CLAIM),
    ("Please find attached the remittance advice.", "", {}, Kind.PAYMENT_CLAIM),
    ("This invoice has been paid on March 3rd.", "", {}, Kind.PAYMENT_CLAIM),
    ("Nous réglerons le 15 décembre.", "", {}, Kind.PROMISE_TO_PAY),
    ("We will pay by the end of the month.", "", {}, Kind.PROMISE_TO_PAY),
    ("Pourrions-nous payer en 3 fois ? 500 € par mois.", "", {}, Kind.PAYMENT_PLAN),
    ("Can we agree on a payment plan in monthly instalments?", "", {}, Kind.PAYMENT_PLAN),
    ("Nous contestons cette facture : le montant est erroné.", "", {}, Kind.DISPUTE),
    ("We never received the goods, so this is in dispute.", "", {}, Kind.DISPUTE),
    ("Merci d'émettre un avoir, la livraison était incomplète.", "", {}, Kind.DISPUTE),
    ("Bonjour, je transmets à notre comptable.", "", {}, Kind.HUMAN_REPLY),
    ("Je suis absente jusqu'au 12 avril.", "Réponse automatique : Rappel", {}, Kind.AUTO_REPLY),
    ("I am out of the office.", "Automatic reply: Reminder", {"auto_submitted": "auto-replied"}, Kind.AUTO_REPLY),
    ("Thanks for your email.", "Your request", {"x_autoreply": "yes"}, Kind.AUTO_REPLY),
    ("Thanks.", "Ticket #123", {"precedence": "bulk"}, Kind.AUTO_REPLY),
    ("Je suis absente. Pour les paiements, contactez compta@client.example.", "Réponse automatique : Rappel",
     {"auto_submitted": "auto-replied"}, Kind.AUTO_REPLY),
    ("Vous avez reçu un virement SEPA de 1 200,00 EUR. Référence : F-1", "Avis de virement reçu",
     {"auto_submitted": "auto-generated"}, Kind.PAYMENT_CLAIM),
    ("You received a payment of EUR 540.00 for invoice F-1.", "Payment received", {"precedence": "bulk"},
     Kind.PAYMENT_CLAIM),
    ("Delivery to the following recipient failed permanently: 550 5.1.1 user unknown",
     "Delivery Status Notification (Failure)", {"auto_submitted": "auto-replied"}, Kind.BOUNCE),
])
def test_classification_table(text: str, subject: str, headers: dict[str, str], kind: Kind) -> None:
    u = classify(facts(text, subject or "Re: Rappel : facture F-1", **headers), "acme.example", MODEL)
    assert u.kind is kind, u.cues
    assert u.cues and 0 < u.confidence <= 1


@pytest.mark.parametrize("text", ["Nous paierons le 10 mai, mais nous contestons les frais de port.",
                                  "We will pay on the 30th but we dispute the delivery charge."])
def test_a_promise_with_a_dispute_in_the_same_message_is_never_applied_alone(text: str) -> None:
    """Read as the dispute, or as the promise with no margin: either way a person decides."""
    u = classify(facts(text), "acme.example", MODEL)
    assert u.kind in (Kind.DISPUTE, Kind.PROMISE_TO_PAY) and u.confidence == 0
    assert any("dispute" in c for c in u.cues), u.cues


@pytest.mark.parametrize("text", [
    "Nous avons viré 2 000 € ce matin. Le solde sera réglé fin mai.",
    "We paid invoice 12 this morning. Invoice 13 will be paid next Friday.",
])
def test_a_claim_with_a_clause_of_another_payment_business_waits_for_a_person(text: str) -> None:
    u = classify(facts(text), "acme.example", MODEL)
    assert u.confidence == 0, u.cues


@pytest.mark.parametrize("text", ["Acceptez-vous le paiement par carte bancaire ?",
                                  "Can we pay this by bank transfer or only by card?"])
def test_a_question_about_paying_is_never_applied_as_a_payment(text: str) -> None:
    u = classify(facts(text), "acme.example", MODEL)
    assert u.kind not in (Kind.PAYMENT_CLAIM, Kind.PROMISE_TO_PAY) or u.confidence == 0, u.cues


def test_a_bounce_a_colleague_passes_on_is_a_bounce() -> None:
    f = MailFacts(sender="anne@acme.example", subject="TR: Undelivered Mail Returned to Sender",
                  text="Je te transfère ce retour, leur adresse ne marche plus.")
    assert classify(f, "acme.example", MODEL).kind is Kind.BOUNCE
    f = MailFacts(sender="it@client.example", subject="Fwd: your reminder",
                  text="FYI it bounced:\n550 5.1.1 <old@client.example>: user unknown")
    assert classify(f, "acme.example", MODEL).kind is Kind.BOUNCE


def test_our_own_reminder_coming_back_is_a_loop_not_an_answer() -> None:
    f = MailFacts(sender="relances@acme.example", subject="Rappel : facture F-1", text="Bonjour...")
    assert classify(f, "acme.example", MODEL).kind is Kind.AUTO_REPLY


@pytest.mark.parametrize(("text", "expected"), [
    ("Nous réglerons le 15 décembre.", date(2027, 12, 15)),
    ("I'm back on 12 April 2027.", date(2027, 4, 12)),
    ("Paiement prévu le 30/04/2027.", date(2027, 4, 30)),
])
def test_dates_are_found_in_french_and_english(text: str, expected: date) -> None:
    assert find_dates(text, date(2027, 4, 5))[0] == expected


@pytest.mark.parametrize(("text", "back"), [
    ("Je serai absent du bureau à partir du 6 avril 2027 et de retour le 19 avril 2027.", date(2027, 4, 19)),
    ("Le secrétariat est fermé du 12 au 23 avril 2027. Réouverture le 26 avril 2027.", date(2027, 4, 26)),
    ("I'm out of the office until 3 May 2027.", date(2027, 5, 3)),
])
def test_an_out_of_office_returns_on_its_latest_date(text: str, back: date) -> None:
    facts = MailFacts("a@b.example", "Réponse automatique : Relance", text, {"auto-submitted": "auto-replied"},
                      dates=find_dates(text, date(2027, 4, 5)))
    u = classify(facts, "acme.example", MODEL)
    assert (u.kind, u.date) == (Kind.AUTO_REPLY, back)


def test_the_promised_date_reaches_the_understanding() -> None:
    text = "Nous réglerons le 15 décembre."
    u = classify(MailFacts("a@b.example", "Re: F-1", text, dates=find_dates(text, date(2027, 4, 5))),
                 "acme.example", MODEL)
    assert (u.kind, u.date) == (Kind.PROMISE_TO_PAY, date(2027, 12, 15))


def test_a_message_mail_parser_cannot_read_is_read_by_the_standard_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """mail-parser tripping on a real bounce (an AttributeError inside it) does not quarantine it."""
    import mailparser

    def broken(raw: bytes) -> None:
        raise AttributeError("'NoneType' object has no attribute 'get'")

    monkeypatch.setattr(mailparser, "parse_from_bytes", broken)
    raw = (CORPUS / "bounces" / "flufl" / "postfix_01.txt").read_bytes()
    parsed = parse(raw)
    assert parsed.subject and parsed.facts.text and parsed.sender
    assert classify(parsed.facts, "acme.example", MODEL).kind is Kind.BOUNCE


QUOTED = "\n> Bonjour,\n> Sauf erreur de notre part, la facture suivante reste impayée.\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("Wir haben gestern bezahlt.\n\nAm 05.04.2027 um 10:00 schrieb ACME SAS <relances@acme.example>:" + QUOTED,
     "Wir haben gestern bezahlt."),
    ("Pagato ieri.\n\nIl giorno lun 5 apr 2027 alle ore 10:00 ACME SAS <relances@acme.example> ha scritto:" + QUOTED,
     "Pagato ieri."),
    ("Pagato ieri.\n\nDa: ACME SAS <relances@acme.example>\nInviato: lunedì 5 aprile 2027 10:00\nA: noi\n"
     "Oggetto: Rappel\n\nBonjour,\nSauf erreur", "Pagato ieri."),
    ("Gisteren betaald.\n\nOp 5 apr. 2027 om 10:00 schreef ACME SAS <relances@acme.example>:" + QUOTED,
     "Gisteren betaald."),
    ("Оплатили вчера.\n\n5 апр. 2027 г., в 10:00, ACME SAS <relances@acme.example> написал:" + QUOTED,
     "Оплатили вчера."),
    ("Paid yesterday.\n\n2016-03-03 17:21 GMT+01:00 ACME SAS <relances@acme.example>:" + QUOTED, "Paid yesterday."),
    ("Paid yesterday.\n\nAt 6/16/2016 08:32 PM, you wrote:\nBonjour,\nSauf erreur de notre part\n", "Paid yesterday."),
    ("Paid yesterday.\n\n*-------- Original Message --------*\nFrom: ACME\nBonjour,\nSauf erreur\n",
     "Paid yesterday."),
    ("Paid yesterday.\n\n________________________________\nDe : ACME SAS\nBonjour\n", "Paid yesterday."),
    ("Paid yesterday.\n\n-----------------------------\nFrom: ACME SAS\nSent: Monday\nBonjour\n", "Paid yesterday."),
    ("Paid:\n- FA-2027-0412\n- FA-2027-0413\n\nThanks", "Paid:\n• FA-2027-0412\n• FA-2027-0413\n\nThanks"),
])
def test_quotes_in_every_shape_and_language_go_and_the_reply_stays(text: str, expected: str) -> None:
    """Attributions in German, Italian, Dutch, Russian, Gmail's numeric form, Eudora's, decorated and
    ruled Outlook separators are cut; a list the person wrote is kept."""
    assert strip_quotes(text) == expected


SNS_BOUNCE = ('{"Type" : "Notification", "Message" : "{\\"notificationType\\":\\"Bounce\\",\\"bounce\\":{'
              '\\"bounceType\\":\\"Permanent\\",\\"bouncedRecipients\\":[{\\"emailAddress\\":\\"ops@bluewave.example\\"'
              '}]}}"}')


def test_an_amazon_ses_bounce_relayed_by_sns_is_a_bounce_with_its_address() -> None:
    raw = ("From: AWS Notifications <no-reply@sns.amazonaws.com>\r\nSubject: AWS Notification Message\r\n"
           "Message-ID: <sns1@amazonaws.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           + SNS_BOUNCE).encode()
    (u,) = understand_batch([(1, raw, False)], "acme.example", date(2027, 4, 6), MODEL)
    assert u.understanding is not None and u.understanding.kind is Kind.BOUNCE
    assert u.failed == ("ops@bluewave.example",)


@pytest.mark.parametrize(("subject", "text"), [
    ("Your message to clients@lists.example awaits moderator approval",
     "Your mail to 'Clients' with the subject Rappel is being held until the list moderator can review it."),
    ("Votre message à compta@liste.example est en attente de modération", "Le modérateur examinera votre message."),
])
def test_a_mailing_lists_notice_is_a_robot(subject: str, text: str) -> None:
    facts = MailFacts("owner@lists.example", subject, text, {"from": "owner@lists.example"})
    u = classify(facts, "acme.example", MODEL)
    assert u.kind is Kind.AUTO_REPLY


def test_a_subject_folded_after_an_encoded_word_keeps_its_space() -> None:
    raw = (b"From: a@b.example\r\nSubject: RE: =?utf-8?q?Rappel_=3A_facture_FA-2027-0412_=E2=80=94?=\r\n ACME SAS\r\n"
           b"\r\nPaid.\r\n")
    assert parse(raw).subject == "RE: Rappel : facture FA-2027-0412 — ACME SAS"


@pytest.mark.parametrize(("sender", "subject", "headers", "text"), [
    ("compta@client.example", "Re: Rappel : facture F-1", {"list-id": "<compta.client.example>", "precedence": "list"},
     "Nous contestons cette facture : la livraison n'a jamais eu lieu."),
    ("anne@acme.example", "TR: Votre relance", {},
     "Pour info.\n\n---------- Forwarded message ---------\nDe : compta@client.example\n\n"
     "Nous contestons cette facture : la livraison n'a jamais eu lieu."),
])
def test_a_persons_dispute_through_a_group_mailbox_or_a_colleague_is_not_a_robot(
        sender: str, subject: str, headers: dict[str, str], text: str) -> None:
    from bot.understand import written

    facts = MailFacts(sender, subject, written(text, subject), {"from": sender, **headers})
    assert classify(facts, "acme.example", MODEL).kind is Kind.DISPUTE


def test_the_transport_headers_are_not_parsed_and_change_nothing_of_the_reading() -> None:
    """The hops, signatures and authentication results servers add (3 KB on real mail, every
    Received line parsed by mail-parser) are left out of the parse; what the person wrote, the
    headers the rules read, and a header that only begins like one of them are all kept."""
    own = (b"From: Paul <paul@client.example>\r\nTo: ar@acme.example\r\nSubject: RE: facture FA-1\r\n"
           b"Received-By-Us: kept\r\nX-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent\r\n"
           b"Message-ID: <1@client.example>\r\n\r\n"
           b"Bonjour,\r\nReceived: this line is the body, not a header.\r\nLe virement est parti hier.\r\n")
    transport = (b"Received: from mail-wr1.google.com (mail-wr1.google.com [209.85.221.54])\r\n"
                 b"\tby mx.acme.example (Postfix) with ESMTPS id 4Zx1\r\n"
                 b"\tfor <ar@acme.example>; Tue, 06 Apr 2027 09:30:02 +0200 (CEST)\r\n"
                 b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=client.example;\r\n"
                 b"        h=from:to:subject; bh=AbC=; b=DeF\r\n"
                 b"ARC-Seal: i=1; a=rsa-sha256; t=1; cv=none; d=google.com\r\n"
                 b"Authentication-Results: mx.acme.example; dkim=pass header.d=client.example\r\n"
                 b"X-Received: by 2002:a05:6000:1a8e with SMTP id f14mr; Tue, 06 Apr 2027\r\n")
    bare, carried = parse(own), parse(transport + own)
    assert carried == bare
    assert "received" not in carried.facts.headers and "dkim-signature" not in carried.facts.headers
    assert carried.facts.headers["received-by-us"] == "kept"
    assert "x-ms-exchange-generated-message-source" in carried.facts.headers
    assert "Received: this line is the body" in carried.facts.text


def test_a_model_handed_to_worker_processes_leaves_what_it_cached_behind() -> None:
    """Pickled for the workers, the model is its weights: not its matrix nor the clauses it read."""
    import pickle

    from rules.intent import read, score

    model = shipped()
    before = score(model, read("Le virement est parti hier."))
    copy = pickle.loads(pickle.dumps(model))
    assert set(copy.__dict__) == {"kinds", "bias", "weights", "version"}
    assert score(copy, read("Le virement est parti hier.")).probabilities == before.probabilities


def test_a_claim_keeps_the_whole_sentence_its_clause_is_in() -> None:
    """The invoices a claim is about are those its sentence names: "les factures 418, 419 et 420"
    is one sentence, split into clauses by the model; "no. 453" does not end one."""
    text = "Bonjour,\nLes factures 418, 419 et 420 ont été réglées hier par virement.\nMerci."
    u = classify(MailFacts("a@client.example", "RE: Rappel", text), "acme.example", MODEL)
    assert u.kind is Kind.PAYMENT_CLAIM
    assert u.sentence == "les factures 418, 419 et 420 ont été réglées hier par virement."
    text = "Dear colleagues, the invoices no. 453 and 454 were paid with our transfer of 31 March."
    u = classify(MailFacts("a@client.example", "RE: Reminder", text), "acme.example", MODEL)
    assert "no. 453 and 454" in u.sentence


@pytest.mark.parametrize(("text", "languages"), [
    ("Bonjour,\nLe virement est parti hier à 10:30.\nCordialement", None),
    ("Merci.\n\nLe 3 avr. 2027 à 10:12, ACME <ar@acme.example> a écrit :\n> Rappel", ("fr", "en")),
    ("Danke.\n\nAm 03.04.2027 um 10:12 schrieb ACME <ar@acme.example>:\n> Rappel", ("fr", "en", "de")),
    ("Grazie.\n\nDa: ACME <ar@acme.example>\nInviato: 3 aprile 2027\n> Rappel", ("fr", "en", "it")),
])
def test_the_reply_header_pattern_holds_the_languages_a_message_may_hold(
        text: str, languages: tuple[str, ...] | None) -> None:
    """mail-parser-reply's ten-language header pattern cost 0.3 ms a message: it is used only where a
    line looks like a header, and with the languages whose header words the text has."""
    from bot.understand import _header_languages

    assert _header_languages(text) == languages
    assert strip_quotes(text).startswith(text.split("\n", maxsplit=1)[0]) and ">" not in strip_quotes(text)


def test_the_message_keeps_its_whole_header_block_and_the_body_mail_parser_reads() -> None:
    """The header block is read by the standard library, the body by mail-parser: the message the
    understanding gets has every header as written, in order (repeated, folded, encoded), its body's
    parts and charsets, and the date as mail-parser reads one."""
    import email

    from bot.understand import _parse

    raw = (b"Received: from mx (mx [192.0.2.1]) by us; Tue, 06 Apr 2027 09:30:02 +0200\r\n"
           b"From: =?utf-8?q?Andr=C3=A9?= Leroux <andre@client.example>\r\n"
           b"To: relances@acme.example,\r\n Compta <compta@acme.example>\r\n"
           b"Subject: =?utf-8?q?R=C3=A8glement?= FA-2027-0412\r\n"
           b"Date: Tue, 06 Apr 2027 09:30:02 +0200\r\n"
           b"Comments: one\r\nComments: two\r\n"
           b"MIME-Version: 1.0\r\n"
           b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"Le virement est parti ce matin, d=E9sol=E9 du retard.\r\n"
           b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Le virement est parti ce matin</p>\r\n--b--\r\n")
    parsed, msg = _parse(raw)
    whole = email.message_from_bytes(raw)
    assert msg.items() == [item for item in whole.items() if item[0] != "Received"]
    assert msg.get_all("comments") == ["one", "two"]
    assert msg.get_content_type() == "multipart/alternative" and len(msg.get_payload()) == 2
    assert parsed.facts.text == "Le virement est parti ce matin, désolé du retard."
    assert (parsed.sender, parsed.sender_name, parsed.subject) == ("andre@client.example", "André Leroux",
                                                                   "Règlement FA-2027-0412")
    assert parsed.recipients == ("relances@acme.example", "compta@acme.example")
    assert parsed.received_at is not None and parsed.received_at.isoformat() == "2027-04-06T07:30:02+00:00"


@pytest.mark.parametrize("raw", [
    b"From: a@client.example\nGarbage line\nSubject: x\n\nbody\n",  # the body starts at the line that is not a header
    b"From: a@client.example\nReply-To : evil@attacker.example\nSubject: x\n\nbody\n",  # nor is "Name :"
    b"From nobody Mon Jan 1 00:00:00 2027\nFrom: a@client.example\nSubject: s\n\nhello\n",  # an mbox line
    b": no name\nFrom: a@client.example\n\nbody\n",
])
def test_a_malformed_header_block_reads_as_the_standard_library_reads_it(raw: bytes) -> None:
    import email

    from bot.understand import _parse

    whole = email.message_from_bytes(raw)
    parsed, msg = _parse(raw)
    assert msg.items() == whole.items()
    assert parsed.facts.text == whole.get_payload().strip()
