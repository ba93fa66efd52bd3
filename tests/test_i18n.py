"""What the command line prints is in French or English, following the user's locale."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.errors import RelanceError
from bot.i18n import FR, amount, amount_then, language, t
from rules.reasons import join, reason


@pytest.mark.parametrize(("env", "expected"), [
    ({"LANG": "fr_FR.UTF-8"}, "fr"), ({"LANG": "en_GB.UTF-8"}, "en"), ({}, "en"),
    ({"LANG": "en_US.UTF-8", "RELANCE_LANG": "fr"}, "fr"), ({"LC_ALL": "fr_BE.UTF-8", "LANG": "C"}, "fr"),
])
def test_language_from_the_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for var in ("RELANCE_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert language() == expected


def test_every_french_string_keeps_the_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    """A translation that drops or renames a {placeholder} would crash or lie at run time."""
    import string

    for en, fr in FR.items():
        names = {f for _, f, _, _ in string.Formatter().parse(en) if f}
        assert names == {f for _, f, _, _ in string.Formatter().parse(fr) if f}, en
    monkeypatch.setenv("RELANCE_LANG", "fr")
    assert t("{n} message(s) due (dry run: nothing sent, nothing recorded)", n=3).startswith("3 message(s) dû(s)")


def test_import_errors_in_french_keep_the_file_line_column_shape(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """A credit controller reads why a row is refused in her language; scripts still split on
    `FILE:LINE: column: `."""
    from bot import ledger
    from bot.errors import ImportFileError

    monkeypatch.setenv("RELANCE_LANG", "fr")
    path = tmp_path / "factures.csv"
    path.write_text("number,client,email,amount,currency,issue_date,due_date\n"
                    "F-1,A,pas-une-adresse,12x,EUR,2027-03-01,2027-02-01\n")
    with pytest.raises(ImportFileError) as e:
        ledger.read(path, "fr")
    assert e.value.errors == [
        f"{path}:2: amount: '12x' : attendu : un montant >= 0 avec au plus deux décimales, comme 1234,56 ou 1234.56",
        f"{path}:2: due_date: '2027-02-01' : avant la date d'émission 2027-03-01",
        f"{path}:2: email: 'pas-une-adresse' : adresse e-mail invalide",
    ]
    assert str(e.value) == f"{path}: 3 problème(s), rien n'est importé"


@pytest.mark.parametrize(("doc", "english", "french"), [
    ({"schedule": {"timezon": "x"}}, "<c>: schedule.timezon: unknown key; did you mean 'schedule.timezone'?",
     "<c>: schedule.timezon: clé inconnue ; vouliez-vous dire 'schedule.timezone' ?"),
    ({"schedule": {"tick_minutes": "5"}}, "<c>: schedule.tick_minutes = '5': expected a whole number >= 0",
     "<c>: schedule.tick_minutes = '5': attendu : un nombre entier >= 0"),
    ({"daemon": {"metrics_port": 65536}},
     "<c>: daemon.metrics_port = 65536: expected a TCP port from 1 to 65535 (served on 127.0.0.1 only), or 0 for "
     "no metrics endpoint",
     "<c>: daemon.metrics_port = 65536: attendu : un port TCP de 1 à 65535 (servi sur 127.0.0.1 seulement), ou 0 "
     "pour aucune page de métriques"),
])
def test_config_errors_in_both_languages(monkeypatch: pytest.MonkeyPatch, doc: dict[str, object], english: str,
                                         french: str) -> None:
    from bot.config import from_dict
    from bot.errors import ConfigError

    for lang, expected in (("en", english), ("fr", french)):
        monkeypatch.setenv("RELANCE_LANG", lang)
        with pytest.raises(ConfigError) as e:
            from_dict(doc, "<c>")
        assert str(e.value) == expected


def test_every_reason_code_says_the_same_in_both_languages() -> None:
    """The catalog: each code's English and French sentences take the same parameters."""
    import string

    from bot.reasons import CATALOG

    for code, (en, fr) in CATALOG.items():
        assert {f for _, f, _, _ in string.Formatter().parse(en) if f} == \
               {f for _, f, _, _ in string.Formatter().parse(fr) if f}, code


REREAD = reason("triage.reread", kind="dispute", numbers="F-1", old="payment_claim", old_numbers="F-1")


@pytest.mark.parametrize(("stored", "english", "french"), [
    (join(REREAD, "subject ~ r[ée]ponse automatique"),
     "read again as dispute for F-1 (was payment_claim for F-1); the first reading's effects stay: decide; "
     "subject ~ r[ée]ponse automatique",
     "relu comme contestation pour F-1 (avant : paiement annoncé pour F-1) ; les effets de la première lecture "
     "restent : à décider ; subject ~ r[ée]ponse automatique"),
    (reason("auto.no_invoice", why=reason("match.sender_none", n=2)),
     "auto-reply, no invoice concerned (the sender has 2 open invoices and cites none)",
     "réponse automatique, aucune facture concernée (l'expéditeur a 2 factures ouvertes et n'en cite aucune)"),
    (reason("match.headers_also", numbers="F-1, F-2", extra="F-3"),
     "replies to our reminder of F-1, F-2; also cites F-3", "répond à notre relance de F-1, F-2 ; cite aussi F-3"),
    (reason("hold.promise", until="2027-03-01"), "promise to pay on 2027-03-01",
     "promesse de paiement pour le 1 mars 2027"),
    ("promise to pay on 2027-03-01", "promise to pay on 2027-03-01", "promise to pay on 2027-03-01"),
    (reason("no.such.code", x="1"), "no.such.code", "no.such.code"),
    ('{"code":"hold.promise","until":"2027-0', '{"code":"hold.promise","until":"2027-0',
     '{"code":"hold.promise","until":"2027-0'),
    ("", "", ""),
])
def test_stored_reasons_render_from_the_catalog(monkeypatch: pytest.MonkeyPatch, stored: str, english: str,
                                                french: str) -> None:
    """A code and its values in either language (dates and kinds in words for a person, as stored for
    --json); a piece of text, a row written before codes, a code cut short or unknown: as stored."""
    from bot.reasons import plain_text, render

    monkeypatch.setenv("RELANCE_LANG", "fr")
    assert render(stored) == french
    monkeypatch.setenv("RELANCE_LANG", "en")
    assert plain_text(stored) == english
    person = english.replace("2027-03-01", "1 Mar 2027") if stored.startswith("{") else english
    assert render(stored) == person.replace("was payment_claim", "was payment claimed")


def test_show_and_messages_render_codes_and_keep_old_prose(engine: Any, db_url: str, make_config: Any,
                                                           tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`show` and `messages` in French render the stored codes from the catalog; a row written before
    codes (English prose) still reads, as stored; --json keeps the English sentence and adds the codes."""
    import json

    import sqlalchemy as sa

    from bot.cli import main
    from tests.conftest import EXAMPLE, merge
    from tests.test_contract_like import toml_dump
    from tests.test_tui import PLAN, deliver, seed

    cfg = make_config()
    seed(engine, cfg, tmp_path)
    deliver(engine, cfg, "Plans", PLAN)
    with engine.begin() as c:  # what an upgraded database holds from before codes
        c.execute(sa.text("INSERT INTO event (invoice_id, at, kind, actor, reason, data) SELECT id, "
                          "'2027-04-01 08:00:00', 'paused', 'relance', 'the client says it has paid', '{}' "
                          "FROM invoice WHERE number = 'F-2'"))
    (tmp_path / "config.toml").write_text(toml_dump(merge(EXAMPLE, {"database": {"url": db_url}})))
    base = ["--config", str(tmp_path / "config.toml"), "--now", "2027-04-06T11:00:00+02:00"]
    monkeypatch.setenv("RELANCE_LANG", "fr")
    assert main(["show", *base, "F-2"]) == 0
    out = capsys.readouterr().out
    assert "jusqu'à la décision d'une personne" in out, "a code, in French"
    assert "the client says it has paid" in out, "an old row, as stored"
    assert main(["messages", *base]) == 0
    assert "Facture F-2  échéancier proposé : à décider" in capsys.readouterr().out
    assert main(["messages", *base, "--json"]) == 0
    doc = {m["id"]: m for m in json.loads(capsys.readouterr().out)}
    assert doc[2]["reason"] == "payment_plan: a person decides"
    assert doc[2]["reasons"] == [{"code": "triage.decides", "kind": "payment_plan"}]


def test_every_code_the_code_writes_is_in_the_catalog() -> None:
    """A reason("…") (or coded("…")) anywhere in bot/ and rules/ names a code the catalog renders."""
    import re
    from pathlib import Path

    from bot.reasons import CATALOG

    root = Path(__file__).resolve().parent.parent
    used = {m for p in [*(root / "bot").glob("*.py"), *(root / "rules").glob("*.py"), *(root / "tui").glob("*.py")]
            for m in re.findall(r'\b(?:reason|coded)\(\s*"([a-z_]+\.[a-z_.]+)"', p.read_text(encoding="utf-8"))}
    used |= {m for p in [*(root / "bot").glob("*.py"), *(root / "rules").glob("*.py")]
             for m in re.findall(r'coded\(\s*"([a-z_]+\.[a-z_.]+)" if', p.read_text(encoding="utf-8"))}
    assert len(used) > 40, "the scan finds the codes"
    assert sorted(used - set(CATALOG)) == []


@pytest.mark.parametrize(("stored", "english", "french", "plain"), [
    (reason("payment.recorded", amount="1234.50", currency="EUR"), "€1,234.50 recorded",
     "1\u202f234,50\u00a0€ enregistré(s)", "1234.50 EUR recorded"),
    (reason("plan.instalment", index=1, amount="400.00", until="2027-04-30"), "instalment 1: 400.00 due on 30 Apr 2027",
     "échéance 1 : 400,00 au 30 avr. 2027", "instalment 1: 400.00 due on 2027-04-30"),
    (reason("triage.not_sure", kind="dispute", margin="0.059", threshold="0.2"),
     "not sure it is a dispute (margin 0.059 < 0.2): a person decides",
     "pas sûr que ce soit : contestation (marge 0,059 < 0,2) : à décider",
     "not sure it is a dispute (margin 0.059 < 0.2): a person decides"),
    (reason("decision.undone", action="paid", text="F-1: €5.00 recorded"),
     "undid payment recorded: F-1: €5.00 recorded",
     "annulé : paiement enregistré : F-1: €5.00 recorded", "undid paid: F-1: €5.00 recorded"),
    (reason("decision.command", action="dismiss"), "dismissed as noise, on the command line",
     "écarté comme bruit, en ligne de commande", "dismiss, on the command line"),
])
def test_amounts_figures_and_actions_in_reasons_read_in_the_readers_language(
        monkeypatch: pytest.MonkeyPatch, stored: str, english: str, french: str, plain: str) -> None:
    from bot.reasons import plain_text, render

    monkeypatch.setenv("RELANCE_LANG", "fr")
    assert render(stored) == french
    monkeypatch.setenv("RELANCE_LANG", "en")
    assert render(stored) == english
    assert plain_text(stored) == plain, "--json keeps the values as stored"


def test_a_why_too_long_for_its_column_is_kept_as_a_sentence_not_cut_json() -> None:
    from bot.reasons import fit

    why = reason("decision.assign", numbers=", ".join(f"FAC-2027-{i:05d}" for i in range(80)))
    kept = fit(why)
    assert len(why) > 1000 and len(kept) == 1000
    assert kept.startswith("assigned to FAC-2027-00000, ") and kept.endswith("…")
    assert fit(reason("decision.confirm")) == reason("decision.confirm")


@pytest.mark.parametrize(("lang", "typed", "expected"), [
    ("fr", "1 500,00", "1500.00"), ("fr", "1\u202f500,00 €", "1500.00"), ("fr", "1500,5", "1500.50"),
    ("fr", "1,500", "1.50"), ("en", "1,500", "1500.00"), ("fr", "1,500.00", "1500.00"),
    ("en", "1,500.00 EUR", "1500.00"), ("en", "250", "250.00"), ("fr", "12 345 678,9", "12345678.90"),
])
def test_an_amount_as_a_person_types_it(monkeypatch: pytest.MonkeyPatch, lang: str, typed: str, expected: str) -> None:
    monkeypatch.setenv("RELANCE_LANG", lang)
    assert amount(typed) == Decimal(expected)


@pytest.mark.parametrize(("typed", "why"), [
    ("", "expected an amount"), ("abc", "expected an amount"), ("-5", "above zero"), ("0,00", "above zero"),
    ("12.345,6", "expected an amount"), ("1.005", "two decimals"), ("250 euros de plus", "expected an amount"),
])
def test_what_is_not_an_amount_is_refused_and_says_why(monkeypatch: pytest.MonkeyPatch, typed: str, why: str) -> None:
    monkeypatch.setenv("RELANCE_LANG", "en")
    with pytest.raises(RelanceError, match=why):
        amount(typed)


def test_an_amount_then_why() -> None:
    assert amount_then("1 500,00 geste commercial") == (Decimal("1500.00"), "geste commercial")
    assert amount_then("30 € goodwill") == (Decimal("30.00"), "goodwill")
