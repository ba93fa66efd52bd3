"""What the command line prints is in French or English, following the user's locale."""

from __future__ import annotations

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
