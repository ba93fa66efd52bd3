"""The credit controller's daily screen: what waits for a decision (the queue), every open invoice,
the KPIs. It reaches the store only through bot's API (bot.triage reads a page at a time,
bot.desk / bot.actions / bot.decisions decide), always in thread workers: the UI never waits on
the database.

Safety first: every action names the item it acts on and the version of the invoice it read
(bot.versions); the cursor stays on that item (or, when it left the queue, on the next one);
each decision is an event with who and why, shown in the line above the footer, and `u` undoes
the last one. The screen reads the store again within seconds of a change by the daemon or
another person (`POLL_SECONDS`), keeping the cursor where it was."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from bot import actions, decisions, desk, plans, reports, triage
from bot.config import Config
from bot.errors import RelanceError, StaleError
from bot.i18n import day, moment, money, stage, stage_labels, t, t_reason, words
from bot.store import Engine
from bot.understand import find_dates
from rules.classify import Kind
from rules.plan import instalments
from tui.screens import Help, ItemScreen, Prompt, translated

KINDS = tuple(k.value for k in Kind)
PAGE = 100
POLL_SECONDS = 2.0
# Queue columns, widest screen first; narrow screens keep the first ones (what is at stake and what it is).
QUEUE_COLUMNS = (("stake", "STAKE", 12), ("kind", "KIND", 18), ("client", "CLIENT", 18), ("invoices", "INVOICES", 12),
                 ("late", "LATE", 6), ("from", "FROM", 26), ("received", "RECEIVED", 17), ("why", "WHY", 60))
INVOICE_COLUMNS = (("number", "NUMBER", 12), ("amount_due", "DUE", 13), ("days_overdue", "LATE", 6),
                   ("state", "STATE", 12), ("client", "CLIENT", 20), ("stage", "STAGE", 16), ("next", "NEXT", 18))


def fits(columns: tuple[tuple[str, str, int], ...], width: int) -> list[tuple[str, str, int]]:
    """The columns that fit in `width` cells, in order: the others collapse."""
    out: list[tuple[str, str, int]] = []
    used = 4
    for c in columns:
        if used + c[2] + 2 > width and out:
            break
        out.append(c)
        used += c[2] + 2
    return out


class RelanceApp(App[None]):
    TITLE = "Relance"
    CSS = """
    #preview { height: 7; border-top: solid $accent; padding: 0 1; }
    #where { height: 1; padding: 0 1; color: $text-muted; }
    #done { height: 1; padding: 0 1; background: $boost; }
    #kpis { padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open"),
        Binding("c", "confirm", "Confirm"),
        Binding("k", "label", "Kind"),
        Binding("m", "paid", "Mark paid"),
        Binding("u", "undo", "Undo"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("a", "assign", "Assign to invoices", show=False),
        Binding("y", "accept_plan", "Accept plan", show=False),
        Binding("n", "reject_plan", "Reject plan", show=False),
        Binding("s", "settle", "Settle dispute", show=False),
        Binding("e", "contact", "New address", show=False),
        Binding("p", "pause", "Pause", show=False),
        Binding("r", "resume", "Resume", show=False),
        Binding("d", "dismiss", "Dismiss", show=False),
        Binding("i", "ignore", "Ignore sender", show=False),
        Binding("space", "select", "Select", show=False),
        Binding("slash", "search", "Search", show=False),
        Binding("f", "filter", "Filter", show=False),
        Binding("t", "sort", "Sort", show=False),
        Binding("right_square_bracket", "page(1)", "Next page", show=False),
        Binding("left_square_bracket", "page(-1)", "Previous page", show=False),
        Binding("g", "reload", "Refresh", show=False),
        Binding("w", "save_attachment", "Save attachment", show=False),
        Binding("1", "tab('queue-pane')", "Queue", show=False),
        Binding("2", "tab('invoices-pane')", "Invoices", show=False),
        Binding("3", "tab('kpi-pane')", "KPIs", show=False),
    ]

    def __init__(self, engine: Engine, config: Config, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 actor: str = "tui", poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__()
        self.engine, self.config, self.clock, self.actor = engine, config, clock, actor
        self.poll_seconds = poll_seconds
        self.items: dict[str, triage.Item] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.filters = triage.Filters()
        self.offset = {"queue": 0, "invoices": 0}
        self.total = {"queue": 0, "invoices": 0}
        self.per_kind: dict[str, int] = {}
        self.sort, self.descending = "amount_due", True
        self.selected: set[str] = set()
        self.seen_marker: tuple[int, int, int] | None = None
        self.width_seen = 0
        self.invoices_shown = False
        self.labels = stage_labels(config.stages)
        translated(self)

    # Layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="queue-pane"):
            with TabPane(t("Queue"), id="queue-pane"):
                yield Static("", id="counts", markup=False)
                yield DataTable(id="queue", cursor_type="row")
                yield Static("", id="where", markup=False)
                yield Static("", id="preview")
            with TabPane(t("Invoices"), id="invoices-pane"):
                yield DataTable(id="invoices", cursor_type="row")
                yield Static("", id="invoices-where", markup=False)
            with TabPane(t("KPIs"), id="kpi-pane"):
                yield Static("", id="kpis")
        yield Static("", id="done", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._columns()
        self.query_one("#queue", DataTable).focus()
        self.install_screen(ItemScreen(self.config.zone, self.labels), "item")
        self.load_queue()  # the invoices when their tab is first shown: the queue paints first
        self.set_interval(self.poll_seconds, self.poll)

    def on_resize(self) -> None:
        if self.size.width != self.width_seen:
            self._columns()
            self._fill_queue(list(self.items.values()), keep=self._current_key())
            self._fill_invoices(list(self.invoices.values()), keep=self._current_number())

    def _columns(self) -> None:
        self.width_seen = self.size.width
        for table_id, columns in (("queue", QUEUE_COLUMNS), ("invoices", INVOICE_COLUMNS)):
            table = self.query_one(f"#{table_id}", DataTable)
            table.clear(columns=True)
            for key, title, width in fits(columns, self.size.width):
                table.add_column(t(title), key=key, width=width)
        self.query_one("#preview").display = self.size.height >= 20

    # Reading the store (thread workers) -----------------------------------------------------------

    @work(thread=True, exclusive=True, group="queue")
    def load_queue(self) -> None:
        """Read one page of the queue and show it; then how many wait, in all and per kind."""
        with self.engine.connect() as conn:
            marker = triage.marker(conn)
            rows = triage.page(conn, self.filters, self.offset["queue"], PAGE)
            if get_current_worker().is_cancelled:  # a newer read (the next letter typed) replaces this one
                return
            self.call_from_thread(self._queue_read, rows, marker)
            per_kind = triage.counts(conn)
            total = sum(per_kind.values()) if self.filters == triage.Filters() else triage.count(conn, self.filters)
        self.call_from_thread(self._counted, total, per_kind)

    def _queue_read(self, rows: list[triage.Item], marker: tuple[int, int, int]) -> None:
        self.seen_marker = marker
        self._fill_queue(rows, keep=self._current_key())

    def _counted(self, total: int, per_kind: dict[str, int]) -> None:
        self.total["queue"], self.per_kind = total, per_kind
        self._show_counts()

    @work(thread=True, exclusive=True, group="invoices")
    def load_invoices(self) -> None:
        with self.engine.connect() as conn:
            rows = triage.invoice_page(conn, self.config, self.clock(), self.sort, self.descending,
                                       self.offset["invoices"], PAGE, self.filters.search)
            total = triage.invoice_count(conn, self.filters.search)
        self.call_from_thread(self._invoices_read, rows, total)

    def _invoices_read(self, rows: list[dict[str, Any]], total: int) -> None:
        self.total["invoices"] = total
        self._fill_invoices(rows, keep=self._current_number())

    @work(thread=True, exclusive=True, group="poll")
    def poll(self) -> None:
        """A change by the daemon or another person shows without a key: read the marker, and the
        page when it moved."""
        with self.engine.connect() as conn:
            marker = triage.marker(conn)
        if self.seen_marker is not None and marker != self.seen_marker:
            self.call_from_thread(self.refresh_all)

    def refresh_all(self) -> None:
        self.load_queue()
        if self.invoices_shown:
            self.load_invoices()
        if self.query_one(TabbedContent).active == "kpi-pane":
            self.load_kpis()

    @work(thread=True, exclusive=True, group="kpi")
    def load_kpis(self) -> None:
        with self.engine.connect() as conn:
            doc = reports.kpi(conn, self.config, self.clock())
        self.call_from_thread(self.query_one("#kpis", Static).update, self._kpi_text(doc))

    # Filling the tables -------------------------------------------------------------------------

    def _queue_cells(self, item: triage.Item, keys: list[str]) -> list[str]:
        today = self.clock().astimezone(self.config.zone).date()
        mark = "● " if item.key in self.selected else ""
        cells = {"stake": mark + money(item.stake), "kind": words(item.kind), "client": item.client,
                 "invoices": ", ".join(item.numbers or item.suggested),
                 "late": str(max((today - item.due_date).days, 0)) if item.due_date else "",
                 "from": item.sender, "received": moment(item.received_at, self.config.zone),
                 "why": t_reason(item.reason)}
        return [cells[k] for k in keys]

    def _fill_queue(self, rows: list[triage.Item], keep: str | None) -> None:
        table = self.query_one("#queue", DataTable)
        index = table.cursor_row
        self.items = {r.key: r for r in rows}
        keys = [str(c.key.value) for c in table.ordered_columns]
        table.clear()
        for r in rows:
            table.add_row(*self._queue_cells(r, keys), key=r.key)
        self._place(table, list(self.items), keep, index)
        self._show_counts()
        self._show_preview()

    def _invoice_cells(self, r: dict[str, Any], keys: list[str]) -> list[str]:
        cells = {"number": r["number"], "amount_due": money(Decimal(r["amount_due"]), r["currency"]),
                 "days_overdue": str(r["days_overdue"]), "state": words(r["state"]), "client": r["client"],
                 "stage": stage(r["stage"], self.labels),
                 "next": (words(r["next_action"]) if r["next_action"] in ("triage", "resume", "fix_contact")
                          else stage(r["next_action"], self.labels)) + (
                     f" {day(date.fromisoformat(r['next_action_at'][:10]))}" if r["next_action_at"] else "")}
        return [cells[k] for k in keys]

    def _fill_invoices(self, rows: list[dict[str, Any]], keep: str | None) -> None:
        table = self.query_one("#invoices", DataTable)
        index = table.cursor_row
        self.invoices = {r["number"]: r for r in rows}
        keys = [str(c.key.value) for c in table.ordered_columns]
        table.clear()
        for r in rows:
            table.add_row(*self._invoice_cells(r, keys), key=r["number"])
        self._place(table, list(self.invoices), keep, index)
        first = self.offset["invoices"] + 1 if rows else 0
        self.query_one("#invoices-where", Static).update(
            t("{first}–{last} of {total}", first=first, last=self.offset["invoices"] + len(rows),
              total=self.total["invoices"]) + f" · {t('Sort')}: {self.sort} {'↓' if self.descending else '↑'}")

    @staticmethod
    def _place(table: DataTable[Any], keys: list[str], keep: str | None, index: int) -> None:
        """The cursor on the row it was on (by key), else at the same place: the next one."""
        if not keys:
            return
        row = keys.index(keep) if keep in keys else min(index, len(keys) - 1)
        table.move_cursor(row=max(row, 0), animate=False)

    def _show_counts(self) -> None:
        parts = [f"{words(k)} {n}" for k, n in sorted(self.per_kind.items(), key=lambda kv: -kv[1])]
        f = self.filters
        active = " ".join(f"{k}={v}" for k, v in (("kind", f.kind), ("client", f.client), ("lang", f.language),
                                                  ("box", f.mailbox), ("/", f.search)) if v)
        self.query_one("#counts", Static).update(
            (" · ".join(parts) or t("nothing waits for a person")) + (f"   [{active}]" if active else ""))
        first = self.offset["queue"] + 1 if self.items else 0
        selected = f" · {t('{n} selected', n=len(self.selected))}" if self.selected else ""
        self.query_one("#where", Static).update(
            t("{first}–{last} of {total}", first=first, last=self.offset["queue"] + len(self.items),
              total=self.total["queue"]) + selected)

    def _show_preview(self) -> None:
        item = self.items.get(self._current_key() or "")
        text = "" if item is None else (
            f"[b]{escape(item.subject)}[/b] · {escape(item.sender)}\n{escape(t_reason(item.reason))}")
        self.query_one("#preview", Static).update(text)

    @on(DataTable.RowHighlighted, "#queue")
    def _highlighted(self) -> None:
        self._show_preview()

    @on(DataTable.RowSelected)
    def _selected_row(self) -> None:
        """Enter on a row (the table takes the key first): the item, or the invoice, in full."""
        self.action_open()

    @on(DataTable.HeaderSelected, "#invoices")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        column = {"next": "state"}.get(key, key)
        self.descending = not self.descending if column == self.sort else column in ("amount_due", "days_overdue")
        self.sort = column
        self.load_invoices()

    @on(TabbedContent.TabActivated)
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane.id
        if pane == "kpi-pane":
            self.load_kpis()
        if pane == "invoices-pane" and not self.invoices_shown:
            self.invoices_shown = True
            self.load_invoices()
        if pane in ("queue-pane", "invoices-pane"):
            self.query_one("#queue" if pane == "queue-pane" else "#invoices", DataTable).focus()

    # Where the cursor is -------------------------------------------------------------------------

    def _pane(self) -> str:
        if isinstance(self.screen, ItemScreen):
            return "item"
        return self.query_one(TabbedContent).active

    def _current_key(self) -> str | None:
        if isinstance(self.screen, ItemScreen):
            return self.screen.key
        table = self.query_one("#queue", DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def _current_number(self) -> str | None:
        table = self.query_one("#invoices", DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def _target(self) -> tuple[str, int | None, int | None] | None:
        """The invoice an action applies to (number, its version read, the message if any)."""
        if self._pane() == "invoices-pane":
            number = self._current_number()
            if number is None:
                return None
            return number, self.invoices[number]["version"], None
        item = self.items.get(self._current_key() or "")
        if item is None:
            self.notify(t("Nothing to triage"), severity="warning")
            return None
        if item.number is None:
            self.notify(t("this item concerns no single invoice: open it (Enter) or assign it (a)"),
                        severity="warning")
            return None
        return item.number, item.versions.get(item.number), item.inbound_id

    def _message(self) -> triage.Item | None:
        item = self.items.get(self._current_key() or "") if self._pane() != "invoices-pane" else None
        if item is None or item.inbound_id is None:
            self.notify(t("not a message: nothing to read or dismiss"), severity="warning")
            return None
        return item

    # Acting -------------------------------------------------------------------------------------

    def decide(self, action: str, why: str, scope: desk.Scope, run: Callable[[], str], many: bool = False,
               otherwise: Callable[[], None] | None = None) -> None:
        """Run a decision in a worker; show what was done (or why not) in the line above the footer.
        `many`: it changes several rows of the page (a bulk dismissal): the page is read again.
        `otherwise`: what to offer when the decision is refused for want of something (a prompt)."""
        self._decide(action, why, scope, run, self._current_key(), self._current_number(), many, otherwise)

    @work(thread=True, group="act")
    def _decide(self, action: str, why: str, scope: desk.Scope, run: Callable[[], str], key: str | None,
                number: str | None, many: bool, otherwise: Callable[[], None] | None) -> None:
        try:
            done = desk.decide(self.engine, self.clock(), self.actor, action, why, scope, run)
        except StaleError as e:
            self.call_from_thread(self._refused, str(e), True)
            return
        except RelanceError as e:
            self.call_from_thread(self._refused, str(e), False)
            if otherwise is not None:
                self.call_from_thread(otherwise)
            return
        except Exception as e:
            self.call_from_thread(self._refused, f"{type(e).__name__}: {e}", True)
            return
        self._after(t("done by {actor}: {what} (u: undo)", actor=self.actor, what=done.text), key, number)
        if many:
            self.call_from_thread(self.refresh_all)

    def _after(self, line: str, key: str | None, number: str | None) -> None:
        """Read again only what the decision changed: the item and the invoice acted on; show them;
        then the counts."""
        with self.engine.connect() as conn:
            item = triage.one(conn, key) if key else None
            row = (triage.invoice_page(conn, self.config, self.clock(), "number", False, 0, 1, number)
                   if number else [])
            marker = triage.marker(conn)
            self.call_from_thread(self._changed, line, key, item, number, row, marker)
            per_kind = triage.counts(conn)
            total = sum(per_kind.values()) if self.filters == triage.Filters() else triage.count(conn, self.filters)
        self.call_from_thread(self._counted, total, per_kind)

    def _changed(self, line: str, key: str | None, item: triage.Item | None, number: str | None,
                 row: list[dict[str, Any]], marker: tuple[int, int, int]) -> None:
        self.query_one("#done", Static).update(line)
        screen = self.get_screen("item")
        if isinstance(screen, ItemScreen) and screen.is_mounted:
            screen.query_one("#done", Static).update(line)
        self.seen_marker = marker
        if key is not None and key in self.items:
            table = self.query_one("#queue", DataTable)
            if item is None:
                table.remove_row(key)
                del self.items[key]
                self.selected.discard(key)
            else:
                self.items[key] = item
                keys = [str(c.key.value) for c in table.ordered_columns]
                for k, v in zip(keys, self._queue_cells(item, keys), strict=True):
                    table.update_cell(key, k, v)
        if number is not None and number in self.invoices:
            table = self.query_one("#invoices", DataTable)
            if not row or row[0]["number"] != number:
                table.remove_row(number)
                del self.invoices[number]
            else:
                self.invoices[number] = row[0]
                keys = [str(c.key.value) for c in table.ordered_columns]
                for k, v in zip(keys, self._invoice_cells(row[0], keys), strict=True):
                    table.update_cell(number, k, v)
        self._show_preview()

    def _refused(self, why: str, stale: bool) -> None:
        self.notify(why, severity="error", timeout=8)
        self.query_one("#done", Static).update(why)
        if stale:
            self.refresh_all()

    def ask(self, question: str, value: str, then: Callable[[str], None],
            on_change: Callable[[str], None] | None = None) -> None:
        def answered(answer: str | None) -> None:
            if answer is not None:
                try:
                    then(answer.strip())
                except RelanceError as e:
                    self._refused(str(e), False)

        self.push_screen(Prompt(question, value, on_change), answered)

    def _now(self) -> datetime:
        return self.clock()

    def action_confirm(self) -> None:
        """The bot's reading is right: kept as an example, applied as that kind does."""
        item = self._message()
        if item is not None and item.kind in KINDS:
            inbound_id = item.inbound_id
            assert inbound_id is not None
            self.decide("confirm", t("confirmed from the triage screen"), desk.Scope(inbounds=(inbound_id,)),
                        lambda: decisions.label(self.engine, self.config, self._now(), inbound_id, Kind(item.kind),
                                                self.actor, in_triage=True),
                        # a promise with no date read: the person gives it
                        otherwise=self.action_label if item.kind == Kind.PROMISE_TO_PAY.value else None)

    def action_label(self) -> None:
        item = self._message()
        if item is None:
            return
        inbound_id = item.inbound_id
        assert inbound_id is not None

        def then(answer: str) -> None:
            words = answer.split()
            if not words or words[0] not in KINDS:
                raise RelanceError(t("unknown kind {kind} (one of {kinds})", kind=repr(answer),
                                     kinds=", ".join(KINDS)))
            try:
                until = date.fromisoformat(words[1]) if len(words) > 1 else None
            except ValueError:
                raise RelanceError(t("{value}: expected a date as YYYY-MM-DD", value=repr(words[1]))) from None
            self.decide("label", f"kind corrected to {words[0]}", desk.Scope(inbounds=(inbound_id,)),
                        lambda: decisions.label(self.engine, self.config, self._now(), inbound_id, Kind(words[0]),
                                                self.actor, until, in_triage=True))

        self.ask(t("kind ({kinds}), a promise's date after it; Enter; Escape cancels", kinds=", ".join(KINDS)),
                 item.kind + (" " if item.kind == Kind.PROMISE_TO_PAY.value else ""), then)

    def action_assign(self) -> None:
        item = self._message()
        if item is None:
            return
        inbound_id = item.inbound_id
        assert inbound_id is not None

        def then(answer: str) -> None:
            numbers = answer.replace(",", " ").split()
            if numbers:
                self.decide("assign", f"assigned to {', '.join(numbers)}",
                            desk.Scope(invoices=tuple(numbers), inbounds=(inbound_id,)),
                            lambda: decisions.assign(self.engine, self.config, self._now(), inbound_id, numbers,
                                                     self.actor, in_triage=True))

        self.ask(t("invoice number(s), then Enter; Escape cancels"), " ".join(item.suggested or item.numbers), then)

    def action_paid(self) -> None:
        target = self._target()
        if target is None:
            return
        number, seen, _ = target
        due = self._due(number)

        def then(answer: str) -> None:
            try:
                amount = Decimal(answer.replace(" ", "").replace("\u202f", "").replace(",", ".")).quantize(
                    Decimal("0.01"))
            except InvalidOperation:
                raise RelanceError(t("{value}: expected an amount such as 250.00", value=repr(answer))) from None
            self.decide("paid", f"{amount} received", desk.Scope(invoices=(number,)),
                        lambda: actions.record_payment(self.engine, number, self._now(), amount, self.actor, seen))

        self.ask(t("amount received for {number} (due {due}); Enter; Escape cancels", number=number,
                   due=money(due) if due is not None else "?"), str(due or ""), then)

    def _due(self, number: str) -> Decimal | None:
        if number in self.invoices:
            return Decimal(self.invoices[number]["amount_due"])
        item = self.items.get(self._current_key() or "")
        if item is not None and item.key == f"i{number}":
            return item.stake
        with self.engine.connect() as conn:  # one row by its unique key: no worker needed
            rows = reports.status_rows(conn, self.config, self._now(), [number])
        return Decimal(rows[0]["amount_due"]) if rows else None

    def action_accept_plan(self) -> None:
        target = self._target()
        if target is None:
            return
        number, seen, inbound_id = target
        proposed = self._proposed(inbound_id)

        def then(answer: str) -> None:
            steps = plans.parse(answer)
            self.decide("accept_plan", f"plan accepted: {answer}",
                        desk.Scope(invoices=(number,), inbounds=(inbound_id,) if inbound_id else ()),
                        lambda: desk.accept_plan(self.engine, self.config, number, steps, self._now(), self.actor,
                                                 f"plan accepted: {answer}", inbound_id, seen))

        self.ask(t("instalments for {number}: amount date, amount date…; Enter; Escape cancels", number=number),
                 proposed, then)

    def _proposed(self, inbound_id: int | None) -> str:
        """The instalments the client proposed, as read in the message (amounts and dates in order)."""
        if inbound_id is None:
            return ""
        with self.engine.connect() as conn:
            m = triage.message(conn, inbound_id)
        sent = m["received_at"] or self._now()
        found = find_dates(m["text"] or "", sent.astimezone(self.config.zone).date())
        return plans.format_steps(instalments(m["text"] or "", tuple(found)))

    def action_reject_plan(self) -> None:
        target = self._target()
        if target is None:
            return
        number, seen, inbound_id = target

        def then(answer: str) -> None:
            self.decide("reject_plan", answer or "plan declined",
                        desk.Scope(invoices=(number,), inbounds=(inbound_id,) if inbound_id else ()),
                        lambda: desk.reject_plan(self.engine, number, self._now(), self.actor, answer, inbound_id,
                                                 seen))

        self.ask(t("why the plan is declined (kept in the history); Enter; Escape cancels"), "", then)

    def action_settle(self) -> None:
        target = self._target()
        if target is None:
            return
        number, seen, inbound_id = target

        def then(answer: str) -> None:
            how, _, why = answer.partition(" ")
            credit = None
            if how not in desk.SETTLEMENTS:
                try:
                    credit = Decimal(how.replace(",", ".")).quantize(Decimal("0.01"))
                except InvalidOperation:
                    raise RelanceError(t("{value}: expected one of {choices}", value=repr(how),
                                         choices="resume, cancel, 250.00")) from None
                how = "credit"
            scope = desk.Scope(invoices=(number,), inbounds=(inbound_id,) if inbound_id else ())

            def run() -> str:
                text = desk.settle_dispute(self.engine, number, how, self._now(), self.actor, why, credit, seen)
                if inbound_id is not None and self.items.get(f"m{inbound_id}"):
                    actions.close_message(self.engine, inbound_id, self._now(), self.actor, "dispute settled")
                return text

            self.decide("settle", why or f"dispute settled: {how}", scope, run)

        self.ask(t("dispute on {number}: resume, cancel, or a credit note amount; then why; Enter", number=number),
                 "resume ", then)

    def action_contact(self) -> None:
        target = self._target()
        if target is None:
            return
        number, seen, inbound_id = target
        email = self.invoices[number]["email"] if number in self.invoices else ""

        def then(answer: str) -> None:
            def run() -> str:
                text = actions.change_contact(self.engine, number, answer, self._now(), self.actor, seen)
                if inbound_id is not None:
                    actions.close_message(self.engine, inbound_id, self._now(), self.actor, "new address")
                return text

            self.decide("contact", f"new address {answer}",
                        desk.Scope(invoices=(number,), inbounds=(inbound_id,) if inbound_id else ()), run)

        self.ask(t("new address for {number} (was {email}); Enter; Escape cancels", number=number, email=email or "?"),
                 "", then)

    def action_pause(self) -> None:
        target = self._target()
        if target is None:
            return
        number, seen, _ = target
        today = self._now().astimezone(self.config.zone).date()
        default = today + timedelta(days=self.config.pause.payment_claim_days)

        def then(answer: str) -> None:
            when, _, why = answer.partition(" ")
            try:
                until = datetime.combine(date.fromisoformat(when), time(0, 0), self.config.zone)
            except ValueError:
                raise RelanceError(t("{value}: expected a date as YYYY-MM-DD, then why", value=repr(when))) from None
            self.decide("pause", why, desk.Scope(invoices=(number,)),
                        lambda: actions.pause(self.engine, number, self._now(), until, why, self.actor, seen))

        self.ask(t("pause {number} until YYYY-MM-DD, then why; Enter; Escape cancels", number=number),
                 f"{default.isoformat()} ", then)

    def action_resume(self) -> None:
        target = self._target()
        if target is not None:
            number, seen, _ = target
            self.decide("resume", "resumed from the triage screen", desk.Scope(invoices=(number,)),
                        lambda: actions.resume(self.engine, number, self._now(), self.actor, seen))

    def action_select(self) -> None:
        key = self._current_key()
        if key is None or key not in self.items:
            return
        self.selected ^= {key}
        table = self.query_one("#queue", DataTable)
        keys = [str(c.key.value) for c in table.ordered_columns]
        table.update_cell(key, keys[0], self._queue_cells(self.items[key], keys)[0])
        self._show_counts()
        table.action_cursor_down()

    def action_dismiss(self) -> None:
        """Dismiss as noise: the selected messages, or the one under the cursor."""
        keys = sorted(self.selected) if self.selected and self._pane() == "queue-pane" else None
        if keys is None:
            item = self._message()
            if item is None:
                return
            keys = [item.key]
        ids = tuple(self.items[k].inbound_id or 0 for k in keys if k in self.items and self.items[k].inbound_id)
        self.decide("dismiss", "noise", desk.Scope(inbounds=ids),
                    lambda: desk.dismiss(self.engine, ids, self._now(), self.actor), many=len(ids) > 1)
        self.selected.clear()

    def action_ignore(self) -> None:
        item = self._message()
        if item is None:
            return
        address = item.sender.lower()
        with self.engine.connect() as conn:
            waiting = tuple(desk.waiting_from(conn, address))
        self.decide("ignore", f"ignore {address}", desk.Scope(inbounds=waiting, senders=(address,)),
                    lambda: desk.ignore_sender(self.engine, address, self._now(), self.actor), many=True)

    def action_undo(self) -> None:
        self._undo()

    @work(thread=True, group="act")
    def _undo(self) -> None:
        try:
            text = desk.undo(self.engine, self.clock(), self.actor)
        except RelanceError as e:
            self.call_from_thread(self._refused, str(e), isinstance(e, StaleError))
            return
        except Exception as e:
            self.call_from_thread(self._refused, f"{type(e).__name__}: {e}", True)
            return
        self.call_from_thread(self.query_one("#done", Static).update, text)
        self.call_from_thread(self.refresh_all)

    # Moving around ------------------------------------------------------------------------------

    def action_open(self) -> None:
        if self._pane() == "invoices-pane":
            number = self._current_number()
            if number:
                self._open(None, None, (number,))
            return
        item = self.items.get(self._current_key() or "")
        if item is not None:
            self._open(item.key, item.inbound_id, item.numbers or item.suggested)

    @work(thread=True, group="open")
    def _open(self, key: str | None, inbound_id: int | None, numbers: tuple[str, ...]) -> None:
        with self.engine.connect() as conn:
            message = triage.message(conn, inbound_id) if inbound_id is not None else None
            docs = [triage.invoice(conn, self.config, n, self.clock()) for n in numbers]
        self.call_from_thread(self._show_item, key or f"i{numbers[0]}", message, docs)

    def _show_item(self, key: str, message: dict[str, Any] | None, docs: list[dict[str, Any]]) -> None:
        screen = self.get_screen("item")
        assert isinstance(screen, ItemScreen)
        screen.show(key, message, docs)
        if self.screen is not screen:
            self.push_screen(screen)

    def action_save_attachment(self) -> None:
        """w: the next attachment of the message shown, saved privately; text is shown in place, other
        files handed to the desktop's viewer when there is a desktop."""
        screen = self.screen
        if isinstance(screen, ItemScreen) and screen.message and screen.message["attachments"]:
            index = screen.attachment % len(screen.message["attachments"])
            screen.attachment += 1
            self._save(int(screen.message["id"]), index)

    @work(thread=True, group="open")
    def _save(self, inbound_id: int, index: int) -> None:
        with self.engine.connect() as conn:
            path, text = triage.save_attachment(conn, inbound_id, index)
        self.call_from_thread(self.notify, t("saved to {path}", path=str(path)))
        if text is not None:
            self.call_from_thread(self._show_attachment, path.name, text)
        elif (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and (opener := shutil.which("xdg-open")):
            subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL,  # noqa: S603 - our own file
                             stderr=subprocess.DEVNULL, start_new_session=True)

    def _show_attachment(self, name: str, text: str) -> None:
        screen = self.screen
        if isinstance(screen, ItemScreen):
            screen.query_one("#message-pane").display = True
            screen.query_one("#message", Static).update(f"[b]{escape(name)}[/b]\n\n{escape(text)}")

    def action_page(self, step: int) -> None:
        which = "invoices" if self._pane() == "invoices-pane" else "queue"
        new = self.offset[which] + step * PAGE
        if 0 <= new < max(self.total[which], 1):
            self.offset[which] = new
            (self.load_invoices if which == "invoices" else self.load_queue)()

    def action_search(self) -> None:
        """Incremental: the queue follows what is typed; Enter keeps it (and searches the invoices)."""
        def typed(answer: str) -> None:
            self.filters = triage.Filters(self.filters.kind, self.filters.client, self.filters.language,
                                          self.filters.mailbox, answer.strip())
            self.offset["queue"] = 0
            self.load_queue()

        def then(answer: str) -> None:
            typed(answer)
            self.offset["invoices"] = 0
            if self.invoices_shown:
                self.load_invoices()

        self.ask(t("search a number, a client or a sender; Enter; empty clears"), self.filters.search, then, typed)

    def action_filter(self) -> None:
        f = self.filters
        current = " ".join(f"{k}={v}" for k, v in (("kind", f.kind), ("client", f.client), ("lang", f.language),
                                                   ("box", f.mailbox)) if v)

        def then(answer: str) -> None:
            found = dict(w.split("=", 1) for w in answer.split() if "=" in w)
            self.filters = triage.Filters(found.get("kind", ""), found.get("client", ""), found.get("lang", ""),
                                          found.get("box", ""), self.filters.search)
            self.offset["queue"] = 0
            self.load_queue()

        self.ask(t("filter: kind=… client=… lang=fr|en box=FOLDER; Enter; empty clears"), current, then)

    def action_sort(self) -> None:
        i = triage.SORTS.index(self.sort)
        self.sort = triage.SORTS[(i + 1) % len(triage.SORTS)]
        self.descending = self.sort in ("amount_due", "days_overdue")
        self.load_invoices()

    def action_tab(self, pane: str) -> None:
        self.query_one(TabbedContent).active = pane

    def action_reload(self) -> None:
        self.refresh_all()

    def action_help(self) -> None:
        keys = [(b.key, t(b.description)) for b in self.BINDINGS if isinstance(b, Binding)]
        keys += [("o", t("Original")), ("v", t("Reminder as sent")), ("escape", t("Back")), ("tab", "→")]
        self.push_screen(Help(keys))

    # KPIs ---------------------------------------------------------------------------------------

    def _kpi_text(self, k: dict[str, Any]) -> str:
        def pct(v: str | None) -> str:
            return f"{v} %" if v is not None else "—"

        lines = [f"[b]{t('DSO (days)')}[/b]: {k['dso_days'] or '—'}",
                 f"[b]{t('open receivables')}[/b]: {money(Decimal(k['open_receivables']))}",
                 f"[b]{t('recovery rate')}[/b]: {pct(k['recovery_rate_pct'])}",
                 f"[b]{t('reply rate')}[/b]: {pct(k['reply_rate_pct'])}",
                 f"[b]{t('days to pay after the first reminder')}[/b]: "
                 f"{k['mean_days_to_pay_after_first_reminder'] or '—'}",
                 f"[b]{t('amicable conversion')}[/b]: {pct(k['amicable_conversion_pct'])}",
                 f"[b]{t('cost of recovery')}[/b]: {money(Decimal(k['cost_of_recovery']))}", "",
                 f"[b]{t('recovered per stage')}[/b]"]
        lines += _bars({stage(n, self.labels): Decimal(v) for n, v in k["recovered_per_stage"].items()})
        if "ageing" in k:
            lines += ["", f"[b]{t('ageing of open receivables')}[/b]"]
            lines += _bars({b: Decimal(v) for b, v in k["ageing"].items()})
        lines += ["", f"[b]{t('waiting per kind')}[/b]"]
        lines += [f"  {words(kind):<24} {n}" for kind, n in sorted(self.per_kind.items(), key=lambda kv: -kv[1])]
        return "\n".join(lines)


def _bars(values: dict[str, Decimal], width: int = 30) -> list[str]:
    """A small bar chart in text: a picture reads faster than a column of amounts."""
    top = max(values.values(), default=Decimal(0)) or Decimal(1)
    return [f"  {name:<18} {'█' * int(v * width / top):<{width}} {money(v)}" for name, v in values.items()]


def run(engine: Engine, config: Config, actor: str, now: datetime | None = None, name: str | None = None) -> None:
    """Entry point of `relance tui` (registered under the `relance.commands` entry points): the
    language follows the config unless RELANCE_LANG says otherwise; `--now` fixes the clock;
    `--as NAME` names who decides (else the OS user)."""
    os.environ.setdefault("RELANCE_LANG", config.company.language)
    who = f"tui:{name or getpass.getuser()}"
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    del actor  # the command line's own actor (cli:USER): the UI names itself
    RelanceApp(engine, config, clock=clock, actor=who).run()
