"""The `relance` command line. Exit codes: 0 ok, 1 invalid input or failed operation, 2 usage."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import actions, desk, ledger, plans, reasons, replies, reports, store
from bot import config as configuration
from bot.config import Config, Secret
from bot.dryrun import Waiting
from bot.errors import ConfigError, DateNeededError, ImportFileError, RelanceError
from bot.i18n import t
from bot.mailer import SmtpMailer
from bot.models import Inbound, Invoice, table
from bot.render import Renderer, check_templates
from bot.tick import Planned, TickReport, plan_only, tick
from bot.tokens import credential
from rules.penalties import ContractRateTooLowError, MissingRateError, compute
from rules.reasons import reason


def parse_now(text: str | None, config: Config) -> datetime:
    """`--now`: ISO date or datetime. A naive time is in the configured zone; a date alone means
    one hour into that day's sending window (a moment when reminders may go out)."""
    if text is None:
        return datetime.now(UTC)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = config.window[0]
            return datetime.combine(day, time(min(start.hour + 1, 23), start.minute), config.zone)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RelanceError(f"--now {text!r}: expected an ISO 8601 date or datetime "
                           "(2027-04-12 or 2027-04-12T10:00:00+02:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=config.zone)


def parse_day(text: str, option: str) -> date:
    """A day as the invoice file takes them: ISO (2026-12-15) or French order (15/12/2026)."""
    try:
        return ledger.parse_date(text.strip())
    except ValueError:
        raise RelanceError(f"{option} {text!r}: " + t("expected a date as YYYY-MM-DD or DD/MM/YYYY")) from None


class App:
    """What every command needs: the config, and the database opened on demand."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config = configuration.load(Path(args.config) if args.config else configuration.default_path())
        self._engine: Engine | None = None
        self.now = parse_now(getattr(args, "now", None), self.config)
        self.actor = f"cli:{getpass.getuser()}"

    def engine(self, ready: bool = True) -> Engine:
        if self._engine is None:
            self._engine = store.make_engine(self.config.database.url)
            if ready:
                store.ensure_ready(self._engine)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def emit(doc: Any) -> None:
    print(json.dumps(doc, ensure_ascii=False, indent=2, default=str))


def cmd_init(app: App) -> int:
    revision = store.migrate(app.engine(ready=False))
    print(t("database ready ({where}, schema {revision})", where=app.config.database.url.split("@")[-1],
            revision=revision))
    return 0


def cmd_import(app: App) -> int:
    path = Path(app.args.file)
    result = ledger.import_file(app.engine(), path, app.config.company.language, app.now, path.name,
                                app.config.attachments.path(app.config.source))
    print(t("{path}: {rows} rows: {created} new, {updated} updated, {unchanged} unchanged, {settled} settled",
            path=path, rows=result.rows, created=result.created, updated=result.updated,
            unchanged=result.unchanged, settled=result.settled))
    return 0


def _would_send(p: Planned) -> str:
    problem = "  " + t("WOULD FAIL: {why}", why=p.problem) if p.problem else ""
    return f"{t('would send')}  {', '.join(p.group.numbers)}  {p.stage}  {p.amount_due}  {p.client} <{p.group.email}>" \
        + problem


def _would_send_waiting(w: Waiting) -> str:
    """A reply or an instalment reminder, in the shape of a reminder's line."""
    return f"{t('would send')}  {', '.join(w.numbers)}  {w.stage}  {w.amount}  {w.client} <{w.email}>"


def print_tick(report: TickReport, dry_run: bool) -> None:
    if dry_run:
        for p in report.planned:
            print(_would_send(p))
        for w in report.waiting:
            print(_would_send_waiting(w))
        print(t("{n} message(s) due (dry run: nothing sent, nothing recorded)",
                n=len(report.planned) + len(report.waiting)))
        if report.window_opens is not None:
            print(t("outside the sending window: it opens {when}; {n} message(s) would go then",
                    when=f"{report.window_opens:%Y-%m-%d %a %H:%M %Z}", n=len(report.then) + len(report.then_waiting)))
            for p in report.then:
                print(_would_send(p))
            for w in report.then_waiting:
                print(_would_send_waiting(w))
        return
    for word, lines in (("sent", report.sent), ("uncertain", report.uncertain), ("deferred", report.deferred),
                        ("refused", report.failed)):
        for line in lines:
            print(f"{t(word):<10} {line}")
    print(t("{sent} sent, {deferred} deferred, {refused} refused, {uncertain} uncertain, {cancelled} cancelled",
            sent=len(report.sent), deferred=len(report.deferred), refused=len(report.failed),
            uncertain=len(report.uncertain), cancelled=report.cancelled))
    if report.digest:
        print(report.digest)


def cmd_tick(app: App) -> int:
    cfg = app.config
    password = None if app.args.dry_run else credential(cfg, "smtp")
    renderer = Renderer.from_config(cfg)
    if not app.args.dry_run:
        problems = check_templates(cfg, renderer, app.now.date())
        if problems:
            raise RelanceError("template error, nothing sent: " + problems[0])
    if app.args.dry_run:
        report = plan_only(app.engine(), cfg, app.now)
    else:
        report = asyncio.run(tick(app.engine(), cfg, SmtpMailer(cfg.smtp, password), app.now, datetime.now(UTC),
                                  renderer=renderer))
    print_tick(report, app.args.dry_run)
    if report.aborted:
        print("relance: " + t("tick stopped: {why}", why=report.aborted), file=sys.stderr)
    elif not report.ok:
        print("relance: " + t("some messages were not sent (see above)"), file=sys.stderr)
    return 0 if report.ok else 1


def table_out(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    if not rows:
        print(t("(none)"))
        return
    translated = {"state", "next_action", "kind", "status"}  # contract values in JSON; words in the table

    def cell(key: str, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, list):
            return ", ".join(map(str, value))
        return t(str(value)) if key in translated else str(value)

    cells = [[t(h) if h else h for _, h in columns]]
    cells += [[reasons.render(r.get("reasons", [])) if k == "reason" else cell(k, r.get(k)) for k, _ in columns]
              for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


STATUS_COLUMNS = (("number", "NUMBER"), ("client", "CLIENT"), ("amount_due", "DUE"), ("currency", ""),
                  ("days_overdue", "LATE"), ("stage", "STAGE"), ("state", "STATE"),
                  ("next_action", "NEXT"), ("next_action_at", "WHEN"))


def cmd_status(app: App) -> int:
    """Printed as the database hands the invoices over, a page at a time: memory does not grow
    with the ledger."""
    if app.args.health:
        return _health(app)
    with app.engine().connect() as conn:
        pages = reports.status_pages(conn, app.config, app.now)
        if app.args.json:
            emit_stream(row for rows in pages for row in rows)
            return 0
        extent = reports.status_extent(conn)
        if not extent["count"]:
            print(t("(none)"))
            return 0
        widths = _status_widths(extent, app)
        print("  ".join((t(h) if h else h).ljust(w) for (_, h), w in zip(STATUS_COLUMNS, widths, strict=True)).rstrip())
        words: dict[str, str] = {}  # a state or an action translated once, not once a row

        def word(value: str) -> str:
            return words.get(value) or words.setdefault(value, t(value))

        for rows in pages:
            for r in rows:
                if r["next_action_at"]:
                    r["next_action_at"] = r["next_action_at"][:16].replace("T", " ")
                cells = (word(str(r[k])) if k in ("state", "next_action") and r[k] is not None
                         else "" if r[k] is None else str(r[k]) for k, _ in STATUS_COLUMNS)
                print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return 0


def _status_widths(extent: dict[str, Any], app: App) -> list[int]:
    """The columns' widths before the rows are read: what the database counted (numbers, clients,
    amounts, days), else the longest word the column can hold (stages, states, next actions)."""
    stages = [s.name for s in app.config.ladder.stages]
    late = max((app.now.astimezone(app.config.zone).date() - extent["oldest_due_date"]).days, 0)
    longest = {
        "number": extent["number"], "client": extent["client"], "amount_due": extent["amount_due"],
        "currency": extent["currency"], "days_overdue": len(str(late)), "stage": max(map(len, stages)),
        "state": max(len(t(s)) for s in reports.OPEN_STATES),
        "next_action": max(len(t(a)) for a in (*stages, "triage", "fix_contact", "fix_data", "resume")),
        "next_action_at": len("2027-04-12 10:00"),
    }
    return [max(len(t(h)) if h else 0, longest[k]) for k, h in STATUS_COLUMNS]


def emit_stream(items: Iterable[Any]) -> None:
    """`emit` of a list, written an item at a time (the same characters)."""
    first = True
    for item in items:
        text = json.dumps(item, ensure_ascii=False, indent=2, default=str)
        sys.stdout.write(("[\n" if first else ",\n") + textwrap.indent(text, "  "))
        first = False
    print("[]" if first else "\n]")


def _health(app: App) -> int:
    """`relance status --health`: exit 1 when a part of the daemon has failed too long."""
    from bot import health  # noqa: PLC0415

    with app.engine().connect() as conn:
        doc = health.report(conn, app.now, app.config.daemon.health_failing_minutes)
    if app.args.json:
        emit(doc)
    else:
        print(t("healthy") if doc["healthy"] else t("NOT HEALTHY: a part has failed for {n} min or more",
                                                     n=doc["failing_minutes"]))
        for name, part in doc["components"].items():
            state = (t("failing since {when}: {why}", when=part["failing_since"], why=part["last_error"])
                     if part["failing_since"] else t("last worked {when}", when=part["last_ok_at"] or t("never")))
            print(f"  {name:<10} {state}")
        for key in ("last_send_at", "messages_waiting", "messages_for_a_person", "invoices_held_for_a_person",
                    "errors_last_hour", "schema"):
            value = doc[key]
            print(f"  {key:<27} {', '.join(value) if isinstance(value, list) else value}")
    return 0 if doc["healthy"] else 1


def cmd_show(app: App) -> int:
    with app.engine().connect() as conn:
        doc = reports.show(conn, app.config, app.args.number, app.now)
    if app.args.json:
        emit(doc)
        return 0
    for key in ("number", "client", "email", "amount", "paid", "amount_due", "currency", "issue_date",
                "due_date", "days_overdue", "stage", "state", "next_action", "next_action_at"):
        print(f"{key:>15}: {'' if doc.get(key) is None else doc[key]}")
    print("\n" + t("reminders:"))
    table_out(doc["reminders"], (("at", "AT"), ("stage", "STAGE"), ("status", "STATUS"), ("subject", "SUBJECT")))
    print("\n" + t("events:"))
    table_out(doc["events"], (("at", "AT"), ("kind", "KIND"), ("actor", "BY"), ("reason", "WHY")))
    if doc["messages"]:
        print("\n" + t("messages:"))
        table_out(doc["messages"], (("received_at", "RECEIVED"), ("from", "FROM"), ("kind", "KIND"),
                                    ("subject", "SUBJECT")))
    return 0


def cmd_pause(app: App) -> int:
    until = None
    if app.args.until:
        until = datetime.combine(parse_day(app.args.until, "--until"), time(0, 0), app.config.zone)
    print(actions.pause(app.engine(), app.args.number, app.now, until, app.args.reason or "", app.actor))
    return 0


def cmd_resume(app: App) -> int:
    print(actions.resume(app.engine(), app.args.number, app.now, app.actor))
    return 0


def cmd_paid(app: App) -> int:
    amount = None
    if app.args.amount is not None:
        try:
            amount = ledger.parse_amount(app.args.amount)
        except ValueError as e:
            raise RelanceError(f"--amount {app.args.amount!r}: {e}") from None
    print(actions.record_payment(app.engine(), app.args.number, app.now, amount, app.actor))
    return 0


def cmd_simulate(app: App) -> int:
    start, end = parse_day(app.args.start, "--from"), parse_day(app.args.end, "--to")
    if end < start:
        raise RelanceError(f"--to {end} is before --from {start}")
    with app.engine().connect() as conn:
        sends = reports.simulate(conn, app.config, start, end)
    if app.args.json:
        emit([{"at": s.at.isoformat(), "number": s.number, "client": s.client, "stage": s.stage,
               "amount_due": str(s.amount_due), "skipped": list(s.skipped), "problem": s.problem or None}
              for s in sends])
        return 0
    for s in sends:
        skipped = "  (" + t("passes over {stages}", stages=", ".join(s.skipped)) + ")" if s.skipped else ""
        problem = "  " + t("WOULD FAIL: {why}", why=s.problem) if s.problem else ""
        print(f"{s.at:%Y-%m-%d %a %H:%M}  {s.number}  {s.stage}  {s.amount_due}  {s.client}{skipped}{problem}")
    print(t("{n} reminder(s) from {start} to {end} (simulation: nothing sent, nothing recorded)", n=len(sends),
            start=start, end=end))
    return 0


def cmd_check(app: App) -> int:
    cfg = app.config
    print(t("config {source}: ok ({stages} stages, {zone}, holidays {holidays})", source=cfg.source,
            stages=len(cfg.stages), zone=cfg.schedule.timezone, holidays=cfg.schedule.holidays or t("none")))
    problems = check_templates(cfg, Renderer.from_config(cfg), app.now.date())
    for p in problems:
        print(f"template: {p}", file=sys.stderr)
    if problems:
        return 1
    print(t("templates: ok ({stages} stages x fr, en rendered with a sample invoice)", stages=len(cfg.stages)))
    today = app.now.astimezone(cfg.zone).date()
    failed = 0
    if any(s.penalties for s in cfg.ladder.stages):  # the half-year of today must have its rate
        try:
            compute(Decimal("100.00"), today - timedelta(days=1), today, cfg.penalty_policy)
        except (MissingRateError, ContractRateTooLowError) as e:
            print("relance: " + t("{why}: a formal notice sent now would fail", why=e), file=sys.stderr)
            failed = 1
    for section in ("smtp", "imap"):
        if section == "imap" and not cfg.imap.folders:
            continue
        server = cfg.smtp if section == "smtp" else cfg.imap
        print(f"{section}: {server.host}:{server.port} ({server.tls}), " + sign_in(cfg, section))
    store.ensure_ready(app.engine(ready=False))
    print(t("database: ok"))
    with app.engine().connect() as conn:  # reminders that failed on their data wait for a person
        inv = table(Invoice)
        waiting = conn.execute(sa.select(sa.func.count()).where(inv.c.data_error.is_not(None),
                                                                inv.c.state == "active")).scalar_one()
    if waiting:
        print("relance: " + t("{n} invoice(s) get no reminder until their data is fixed (next action fix_data "
                              "in `relance status`)", n=waiting), file=sys.stderr)
    return max(failed, _check_servers(cfg) if app.args.online else 0)


def sign_in(cfg: Config, section: Literal["smtp", "imap"]) -> str:
    """How `section` will log in, checked as far as can be without the network: the password's
    variable is set, the token file is there and safe (never a password or a token)."""
    server = cfg.smtp if section == "smtp" else cfg.imap
    login = credential(cfg, section)
    if login is None:
        return t("no login")
    if server.auth == "password":
        return t("password from ${var}", var=server.password_env)
    assert not isinstance(login, Secret)  # auth is "xoauth2" or "oauthbearer"
    login.check()
    return f"{server.auth}, " + login.describe()


def _check_servers(cfg: Config) -> int:
    """`relance check --online`: log in to the SMTP and IMAP servers and open every watched folder,
    as `relance run` will; read-only, nothing sent, nothing marked read."""
    from bot.errors import FolderError, MailboxError  # noqa: PLC0415
    from bot.mailbox import ImapSource  # noqa: PLC0415

    async def smtp() -> None:
        async with SmtpMailer(cfg.smtp, credential(cfg, "smtp")) as mailer:
            methods.append(mailer.method)

    failed = 0
    methods: list[str] = []
    try:
        asyncio.run(smtp())
        print(t("smtp: connected and logged in ({method})", method=methods[0]) if cfg.smtp.username else
              t("smtp: connected; no login (smtp.username is empty: a relay that needs none)"))
    except RelanceError as e:
        print(f"smtp: {e}", file=sys.stderr)
        failed = 1
    if not cfg.imap.folders:
        return failed
    source = ImapSource(cfg.imap, credential(cfg, "imap"))
    try:
        source.connect()
        print(t("imap: connected and logged in ({method})", method=source.method))
        for folder in cfg.imap.folders:
            try:
                source.select(folder)
                print(t("imap: folder {folder} opens read-only", folder=repr(folder)))
            except FolderError as e:
                print(f"imap: {e}", file=sys.stderr)
                failed = 1
        print(t("imap: IDLE {idle}", idle=t("yes") if source.can_idle() else
                t("no: the folders are polled every {n} s", n=cfg.imap.poll_seconds)))
        if cfg.imap.move_handled_to and not source.can_move():
            print("imap: " + t('neither MOVE nor UIDPLUS: set imap.move_handled_to = ""'), file=sys.stderr)
            failed = 1
    except MailboxError as e:
        print(f"imap: {e}", file=sys.stderr)
        failed = 1
    finally:
        source.close()
    return failed


def cmd_login(app: App) -> int:
    """`relance login microsoft|google`: the device-code flow, once; the refresh token goes to oauth.token_file."""
    from bot import devicelogin  # noqa: PLC0415 - msal and the HTTP client, for this command only

    print(devicelogin.login(app.config, app.args.provider))
    return 0


def cmd_kpi(app: App) -> int:
    with app.engine().connect() as conn:
        doc = reports.kpi(conn, app.config, app.now)
    if app.args.json:
        emit(doc)
        return 0
    for key, value in doc.items():
        if key == "definitions":
            continue
        if isinstance(value, dict):  # amounts per stage: one line each
            for sub, v in value.items():
                print(f"{key + '.' + sub:>40}: {v}")
        elif isinstance(value, list):  # a weekly series, the oldest week first (from weeks_from)
            print(f"{key:>40}: {' '.join(str(v) for v in value)}")
        else:
            print(f"{key:>40}: {'n/a' if value is None else value}")
    return 0


def cmd_messages(app: App) -> int:
    with app.engine().connect() as conn:
        rows = reports.messages(conn, app.args.triage)
    if app.args.json:
        emit(rows)
    else:
        # A guess waiting for a person's word shows with "?" (`relance assign ID NUMBER` confirms it).
        shown = [{**r, "invoices": ", ".join(r["invoices"]) or (", ".join(r["suggested"]) + " ?" if r["suggested"]
                                                                 else "")} for r in rows]
        table_out(shown, (("id", "#"), ("received_at", "RECEIVED"), ("from", "FROM"), ("kind", "KIND"),
                          ("invoices", "INVOICES"), ("status", "STATUS"), ("subject", "SUBJECT"), ("reason", "WHY")))
    return 0


def cmd_run(app: App) -> int:
    from bot.daemon import Daemon, one_per_sqlite_file  # noqa: PLC0415
    from bot.logs import configure  # noqa: PLC0415

    configure(app.args.log_format)
    with one_per_sqlite_file(app.config.database.url):
        asyncio.run(Daemon(app.engine(), app.config, reload=lambda: configuration.load(Path(app.config.source))).run())
    return 0


def cmd_sync(app: App) -> int:
    from bot import inbound  # noqa: PLC0415
    from bot.mailbox import ImapSource  # noqa: PLC0415

    cfg = app.config
    source = ImapSource(cfg.imap, credential(cfg, "imap"))
    report = inbound.SyncReport()
    try:
        lines = inbound.sync(app.engine(), source, cfg, app.now, report)
        for folder in report.rescanned:
            print(t("{folder}: UIDVALIDITY changed, folder read again (duplicates skipped)", folder=folder))
        for line in lines:
            print(line)
        print(t("{stored} new message(s) stored, {processed} understood", stored=report.stored,
                processed=len(lines)))
        moved = inbound.move_handled(app.engine(), source, cfg.imap.move_handled_to, app.now)
        if moved:
            print(t("{moved} handled message(s) moved to {folder}", moved=moved, folder=cfg.imap.move_handled_to))
    finally:
        source.close()
    for why in report.unreadable:
        print(f"relance: {why}", file=sys.stderr)
    return 1 if report.unreadable else 0


def cmd_reprocess(app: App) -> int:
    from bot import inbound  # noqa: PLC0415

    with app.engine().connect() as c:
        q = sa.select(table(Inbound).c.id)
        if not app.args.all:
            if app.args.id is None:
                raise RelanceError("reprocess: give a message number (see `relance messages`) or --all")
            q = q.where(table(Inbound).c.id == app.args.id)
        ids = list(c.execute(q).scalars())
    for line in inbound.process(app.engine(), app.config, app.now, ids):
        print(line)
    return 0


def cmd_assign(app: App) -> int:
    from bot import decisions  # noqa: PLC0415 - the understanding stack, for the commands that need it

    numbers = actions.canonical_numbers(app.engine(), list(app.args.numbers))  # f-2026-003 is F-2026-003
    print(decisions.assign(app.engine(), app.config, app.now, app.args.id, numbers, app.actor))
    return 0


def cmd_close(app: App) -> int:
    print(actions.close_message(app.engine(), app.args.id, app.now, app.actor))
    return 0


def cmd_label(app: App) -> int:
    from bot import decisions  # noqa: PLC0415
    from rules.classify import Kind  # noqa: PLC0415

    until = parse_day(app.args.until, "--until") if app.args.until else None
    try:
        print(decisions.label(app.engine(), app.config, app.now, app.args.id, Kind(app.args.kind), app.actor, until))
    except DateNeededError as e:
        raise RelanceError(f"{e} {t('(--until YYYY-MM-DD)')}") from None
    return 0


def cmd_learn(app: App) -> int:
    from bot import learn  # noqa: PLC0415 - scikit-learn is loaded for this command only

    model, examples, own = learn.learn(app.engine(), app.now)
    print(t("classifier refitted on {examples} examples ({own} labelled here); {features} features",
            examples=examples, own=own, features=len(model.weights)))
    return 0


def cmd_contact(app: App) -> int:
    print(actions.change_contact(app.engine(), app.args.number, app.args.email, app.now, app.actor))
    return 0


def cmd_plugin(app: App) -> int:
    """Commands other packages register (the `tui` package registers `relance tui`), so bot never
    imports the UI. They get `now` when `--now` was given, and `name` from `--as`."""
    from importlib.metadata import entry_points  # noqa: PLC0415

    found = entry_points(group="relance.commands", name=app.args.command)
    if not found:
        raise RelanceError(f"`relance {app.args.command}` is not installed (reinstall relance)")
    extra: dict[str, Any] = {}
    if getattr(app.args, "now", None):
        extra["now"] = app.now
    if getattr(app.args, "who", None):
        extra["name"] = app.args.who
    next(iter(found)).load()(app.engine(), app.config, app.actor, **extra)
    return 0


def cmd_undo(app: App) -> int:
    print(desk.undo(app.engine(), app.now, app.actor, app.args.decision))
    return 0


def decided(app: App, action: str, scope: desk.Scope, run: Callable[[], str]) -> int:
    """A decision the way the triage UI records it: undoable with `relance undo`."""
    why = app.args.reason or reason("decision.command", action=action)
    print(desk.decide(app.engine(), app.now, app.actor, action, why, scope, run).text)
    return 0


def cmd_dismiss(app: App) -> int:
    ids = tuple(app.args.ids)
    return decided(app, "dismiss", desk.Scope(inbounds=ids), lambda: desk.dismiss(
        app.engine(), ids, app.now, app.actor, app.args.reason or reason("decision.dismiss")))


def cmd_ignore(app: App) -> int:
    address = app.args.address.strip().lower()
    with app.engine().connect() as conn:
        waiting = tuple(desk.waiting_from(conn, address))
    return decided(app, "ignore", desk.Scope(inbounds=waiting, senders=(address,)), lambda: desk.ignore_sender(
        app.engine(), address, app.now, app.actor, app.args.reason or ""))


def cmd_plan(app: App) -> int:
    a = app.args
    scope = desk.Scope(invoices=(a.number,), inbounds=(a.message,) if a.message else ())
    if a.reject:
        return decided(app, "reject_plan", scope, lambda: desk.reject_plan(
            app.engine(), a.number, app.now, app.actor, a.reason or "", a.message))
    if not a.accept:
        raise RelanceError("relance plan: give --accept \"AMOUNT DATE, ...\" or --reject")
    steps = plans.parse(a.accept)
    return decided(app, "accept_plan", scope, lambda: desk.accept_plan(
        app.engine(), app.config, a.number, steps, app.now, app.actor, a.reason or "", a.message))


def cmd_settle(app: App) -> int:
    a = app.args
    credit = None
    if a.credit is not None:
        try:
            credit = ledger.parse_amount(a.credit)
        except ValueError as e:
            raise RelanceError(f"--credit {a.credit!r}: {e}") from None
    how = "credit" if credit is not None else ("cancel" if a.cancel else "resume")
    return decided(app, "settle", desk.Scope(invoices=(a.number,)), lambda: desk.settle_dispute(
        app.engine(), a.number, how, app.now, app.actor, a.reason or "", credit))


def cmd_reply(app: App) -> int:
    """A reply to a client's message from a template in its language: printed (--draft), edited
    (--edit, --body-file), queued in the outbox as an undoable decision, sent now with --send."""
    a = app.args
    if a.who:
        app.actor = f"cli:{a.who}"
    engine = app.engine()
    with engine.connect() as c:
        inbound_id = replies.find(c, a.message)
        d = replies.draft(c, app.config, inbound_id, a.template, app.now)
    if a.draft:
        print(f"To: {d.to}\nSubject: {d.subject}\n\n{d.text}", end="")
        return 0
    text: str | None = None
    if a.body_file:
        try:
            text = Path(a.body_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RelanceError(f"--body-file {a.body_file}: {e}") from None
    if a.edit:
        text = replies.edit(text if text is not None else d.text)
    queued: list[replies.Queued] = []

    def run() -> str:
        queued.append(replies.queue(engine, app.config, inbound_id, a.template, text, app.now, app.actor,
                                    a.reason or ""))
        return replies.queued_text(queued[0])

    print(desk.decide(engine, app.now, app.actor, "reply", a.reason or reason("decision.reply", template=a.template),
                      desk.Scope(inbounds=(inbound_id,)), run).text)
    if not a.send:
        return 0
    cfg = app.config
    report = asyncio.run(replies.send(engine, cfg, SmtpMailer(cfg.smtp, cfg.smtp.password(cfg.source)),
                                      queued[0].outbound_id, app.now, datetime.now(UTC)))
    print_tick(report, False)
    if report.sent:
        print(t("sent: a mail that went out cannot be undone"))
    return 0 if report.sent else 1


def run_demo(keep: bool) -> int:
    from bot import demo  # noqa: PLC0415 - the demo pulls in the sandbox servers

    return demo.main(keep=keep)


# rules.classify.Kind, spelled out: importing the classifier would slow every command (a test keeps them equal)
KINDS = ("payment_claim", "promise_to_pay", "payment_plan", "dispute", "auto_reply", "bounce", "human_reply")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="config file (default ./config.toml, else $RELANCE_CONFIG)")
    timed = argparse.ArgumentParser(add_help=False)
    timed.add_argument("--now", help="replace the clock: ISO 8601 date or datetime")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="one JSON document on stdout")

    p = argparse.ArgumentParser(prog="relance", description="Gets unpaid invoices paid.")
    p.add_argument("--config", default=None, help="config file (default ./config.toml, else $RELANCE_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[App], int], text: str, *parents: argparse.ArgumentParser
            ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=text, description=text, parents=[common, *parents])
        sp.set_defaults(fn=fn)
        return sp

    add("init", cmd_init, "create or migrate the database (idempotent)")
    add("import", cmd_import, "upsert invoices from a CSV file", timed).add_argument("file")
    sp = add("tick", cmd_tick, "one scheduling pass: send every reminder due now", timed)
    sp.add_argument("--dry-run", action="store_true", help="print what would be sent, change nothing")
    add("sync", cmd_sync, "one inbox pass: store new messages, understand them, apply their effects", timed)
    sp = add("reprocess", cmd_reprocess, "run stored messages through the pipeline again", timed)
    sp.add_argument("id", nargs="?", type=int, help="a message's number (`relance messages --json` shows `id`)")
    sp.add_argument("--all", action="store_true")
    add("run", cmd_run, "the daemon: a scheduling pass every schedule.tick_minutes until SIGTERM").add_argument(
        "--log-format", choices=("text", "json"), default="text",
        help="human lines (default), or one JSON object a line for a log collector")
    add("status", cmd_status, "one row per open invoice", timed, as_json).add_argument(
        "--health", action="store_true",
        help="is the daemon working: each part's last success and failure, what waits; exit 1 when a part has "
             "failed longer than daemon.health_failing_minutes")
    add("show", cmd_show, "one invoice with its history", timed, as_json).add_argument("number")
    sp = add("pause", cmd_pause, "hold escalation for an invoice", timed)
    sp.add_argument("number")
    sp.add_argument("--until", help="YYYY-MM-DD; without it, until `relance resume`")
    sp.add_argument("--reason", help="why, kept in the history")
    add("resume", cmd_resume, "put an invoice back on the ladder", timed).add_argument("number")
    sp = add("paid", cmd_paid, "record a payment (the whole amount due by default)", timed)
    sp.add_argument("number")
    sp.add_argument("--amount", help="a partial payment, e.g. 250.00")
    sp = add("simulate", cmd_simulate, "replay the ladder day by day; changes nothing", as_json)
    sp.add_argument("--from", dest="start", required=True, metavar="DATE")
    sp.add_argument("--to", dest="end", required=True, metavar="DATE")
    sp = add("check", cmd_check, "validate the config and render every template", timed)
    sp.add_argument("--online", action="store_true",
                    help="also log in to the SMTP and IMAP servers and open every watched folder (read-only)")
    add("login", cmd_login, "sign in once with OAuth2 (device code) for smtp/imap auth = \"xoauth2\"; stores the "
        "refresh token in oauth.token_file").add_argument("provider", choices=("microsoft", "google"))
    add("kpi", cmd_kpi, "collection KPIs", timed, as_json)
    sp = add("messages", cmd_messages, "inbound messages and what was understood", timed, as_json)
    sp.add_argument("--triage", action="store_true", help="only those waiting for a person")
    sp = add("assign", cmd_assign, "say which invoices a message waiting in triage concerns; its effects apply",
             timed)
    sp.add_argument("id", type=int, help="the message's number (`relance messages --triage`)")
    sp.add_argument("numbers", nargs="+", metavar="NUMBER", help="invoice number(s)")
    sp = add("close", cmd_close, "a message waiting in triage has been dealt with", timed)
    sp.add_argument("id", type=int, help="the message's number (`relance messages --triage`)")
    sp = add("label", cmd_label, "a person's reading of a message: sets its kind, applies what that kind does, "
             "and keeps it as an example the classifier learns from", timed)
    sp.add_argument("id", type=int, help="the message's number (`relance messages`)")
    sp.add_argument("kind", choices=KINDS, help="what the message is")
    sp.add_argument("--until", help="a promise's date (YYYY-MM-DD), when the message gives none")
    add("learn", cmd_learn, "refit the reply classifier on the shipped corpus plus the kinds people set", timed)
    sp = add("contact", cmd_contact, "a client's new address after a bounce: clears the failing contact, resumes",
             timed)
    sp.add_argument("number")
    sp.add_argument("--email", required=True, help="the new address")
    add("tui", cmd_plugin, "the triage UI (Textual)", timed).add_argument(
        "--as", dest="who", metavar="NAME", help="who decides, as the history records it (default: the OS user)")
    sp = add("undo", cmd_undo, "revert your last decision (refused when changed since)", timed)
    sp.add_argument("decision", nargs="?", type=int, help="a decision event's id (default: your last one)")
    sp = add("dismiss", cmd_dismiss, "messages waiting in triage that need nothing (noise)", timed)
    sp.add_argument("ids", nargs="+", type=int, metavar="ID")
    sp.add_argument("--reason", help="why, kept in the history")
    sp = add("ignore", cmd_ignore, "mail from this address never waits for a person again", timed)
    sp.add_argument("address")
    sp.add_argument("--reason", help="why, kept in the history")
    sp = add("plan", cmd_plan, "accept or decline a payment plan", timed)
    sp.add_argument("number")
    sp.add_argument("--accept", metavar="INSTALMENTS", help='"400.00 2027-05-01, 600.00 2027-06-01"')
    sp.add_argument("--reject", action="store_true")
    sp.add_argument("--message", type=int, help="the message that proposed it (decided with it)")
    sp.add_argument("--reason", help="why, kept in the history")
    sp = add("settle", cmd_settle, "a dispute is settled: resume (default), --cancel, or --credit AMOUNT", timed)
    sp.add_argument("number")
    sp.add_argument("--cancel", action="store_true", help="withdraw the invoice (a credit note for all that is due)")
    sp.add_argument("--credit", help="a credit note of this amount; the rest is still due")
    sp.add_argument("--reason", help="why, kept in the history")
    sp = add("reply", cmd_reply, "answer a client's message from a template in its language, threaded to it; "
             "queued in the outbox (sent by the next pass), or sent now with --send", timed)
    sp.add_argument("message", metavar="MESSAGE", help="the message's number (`relance messages`) or its Message-ID")
    sp.add_argument("--template", required=True, choices=replies.TEMPLATES, help="what the reply says")
    sp.add_argument("--body-file", metavar="FILE", help="the text to send instead of the template's (UTF-8)")
    sp.add_argument("--edit", action="store_true", help="edit the text in $VISUAL / $EDITOR first")
    sp.add_argument("--draft", action="store_true", help="print the reply the template writes; change nothing")
    sp.add_argument("--send", action="store_true", help="send it now rather than with the next pass")
    sp.add_argument("--reason", help="why, kept in the history")
    sp.add_argument("--as", dest="who", metavar="NAME", help="who replies, as the history records it")
    add("demo", lambda app: run_demo(app.args.keep), "run everything against an embedded mail sandbox").add_argument(
        "--keep", action="store_true", help="keep the demo's database and files")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":  # needs no config of the user's
        try:
            return run_demo(args.keep)
        except RelanceError as e:
            print(f"relance: {e}", file=sys.stderr)
            return 1
    app = None
    try:
        app = App(args)
        code = int(args.fn(app))
        sys.stdout.flush()  # here, where a closed pipe can still be handled
    except BrokenPipeError:  # `relance kpi | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except ImportFileError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        print(f"relance: {e}", file=sys.stderr)
        return 1
    except (RelanceError, ConfigError) as e:
        print(f"relance: {e}", file=sys.stderr)
        return 1
    except sa.exc.SQLAlchemyError as e:  # unreachable server, locked file, a schema older than the code...
        why = str(getattr(e, "orig", None) or e).splitlines()[0]
        print(f"relance: database error: {why} (if the schema is behind, run `relance init`)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    else:
        return code
    finally:
        if app is not None:
            app.close()


if __name__ == "__main__":
    sys.exit(main())
