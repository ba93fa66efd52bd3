"""Templates: every stage renders in both languages; a broken template fails loudly, with its place."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from bot.config import Config
from bot.errors import TemplateError
from bot.render import LANGUAGES, Renderer, check_templates, render_with_sample


def test_every_shipped_template_renders(make_config: Callable[..., Config]) -> None:
    cfg = make_config()
    assert check_templates(cfg, Renderer(cfg.company), date(2025, 11, 1)) == []


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("stage", [0, 1, 2])
def test_templates_say_what_the_client_needs(make_config: Callable[..., Config], language: str, stage: int) -> None:
    """Number, due date, amount, earlier reminders, a way to talk about difficulties, payment details."""
    cfg = make_config()
    r = render_with_sample(cfg, Renderer(cfg.company), stage, language, date(2025, 11, 1))
    plan_word = {"fr": "échéancier", "en": "payment plan"}[language]
    for text in (r.text, r.html or ""):
        assert "F-2027-0042" in text and "IBAN" in text and plan_word in text
        assert ("1\u202f234,56\u00a0€" if language == "fr" else "€1,234.56") in text
        assert ("septembre 2025" if language == "fr" else "September 2025") in text
    if stage == 2:
        assert "L441-10" in r.text and "D441-5" in r.text


def renderer_with(tmp_path: Path, cfg: Config, body: str) -> Renderer:
    (tmp_path / "fr").mkdir(exist_ok=True)
    (tmp_path / "fr" / "reminder.txt").write_text(body)
    return Renderer(cfg.company, extra_dir=tmp_path)


@pytest.mark.parametrize(("body", "message"), [
    ("Subject: x\n{% if %}\n", r"fr/reminder.txt:2: "),
    ("Subject: x\n{{ invoice.nope }}\n", r"fr/reminder: .*nope"),
    ("no subject line\n", r"the first line must be 'Subject: \.\.\.'"),
    ("Subject: x\n{{ invoice.__class__.__mro__ }}\n", r"not allowed|nope|unsafe|__class__"),
])
def test_broken_templates_fail_loudly(tmp_path: Path, make_config: Callable[..., Config], body: str,
                                      message: str) -> None:
    cfg = make_config()
    problems = check_templates(cfg, renderer_with(tmp_path, cfg, body), date(2025, 11, 1))
    assert problems and any(__import__("re").search(message, p) for p in problems), problems


def test_missing_template_is_named(make_config: Callable[..., Config]) -> None:
    cfg = make_config(stages=[{"name": "only", "after_due_days": 3, "template": "nowhere"}])
    r = Renderer(cfg.company)
    with pytest.raises(TemplateError, match="fr/nowhere.txt not found"):
        render_with_sample(cfg, r, 0, "fr", date(2025, 11, 1))


def test_each_language_keeps_its_formatting_in_one_renderer(make_config: Callable[..., Config]) -> None:
    """A renderer reused across a batch formats French as French after an English message."""
    cfg = make_config()
    r = Renderer(cfg.company)
    en = render_with_sample(cfg, r, 0, "en", date(2025, 11, 1))
    fr = render_with_sample(cfg, r, 0, "fr", date(2025, 11, 1))
    assert "€1,234.56" in en.text and "1\u202f234,56\u00a0€" in fr.text and "€1,234.56" not in fr.text


@pytest.mark.parametrize(("language", "attached", "invoices", "says", "never"), [
    ("en", 0, 1, "", ("attached", "on file")),
    ("en", 1, 1, "The invoice is attached.", ("on file",)),
    ("en", 2, 2, "The invoices are attached.", ("on file",)),
    ("en", 1, 2, "A copy of one of these invoices is attached.", ("on file",)),
    ("fr", 0, 1, "", ("jointe", "lorsque nous en disposons")),
    ("fr", 1, 1, "La facture est jointe à ce message.", ("lorsque nous en disposons",)),
    ("fr", 2, 3, "2 de ces factures sont jointes à ce message.", ("lorsque nous en disposons",)),
])
def test_the_second_reminder_says_the_invoice_is_attached_only_when_it_is(
        language: str, attached: int, invoices: int, says: str, never: tuple[str, ...]) -> None:
    """Conditional text, not a hedge ("attached when we have it on file")."""
    from decimal import Decimal

    from bot.config import from_dict
    from bot.render import InvoiceContext
    from tests.conftest import EXAMPLE

    inv = InvoiceContext("F-1", date(2027, 1, 1), date(2027, 2, 1), Decimal("10.00"), Decimal("0.00"), "EUR")
    renderer = Renderer(from_dict(EXAMPLE, "t.toml").company)
    out = renderer.render(language, "second_reminder", client_name="X", client_kind="business",
                          invoices=[inv] * invoices, today=date(2027, 3, 1), attached=attached)
    for text in (out.text, out.html or ""):
        assert says in text.replace("&#39;", "'") and not any(n in text for n in never), text
