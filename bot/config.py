"""Reads config.toml once into frozen, typed objects; rejects unknown keys with a did-you-mean.

Every error names the file, the key, the value and what was expected."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.addresses import writable
from bot.errors import ConfigError
from bot.i18n import t
from rules.model import Ladder, Stage
from rules.penalties import PenaltyPolicy, parse_half_year


class Secret:
    """A password read from the environment: never printed, never logged."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


Auth = Literal["password", "xoauth2", "oauthbearer"]


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///relance.db"


@dataclass(frozen=True)
class CompanyConfig:
    name: str = "ACME SAS"
    email: str = "relances@acme.example"
    reply_to: str = ""
    signature: str = ""
    payment_details: str = ""
    language: Literal["fr", "en"] = "fr"
    phone: str = ""
    operator_email: str = ""  # the credit controller: a daily digest of what waits for a person

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "localhost"
    port: int = 587
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    verify_certificates: bool = True
    ca_file: str = ""
    username: str = ""
    password_env: str = "RELANCE_SMTP_PASSWORD"
    auth: Auth = "password"  # "xoauth2" / "oauthbearer": an OAuth2 access token instead of the password
    token_command: tuple[str, ...] = ()  # argv of a program printing an access token; () = [oauth]'s token file
    rate_per_minute: int = 60
    timeout_seconds: int = 30
    retries: int = 3
    retry_backoff_seconds: Decimal = Decimal("2.0")

    def password(self, source: str) -> Secret | None:
        """The password from the environment; None when no authentication is configured."""
        if not self.username:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError(f"{source}: smtp.password_env: " + t(
                "environment variable {var} is not set (it must hold the SMTP password of {user}; "
                'or set smtp.username = "")', var=repr(self.password_env), user=repr(self.username)))
        return Secret(value)


@dataclass(frozen=True)
class ImapConfig:
    host: str = "localhost"
    port: int = 993
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    verify_certificates: bool = True
    ca_file: str = ""  # a private CA (PEM) trusted on top of the system's, rather than verification off
    username: str = ""
    password_env: str = "RELANCE_IMAP_PASSWORD"
    auth: Auth = "password"
    token_command: tuple[str, ...] = ()
    folders: tuple[str, ...] = ("INBOX",)
    idle_seconds: int = 240  # renew IDLE this often: firewalls drop idle connections long before 29 min
    poll_seconds: int = 60  # where the server has no IDLE
    workers: int = 0  # processes that parse a large backlog: 0 = one per CPU (at most 4), 1 = none
    move_handled_to: str = ""  # move messages Relance has fully handled to this folder; "" leaves them

    def password(self, source: str) -> Secret | None:
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError(f"{source}: imap.password_env: " + t(
                "environment variable {var} is not set (it must hold the IMAP password of {user})",
                var=repr(self.password_env), user=repr(self.username)))
        return Secret(value)


@dataclass(frozen=True)
class OAuthConfig:
    """Where `auth = "xoauth2"` gets its tokens when no token_command is set: the refresh token
    `relance login` stored in `token_file`, refreshed before it expires."""

    provider: Literal["", "microsoft", "google"] = ""
    client_id: str = ""  # the application registered with the provider (Entra ID app, Google OAuth client)
    tenant: str = "organizations"  # Microsoft: your tenant's id or domain; "organizations" for any work account
    client_secret_env: str = "RELANCE_OAUTH_CLIENT_SECRET"  # Google: its "TVs and limited input" client's secret
    token_file: str = "relance-oauth.json"  # relative to the config file; owner-only (0600)
    scopes: tuple[str, ...] = ()  # () = the provider's IMAP and SMTP scopes
    authority: str = ""  # "" = the provider's own endpoints; another https:// base (national clouds, tests)

    def path(self, source: str) -> Path:
        p = Path(self.token_file)
        return p if p.is_absolute() else Path(source).parent / p


@dataclass(frozen=True)
class ScheduleConfig:
    timezone: str = "Europe/Paris"
    business_days_only: bool = True
    holidays: str = "FR"
    window: tuple[str, ...] = ("09:00", "17:00")
    consolidate: bool = False
    tick_minutes: int = 15


@dataclass(frozen=True)
class StageConfig:
    name: str = ""
    template: str = ""
    after_due_days: int | None = None
    after_previous_days: int | None = None
    attach_invoice: bool = False
    penalties: bool = False
    label_fr: str = ""  # the stage's name as the triage UI shows it; "" for the name itself
    label_en: str = ""


@dataclass(frozen=True)
class PauseConfig:
    human_reply_days: int = 0  # 0: until a person decides
    promise_grace_days: int = 3
    payment_claim_days: int = 10


@dataclass(frozen=True)
class PlansConfig:
    # An accepted plan: a reminder this many days from each instalment's due date (< 0: before it).
    reminder_days: tuple[int, ...] = (-3, 1)
    template: str = "instalment"  # templates/<lang>/instalment.txt


@dataclass(frozen=True)
class UnderstandingConfig:
    auto_apply_margin: Decimal = Decimal("0.25")  # a reading is applied without a person only above this


@dataclass(frozen=True)
class PenaltiesConfig:
    margin_points: Decimal = Decimal(10)
    fixed_indemnity: Decimal = Decimal("40.00")
    contract_rate: Decimal | None = None
    ecb_rates: dict[str, Decimal] = field(default_factory=dict)
    legal_rates: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class TemplatesConfig:
    directory: str = ""  # fr/ and en/ here override the shipped templates, file by file

    def path(self, source: str) -> Path | None:
        """The override directory, relative to the config file; None when not set."""
        if not self.directory:
            return None
        p = Path(self.directory)
        return p if p.is_absolute() else Path(source).parent / p


@dataclass(frozen=True)
class DaemonConfig:
    health_failing_minutes: int = 30  # `status --health` exits 1 when a part has failed this long
    metrics_port: int = 0  # a Prometheus endpoint on http://127.0.0.1:PORT/metrics; 0 = none


@dataclass(frozen=True)
class AttachmentsConfig:
    folder: str = ""  # the only folder invoice PDFs (the CSV's `pdf` column) may come from; "" = the CSV's own

    def path(self, source: str) -> Path | None:
        """The folder, relative to the config file; None: the folder of each CSV imported."""
        if not self.folder:
            return None
        p = Path(self.folder)
        return p if p.is_absolute() else Path(source).parent / p


@dataclass(frozen=True)
class CostsConfig:
    email: Decimal = Decimal("0.02")
    formal_notice: Decimal = Decimal("0.50")
    triage_minute: Decimal = Decimal("0.75")


DEFAULT_STAGES = (
    StageConfig("reminder", "reminder", after_due_days=3),
    StageConfig("second_reminder", "second_reminder", after_previous_days=10, attach_invoice=True),
    StageConfig("formal_notice", "formal_notice", after_previous_days=15, attach_invoice=True,
                penalties=True),
)


@dataclass(frozen=True)
class Config:
    """The whole configuration. Built by `load`; passed down explicitly."""

    source: str = "<defaults>"
    database: DatabaseConfig = DatabaseConfig()
    company: CompanyConfig = CompanyConfig()
    smtp: SmtpConfig = SmtpConfig()
    imap: ImapConfig = ImapConfig()
    oauth: OAuthConfig = OAuthConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    stages: tuple[StageConfig, ...] = DEFAULT_STAGES
    pause: PauseConfig = PauseConfig()
    plans: PlansConfig = PlansConfig()
    understanding: UnderstandingConfig = UnderstandingConfig()
    penalties: PenaltiesConfig = PenaltiesConfig()
    templates: TemplatesConfig = TemplatesConfig()
    attachments: AttachmentsConfig = AttachmentsConfig()
    daemon: DaemonConfig = DaemonConfig()
    costs: CostsConfig = CostsConfig()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.schedule.timezone)

    @property
    def window(self) -> tuple[time, time]:
        start, end = self.schedule.window
        return time.fromisoformat(start), time.max if end == "24:00" else time.fromisoformat(end)

    @property
    def ladder(self) -> Ladder:
        return Ladder(tuple(
            Stage(
                name=s.name,
                template=s.template or s.name,
                delay_days=s.after_due_days if i == 0 else s.after_previous_days,  # type: ignore[arg-type]
                attach_invoice=s.attach_invoice,
                penalties=s.penalties,
            )
            for i, s in enumerate(self.stages)
        ))

    @property
    def penalty_policy(self) -> PenaltyPolicy:
        p = self.penalties
        return PenaltyPolicy(
            ecb_rates={parse_half_year(k): v for k, v in p.ecb_rates.items()},
            margin_points=p.margin_points,
            contract_rate=p.contract_rate,
            legal_rates={parse_half_year(k): v for k, v in p.legal_rates.items()},
            fixed_indemnity=p.fixed_indemnity,
        )


_SECTIONS: dict[str, type] = {
    "database": DatabaseConfig, "company": CompanyConfig, "smtp": SmtpConfig, "imap": ImapConfig,
    "oauth": OAuthConfig, "schedule": ScheduleConfig, "pause": PauseConfig, "plans": PlansConfig,
    "understanding": UnderstandingConfig,
    "penalties": PenaltiesConfig, "templates": TemplatesConfig, "attachments": AttachmentsConfig,
    "daemon": DaemonConfig, "costs": CostsConfig,
}


def default_path() -> Path:
    return Path(os.environ.get("RELANCE_CONFIG", "config.toml"))


def load(path: Path) -> Config:
    """Parse and validate `path`. Raises ConfigError naming the file and key on any problem."""
    src = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{src}: " + t("no such config file (copy config.example.toml to config.toml, "
                                         "or pass --config PATH)")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{src}: " + t("cannot read the config file: {why}", why=e)) from e
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{src}: " + t("not valid TOML: {why}", why=e)) from e
    return from_dict(doc, src)


def from_dict(doc: dict[str, Any], source: str = "<config>") -> Config:
    _reject_unknown(doc, [*_SECTIONS, "stages"], source, "")
    sections = {name: _build(cls, doc.get(name, {}), source, name) for name, cls in _SECTIONS.items()}
    stages = _stages(doc.get("stages"), source)
    cfg = Config(source=source, stages=stages, **sections)
    _check(cfg)
    return cfg


def _reject_unknown(table: dict[str, Any], known: list[str], source: str, prefix: str) -> None:
    for key in table:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            did = (t("unknown key; did you mean {key}?", key=repr(prefix + hint[0])) if hint
                   else t("unknown key; known keys: {keys}", keys=", ".join(known)))
            raise ConfigError(f"{source}: {prefix}{key}: {did}")


def _build(cls: type, table: Any, source: str, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: {where}: " + t("expected a table, got {value}", value=repr(table)))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(table, list(fields), source, f"{where}.")
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(hints[k], v, source, f"{where}.{k}") for k, v in table.items()}
    return cls(**values)


_TIME = re.compile(r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    """Check `value` against the dataclass field type `hint`; convert decimals and tuples."""
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key} = {value!r}: " + t("expected {what}", what=expected))

    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value == "" and Decimal in args:
            return None
        return _coerce(args[0], value, source, key)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise bad(t("one of {choices}", choices=", ".join(repr(c) for c in choices)))
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise bad(t("true or false"))
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(t("a whole number >= 0"))
        return value
    if hint is str:
        if not isinstance(value, str):
            raise bad(t("a string in quotes"))
        return value
    if hint is Decimal:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise bad(t('a decimal number, written as a string ("40.00")'))
        try:
            d = Decimal(str(value))
        except InvalidOperation:
            raise bad(t('a decimal number such as "40.00"')) from None
        if not d.is_finite() or d < 0:
            raise bad(t("a finite decimal number >= 0"))
        return d
    if origin is tuple and get_args(hint)[0] is int:  # days from a date: before it (< 0) or after
        if not isinstance(value, list) or not all(isinstance(x, int) and not isinstance(x, bool) and -60 <= x <= 60
                                                  for x in value) or value != sorted(set(value)):
            raise bad(t("a list of whole numbers of days from -60 to 60, in increasing order"))
        return tuple(value)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise bad(t("a list of strings"))
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise bad(t('an inline table such as {example}', example='{ "2025-H1" = "3.15" }'))
        return {k: _coerce(Decimal, v, source, f"{key}.{k}") for k, v in value.items()}
    raise bad(str(hint))  # pragma: no cover - a field type this loader does not know


def _stages(raw: Any, source: str) -> tuple[StageConfig, ...]:
    if raw is None:
        return DEFAULT_STAGES
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: stages: " + t("expected at least one [[stages]] table"))
    out = []
    for i, table in enumerate(raw):
        where = f"stages[{i}]"
        st: StageConfig = _build(StageConfig, table, source, where)
        if not st.name:
            raise ConfigError(f"{source}: {where}.name: " + t("missing (each stage needs a name)"))
        if i == 0 and st.after_due_days is None:
            raise ConfigError(f"{source}: {where}.after_due_days: " + t("missing (the first stage counts "
                                                                        "from the due date)"))
        if i == 0 and st.after_previous_days is not None:
            raise ConfigError(f"{source}: {where}.after_previous_days: " + t("the first stage takes "
                                                                             "after_due_days instead"))
        if i > 0 and st.after_previous_days is None:
            raise ConfigError(f"{source}: {where}.after_previous_days: " + t("missing (later stages count "
                                                                             "from the previous one sent)"))
        if i > 0 and st.after_due_days is not None:
            raise ConfigError(f"{source}: {where}.after_due_days: " + t("only the first stage counts from "
                                                                        "the due date; use after_previous_days"))
        out.append(dataclasses.replace(st, template=st.template or st.name))
    names = [s.name for s in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"{source}: stages: " + t("name {name} used twice", name=repr(sorted(dupes)[0])))
    return tuple(out)


def _check(cfg: Config) -> None:
    src = cfg.source
    try:
        ZoneInfo(cfg.schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{src}: schedule.timezone = {cfg.schedule.timezone!r}: "
                          + t('expected an IANA time zone such as "Europe/Paris"')) from None
    if cfg.schedule.tick_minutes < 1:
        raise ConfigError(f"{src}: schedule.tick_minutes = {cfg.schedule.tick_minutes}: " + t("expected at least 1"))
    win = cfg.schedule.window
    if len(win) != 2 or not all(_TIME.match(w) for w in win) or win[0] >= win[1] or win[0] == "24:00":
        raise ConfigError(f"{src}: schedule.window = {list(win)!r}: " + t(
            'expected two times ["HH:MM", "HH:MM"], the first before the second ("24:00" for the end of the day)'))
    if cfg.schedule.holidays:
        import holidays  # noqa: PLC0415 - only needed to validate the country code

        if cfg.schedule.holidays.upper() not in holidays.list_supported_countries():
            raise ConfigError(f"{src}: schedule.holidays = {cfg.schedule.holidays!r}: "
                              + t('expected a country code of the holidays package such as "FR", or ""'))
    if cfg.imap.move_handled_to and cfg.imap.move_handled_to in cfg.imap.folders:
        raise ConfigError(f"{src}: imap.move_handled_to = {cfg.imap.move_handled_to!r}: " + t(
            "expected a folder that is not watched (imap.folders = {folders})", folders=repr(list(cfg.imap.folders))))
    # Every message carries these: one the composer would refuse would stop every reminder.
    if not writable(cfg.company.email):
        raise ConfigError(f"{src}: company.email = {cfg.company.email!r}: " + t("expected an email address"))
    if cfg.company.operator_email and not writable(cfg.company.operator_email):
        raise ConfigError(f"{src}: company.operator_email = {cfg.company.operator_email!r}: "
                          + t("expected an email address"))
    if cfg.understanding.auto_apply_margin > 1:
        raise ConfigError(f"{src}: understanding.auto_apply_margin = {cfg.understanding.auto_apply_margin}: "
                          + t("expected a number from 0 to 1"))
    if cfg.company.reply_to and not writable(cfg.company.reply_to.replace("{token}", "0123abcd")):
        raise ConfigError(f"{src}: company.reply_to = {cfg.company.reply_to!r}: " + t(
            'expected an email address, optionally with {token} ("ar+{token}@acme.example")'))
    for table in ("ecb_rates", "legal_rates"):
        for k in getattr(cfg.penalties, table):
            try:
                parse_half_year(k)
            except ValueError:
                raise ConfigError(f'{src}: penalties.{table}."{k}": '
                                  + t('expected a half-year key such as "2025-H1" or "2025-H2"')) from None
    _check_auth(cfg)
    pdfs = cfg.attachments.path(src)
    if pdfs is not None and not pdfs.is_dir():
        raise ConfigError(f"{src}: attachments.folder = {cfg.attachments.folder!r}: "
                          + t("no such directory ({path})", path=pdfs))
    folder = cfg.templates.path(src)
    if folder is not None and not folder.is_dir():
        raise ConfigError(f"{src}: templates.directory = {cfg.templates.directory!r}: "
                          + t("no such directory ({path})", path=folder))
    if cfg.daemon.metrics_port > 65535:
        raise ConfigError(f"{src}: daemon.metrics_port = {cfg.daemon.metrics_port}: " + t(
            "expected a TCP port from 1 to 65535 (served on 127.0.0.1 only), or 0 for no metrics endpoint"))
    if not cfg.database.url:
        raise ConfigError(f"{src}: database.url: " + t("empty (expected sqlite:///relance.db or a "
                                                       "postgresql+psycopg:// URL)"))


_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def _check_auth(cfg: Config) -> None:
    """An OAuth2 sign-in needs a user name and somewhere to get tokens from."""
    src = cfg.source
    for name, section in (("smtp", cfg.smtp), ("imap", cfg.imap)):
        if section.auth == "password":
            if section.token_command:
                raise ConfigError(f"{src}: {name}.token_command: " + t(
                    'only used with {name}.auth = "xoauth2" or "oauthbearer" (it is "password")', name=name))
            continue
        if not section.username:
            raise ConfigError(f"{src}: {name}.username = '': " + t(
                "expected the mailbox's address: {name}.auth = {auth!r} signs in as a user", name=name,
                auth=section.auth))
        if not section.username.isprintable() or "\x01" in section.username:
            raise ConfigError(f"{src}: {name}.username = {section.username!r}: " + t("expected an email address"))
        if section.token_command and not section.token_command[0]:
            raise ConfigError(f"{src}: {name}.token_command = {list(section.token_command)!r}: " + t(
                'expected a program and its arguments, as a list ["/usr/local/bin/get-token", "--user", "..."]'))
        if not section.token_command and not cfg.oauth.provider:
            raise ConfigError(f"{src}: {name}.auth = {section.auth!r}: " + t(
                'expected {name}.token_command, or [oauth] provider = "microsoft" or "google" '
                "(then run `relance login PROVIDER` once)", name=name))
    o = cfg.oauth
    if o.provider and not o.client_id:
        raise ConfigError(f"{src}: oauth.client_id = '': " + t(
            "expected the application (client) id registered with {provider}", provider=o.provider))
    if o.authority:
        host = re.match(r"^(https?)://([^/:]+|\[[^]]+\])(:\d+)?(/|$)", o.authority)
        if host is None or (host.group(1) == "http" and host.group(2) not in _LOOPBACK):
            raise ConfigError(f"{src}: oauth.authority = {o.authority!r}: " + t(
                'expected an https:// address such as "https://login.microsoftonline.us", or "" for the '
                "provider's own"))
