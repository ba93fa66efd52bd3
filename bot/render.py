"""Renders reminders from the Jinja2 templates: one sandboxed environment, StrictUndefined,
HTML autoescaped, amounts and dates formatted for the language with babel.

A `.txt` template starts with a `Subject: ...` line; its `.html` twin is optional."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from jinja2.sandbox import SandboxedEnvironment

from bot.config import CompanyConfig, Config
from bot.errors import TemplateError
from rules.penalties import Penalties, PenaltyPolicy, compute, half_year_of

LOCALES = {"fr": "fr_FR", "en": "en_GB"}  # en_GB: "15 January 2027", "€1,234.56"
LANGUAGES = tuple(LOCALES)


@dataclass(frozen=True)
class ReminderRef:
    """An earlier reminder of the same invoice, as the templates cite it."""

    date: date
    stage: str


@dataclass(frozen=True)
class InvoiceContext:
    number: str
    issue_date: date
    due_date: date
    amount: Decimal
    paid: Decimal
    currency: str
    reminders: tuple[ReminderRef, ...] = ()
    penalties: Penalties | None = None
    margin_points: Decimal = Decimal(10)
    claimed_paid_on: date | None = None  # the client said it had paid, since our last reminder

    @property
    def amount_due(self) -> Decimal:
        return self.amount - self.paid


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


@lru_cache(maxsize=8)
def _locale(language: str) -> Locale:
    return Locale.parse(LOCALES[language])


def make_environment(extra_dir: Path | None = None) -> SandboxedEnvironment:
    """The one template environment. `extra_dir` (with fr/ and en/) overrides the shipped templates."""
    shipped = jinja2.FileSystemLoader(str(resources.files("templates")))
    loaders: list[jinja2.BaseLoader] = [shipped]
    if extra_dir is not None:
        loaders.insert(0, jinja2.FileSystemLoader(str(extra_dir)))
    return SandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


class Renderer:
    """Renders a stage's template for one or several invoices of one client."""

    @classmethod
    def from_config(cls, config: Config) -> Renderer:
        return cls(config.company, config.templates.path(config.source))

    def __init__(self, company: CompanyConfig, extra_dir: Path | None = None) -> None:
        self.company = company
        self.extra_dir = extra_dir
        self.env = make_environment(extra_dir)
        self._bound: dict[str, SandboxedEnvironment] = {}

    def _env_for(self, language: str) -> SandboxedEnvironment:
        env = self._bound.get(language)
        if env is None:
            loc = _locale(language)
            # One environment per language: overlays would share the filters dict (and the cache).
            env = make_environment(self.extra_dir)
            env.filters["money"] = lambda v, cur="EUR": format_currency(v, cur, locale=loc)
            env.filters["longdate"] = lambda d: format_date(d, format="long", locale=loc)
            env.filters["percent"] = lambda v: format_decimal(v, format="#,##0.00", locale=loc) + (
                "\u00a0%" if language == "fr" else "%")
            self._bound[language] = env
        return env

    def render(self, language: str, template: str, *, client_name: str, client_kind: str,
               invoices: Sequence[InvoiceContext], today: date, attached: int = 0,
               extra: dict[str, Any] | None = None) -> Rendered:
        """`attached`: how many invoice PDFs go with the message, so that the text says what is
        true ("the invoice is attached" only when it is). `extra`: more names for the template (a
        reply's instalments)."""
        if not invoices:
            raise ValueError("render needs at least one invoice")
        env = self._env_for(language)
        context: dict[str, Any] = {
            "company": self.company, "client": {"name": client_name, "kind": client_kind},
            "invoices": list(invoices), "invoice": invoices[0],
            "numbers": ", ".join(i.number for i in invoices),
            "total_due": sum((i.amount_due for i in invoices), Decimal(0)),
            "currency": invoices[0].currency, "today": today, "language": language, "attached": attached,
            **(extra or {}),
        }
        name = f"{language}/{template}"
        try:
            text = env.get_template(f"{name}.txt").render(context)
            try:
                html_t = env.get_template(f"{name}.html")
            except jinja2.TemplateNotFound:
                html_t = None
            html = html_t.render(context) if html_t else None
        except jinja2.TemplateNotFound as e:
            raise TemplateError(f"template {e.name} not found (looked in {self._where()})") from e
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"{e.filename or e.name}:{e.lineno}: {e.message}") from e
        except jinja2.UndefinedError as e:
            raise TemplateError(f"{name}: {e.message}") from e
        except jinja2.exceptions.SecurityError as e:
            raise TemplateError(f"{name}: not allowed in a template: {e}") from e
        first, _, body = text.partition("\n")
        if not first.startswith("Subject:"):
            raise TemplateError(f"{name}.txt: the first line must be 'Subject: ...', got {first[:60]!r}")
        subject = " ".join(first.removeprefix("Subject:").split())
        return Rendered(subject=subject, text=body.lstrip("\n"), html=html)

    def _where(self) -> str:
        return ", ".join(str(getattr(ld, "searchpath", ld)) for ld in
                         getattr(self.env.loader, "loaders", [self.env.loader]))


def sample_invoices(config: Config, stage_penalties: bool, today: date) -> list[InvoiceContext]:
    """A made-up invoice for `relance check`: overdue across the latest configured half-year."""
    policy = config.penalty_policy
    due = today - timedelta(days=40)
    rates = policy.legal_rates if policy.contract_rate is not None else policy.ecb_rates
    if rates and half_year_of(due) not in rates:
        year, half = max(rates)
        due = date(year, 1 if half == 1 else 7, 2)
        today = due + timedelta(days=40)
    pen = compute(Decimal("1234.56"), due, today, policy) if stage_penalties else None
    return [InvoiceContext(
        number="F-2027-0042", issue_date=due - timedelta(days=30), due_date=due,
        amount=Decimal("1234.56"), paid=Decimal("0.00"), currency="EUR",
        reminders=(ReminderRef(due + timedelta(days=3), "reminder"),), penalties=pen,
        margin_points=policy.margin_points,
    )]


def check_templates(config: Config, renderer: Renderer, today: date) -> list[str]:
    """Render every stage in every language with a sample invoice; return one line per problem."""
    problems = []
    for stage in config.ladder.stages:
        for language in LANGUAGES:
            try:
                invoices = sample_invoices(config, stage.penalties, today)
                for attached in ((0, 1) if stage.attach_invoice else (0,)):  # with and without the PDF
                    renderer.render(language, stage.template, client_name="Exemple SARL", client_kind="business",
                                    invoices=invoices, today=invoices[0].due_date + timedelta(days=40),
                                    attached=attached)
            except (TemplateError, ValueError) as e:
                problems.append(f"stage {stage.name!r} ({language}): {e}")
    from bot import digest  # noqa: PLC0415 - the digest renders through this module's environment

    later = check_replies(renderer, today) + check_instalment(config, renderer, today)
    return problems + later + digest.check(config, datetime.combine(today, time(10), config.zone))


def check_instalment(config: Config, renderer: Renderer, today: date) -> list[str]:
    """Render the instalment reminder of a payment plan in every language, before and after its day."""
    invoice = InvoiceContext(number="F-2027-0042", issue_date=today - timedelta(days=60),
                             due_date=today - timedelta(days=30), amount=Decimal("1234.56"), paid=Decimal("600.00"),
                             currency="EUR")
    problems = []
    for language in LANGUAGES:
        for day in (today + timedelta(days=3), today - timedelta(days=1)):
            try:
                renderer.render(language, config.plans.template, client_name="Exemple SARL", client_kind="business",
                                invoices=[invoice], today=today, extra={"instalment": {
                                    "index": 2, "count": 2, "amount": Decimal("634.56"), "due": day}})
            except TemplateError as e:
                problems.append(f"instalment reminder ({language}): {e}")
    return problems


REPLY_TEMPLATES = ("ack_claim", "accept_plan", "decline_plan", "answer_dispute")  # bot.replies.TEMPLATES


def check_replies(renderer: Renderer, today: date) -> list[str]:
    """Render every reply template (templates/<lang>/reply_<name>.txt) in every language, with and
    without instalments; one line per problem."""
    from rules.plan import Instalment  # noqa: PLC0415

    invoice = InvoiceContext(number="F-2027-0042", issue_date=today - timedelta(days=60),
                             due_date=today - timedelta(days=30), amount=Decimal("1234.56"), paid=Decimal("0.00"),
                             currency="EUR")
    plan = [Instalment(Decimal("600.00"), today + timedelta(days=30)),
            Instalment(Decimal("634.56"), today + timedelta(days=60))]
    problems = []
    for name in REPLY_TEMPLATES:
        for language in LANGUAGES:
            for instalments in (plan, []):
                try:
                    renderer.render(language, f"reply_{name}", client_name="Exemple SARL", client_kind="business",
                                    invoices=[invoice], today=today,
                                    extra={"instalments": instalments, "received": today})
                except TemplateError as e:
                    problems.append(f"reply {name!r} ({language}): {e}")
    return problems


def penalties_for(policy: PenaltyPolicy, inv: InvoiceContext, client_kind: str, today: date) -> Penalties | None:
    """Penalties to state on a formal notice: business clients only (L441-10 is B2B law)."""
    if client_kind != "business":
        return None
    return compute(inv.amount_due, inv.due_date, today, policy, business_client=True)


def render_with_sample(config: Config, renderer: Renderer, stage_index: int, language: str,
                       today: date) -> Rendered:
    stage = config.ladder[stage_index]
    invoices = sample_invoices(config, stage.penalties, today)
    return renderer.render(language, stage.template, client_name="Exemple SARL", client_kind="business",
                           invoices=invoices, today=invoices[0].due_date + timedelta(days=40))
