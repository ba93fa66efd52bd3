"""What the command line prints is in French or English, following the user's locale."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.i18n import FR, language, t


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


def test_stored_reasons_read_in_french_piece_by_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reasons stay English in the store and the JSON; a French reader sees them translated, values
    kept, pieces no template fits (cues, a server's words) as stored."""
    import string

    from bot.i18n import REASONS_FR, t_reason

    for en, fr in REASONS_FR.items():
        assert {f for _, f, _, _ in string.Formatter().parse(en) if f} == \
               {f for _, f, _, _ in string.Formatter().parse(fr) if f}, en
    stored = ("read again as dispute for F-1 (was payment_claim for F-1); the first reading's effects stay: decide; "
              "subject ~ r[ée]ponse automatique")
    monkeypatch.setenv("RELANCE_LANG", "en")
    assert t_reason(stored) == stored
    monkeypatch.setenv("RELANCE_LANG", "fr")
    assert t_reason(stored) == ("relu comme contestation pour F-1 (avant : paiement annoncé pour F-1) ; les effets de "
                                "la première lecture restent : à décider ; subject ~ r[ée]ponse automatique")
    assert t_reason("auto-reply, no invoice concerned (the sender has 2 open invoices and cites none)") == (
        "réponse automatique, aucune facture concernée (l'expéditeur a 2 factures ouvertes et n'en cite aucune)")
    assert t_reason("replies to our reminder of F-1, F-2; also cites F-3") == (
        "répond à notre relance de F-1, F-2 ; cite aussi F-3")
