"""The credit controller's daily screen: what waits for a decision (the queue), every open invoice,
the KPIs. It reaches the store only through bot's API (bot.triage reads a page at a time,
bot.desk / bot.actions / bot.decisions decide), in thread workers: the UI does not wait on the
database (but for the one-row look-ups that prefill a prompt: the amount due, a plan's proposal).

Safety first: every action names the item it acts on and the version of the invoice it read
(bot.versions); the cursor stays on that item (or, when it left the queue, on the next one);
each decision is an event with who and why, shown in the line above the footer, and `u` undoes
the last one. The screen reads the store again within seconds of a change by the daemon or
another person (`POLL_SECONDS`), keeping the cursor where it was."""

from __future__ import annotations

import gc
import getpass
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.timer import Timer
from textual.widgets import DataTable, Header, Sparkline, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from bot import decisions, reports, triage
from bot.config import Config
from bot.errors import RelanceError
from bot.i18n import day, moment, money, stage, stage_labels, t, words
from bot.reasons import render as t_reason
from bot.store import Engine
from tui.decide import KINDS, Decisions, kind_typed
from tui.footer import SteadyFooter
from tui.kpis import kpi_text, series_points, series_title
from tui.screens import Help, ItemScreen, translated
from tui.table import KeptTable

PAGE = 100
POLL_SECONDS = 2.0
# While the daemon writes (a tick sending a thousand reminders moves the marker all the time), the
# screen reads what it shows again at most once in READ_SHARE times what that read took: on a big
# store a page and its counts take 0.3 s, the KPIs seconds; the person's keys keep the CPU.
READ_SHARE = 10
# After a decision the counts are read again once the person pauses this long: on a big store they
# are a 50 ms query, which would otherwise share the CPU with the repaint of the row acted on.
COUNT_AFTER_SECONDS = 0.5
# Queue columns, widest screen first; narrow screens keep the first ones (what is at stake and what it is).
QUEUE_COLUMNS = (("stake", "STAKE", 12), ("kind", "KIND", 22), ("client", "CLIENT", 18), ("invoices", "INVOICES", 12),
                 ("late", "LATE", 6), ("from", "FROM", 26), ("received", "RECEIVED", 17), ("why", "WHY", 60))
INVOICE_COLUMNS = (("number", "NUMBER", 12), ("amount_due", "DUE", 13), ("days_overdue", "LATE", 6),
                   ("state", "STATE", 12), ("client", "CLIENT", 20), ("stage", "STAGE", 16), ("next", "NEXT", 28))


FILTER_KEYS = {"kind": "kind", "type": "kind", "client": "client", "lang": "lang", "langue": "lang", "box": "box",
               "boite": "box", "boîte": "box"}


QUEUE_KINDS = tuple(dict.fromkeys((*KINDS, *triage.INVOICE_KINDS)))  # what the queue's kind filter takes


def filters_typed(text: str) -> dict[str, str]:
    """`kind=litige client=Client B lang=fr box=INBOX` as a person types it: a value runs to the
    next `key=` (a client's name has spaces); an unknown key, kind or language is refused, saying
    what is expected, rather than dropped."""
    found: dict[str, str] = {}
    if not text.strip():
        return found
    parts = re.split(r"(?:^|\s+)(\w+)=", " " + text.strip())
    for key, typed in (("", parts[0]), *zip(parts[1::2], parts[2::2], strict=True)):
        name = FILTER_KEYS.get(key.lower())
        if name is None:  # a word before the first key=, or a key of no filter
            if key or typed.strip():
                raise RelanceError(t("{value}: expected key=value (kind, client, lang, box)",
                                     value=repr(key or typed.strip())))
            continue
        value = kind_typed(typed, QUEUE_KINDS) if name == "kind" else typed.strip()
        if name == "lang" and value not in ("fr", "en"):
            raise RelanceError(t("lang={value}: expected fr or en", value=value))
        found[name] = value
    return found


LAST_AT_LEAST = 20
WEEKLY = ("settled_per_week", "replies_per_week")  # the KPIs' weekly series, as sparklines


def fits(columns: tuple[tuple[str, str, int], ...], width: int) -> list[tuple[str, str, int]]:
    """The columns that fit in `width` cells, in order: the others collapse. The last column (the
    queue's WHY, the invoices' NEXT) takes what is left when that is at least `LAST_AT_LEAST`
    cells, so that a reason shows, cut, rather than not at all."""
    out: list[tuple[str, str, int]] = []
    used = 4
    for i, c in enumerate(columns):
        if used + c[2] + 2 > width and out:
            left = width - used - 2
            if i == len(columns) - 1 and left >= LAST_AT_LEAST:
                out.append((c[0], c[1], left))
            break
        out.append(c)
        used += c[2] + 2
    return out


class RelanceApp(Decisions):
    TITLE = "Relance"
    page_size = PAGE
    CSS = """
    /* Fixed sizes: a row added or removed repaints the table, not the screen (an auto height lays
       out every widget again, 10 to 15 ms of each decision). */
    TabbedContent, ContentSwitcher, TabPane, #queue, #invoices { height: 1fr; }
    #preview { height: 7; border-top: solid $accent; padding: 0 1; }
    #where { height: 1; padding: 0 1; color: $text-muted; }
    #done { height: 1; padding: 0 1; background: $boost; }
    #kpis { padding: 0 1; }
    #kpi-scroll { height: 1fr; }
    .series-title { padding: 1 1 0 1; }
    Sparkline { height: 3; width: 48; margin: 0 2; }  /* 4 cells a week */
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
        Binding("R", "reply", "Reply to the client", show=False),
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
                 actor: str = "tui", poll_seconds: float = POLL_SECONDS,
                 count_after_seconds: float = COUNT_AFTER_SECONDS) -> None:
        super().__init__()
        self.engine, self.config, self.clock, self.actor = engine, config, clock, actor
        self.poll_seconds, self.count_after_seconds = poll_seconds, count_after_seconds
        self.items: dict[str, triage.Item] = {}
        # The items after the page, read with it (the same query, as fast for twice the rows): one
        # comes in at the end when a decision takes a row out, with no query in the key press.
        self.spares: list[triage.Item] = []
        self.decided: list[int] = []
        self.invoices: dict[str, dict[str, Any]] = {}
        self.filters = triage.Filters()
        self.offset = {"queue": 0, "invoices": 0}
        self.total = {"queue": 0, "invoices": 0}
        self.per_kind: dict[str, int] = {}
        self.sort, self.descending = "amount_due", True
        self.selected: set[str] = set()
        self.seen_marker: tuple[int, int, int] | None = None
        self.acting = 0  # decisions under way (their events are not for the poll to read back)
        self.took: dict[str, float] = {}  # how long the last read of each part took (s): the queue, the KPIs...
        self.last_auto_read = 0.0  # time.monotonic() when the poll last had the screen read again
        self.next_auto_read = 0.0  # before which a change seen by the poll waits
        self.count_timer: Timer | None = None
        self.warmed = False
        self.width_seen = 0
        self.invoices_shown = False
        self.labels = stage_labels(config.stages)
        # What the preview and each queue line last showed, by the item read (items are immutable: a
        # new read is a new object). DataTable sets its cursor on every row added, which calls the
        # preview: a page filled again would render it a hundred times, and every line anew.
        self._previewed: object = None
        self._cells: dict[str, tuple[triage.Item, tuple[Any, ...], list[str]]] = {}
        translated(self)

    # Layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="queue-pane"):
            with TabPane(t("Queue"), id="queue-pane"):
                yield Static("", id="counts", markup=False)
                yield KeptTable(id="queue", cursor_type="row")
                yield Static("", id="where", markup=False)
                yield Static("", id="preview")
            with TabPane(t("Invoices"), id="invoices-pane"):
                yield KeptTable(id="invoices", cursor_type="row")
                yield Static("", id="invoices-where", markup=False)
            with TabPane(t("KPIs"), id="kpi-pane"), VerticalScroll(id="kpi-scroll"):  # longer than 80x24 shows
                yield Static("", id="kpis")
                for key in WEEKLY:
                    yield Static("", id=f"{key}-title", classes="series-title")
                    yield Sparkline([], id=key)
        yield Static("", id="done", markup=False)
        yield SteadyFooter()

    def on_mount(self) -> None:
        self._columns()
        queue = self.query_one("#queue", DataTable)
        queue.focus()
        self.watch(queue, "cursor_coordinate", self._cursor_moved, init=False)
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
        began = time.monotonic()
        with self.engine.connect() as conn:
            marker = triage.marker(conn)
            rows = triage.page(conn, self.filters, self.offset["queue"], 2 * self.page_size)
            if get_current_worker().is_cancelled:  # a newer read (the next letter typed) replaces this one
                return
            self.call_from_thread(self._queue_read, rows, marker)
            counted = triage.totals(conn, self.filters)
        self.took["queue"] = time.monotonic() - began
        self.call_from_thread(self._counted, *counted)

    def recount_soon(self) -> None:
        """The counts again, once no decision came for `count_after_seconds` (once for a run of them);
        the page too when a run of decisions used up its spares."""
        if self.count_timer is not None:
            self.count_timer.stop()
        if self.count_after_seconds <= 0:
            self._paused()
        else:
            self.count_timer = self.set_timer(self.count_after_seconds, self._paused)

    def _paused(self) -> None:
        waiting = self.total["queue"] - self.offset["queue"]
        if len(self.spares) < self.page_size // 2 and len(self.items) + len(self.spares) < waiting:
            self.load_queue()
        else:
            self.recount()

    @work(thread=True, exclusive=True, group="count")
    def recount(self) -> None:
        with self.engine.connect() as conn:
            counted = triage.totals(conn, self.filters)
        self.call_from_thread(self._counted, *counted)

    def _queue_read(self, rows: list[triage.Item], marker: tuple[int, int, int]) -> None:
        self.seen_marker = marker
        self.spares = rows[self.page_size:]
        self._fill_queue(rows[:self.page_size], keep=self._current_key())

    def _counted(self, total: int, per_kind: dict[str, int]) -> None:
        self.total["queue"], self.per_kind = total, per_kind
        self._show_counts()
        if not self.warmed:  # the first page is on screen: what the first decision would load, now
            self.warmed = True
            self.warm_up()

    @work(thread=True, group="warm")
    def warm_up(self) -> None:
        decisions.warm_up(self.engine, self.config, self.clock())
        self.call_from_thread(self._settled)

    def _settled(self) -> None:
        """What is loaded now (the reader, the screens, the store's metadata) lives as long as the
        app: out of the garbage collector's full passes, which walked all of it, 90 ms a pass on a big
        store, in the middle of a key press about one press in ten. Collected first, so that no
        garbage of the start is kept; given back to the collector when the app ends (not frozen when
        the app ended before its reader was loaded)."""
        if self.is_running:
            gc.collect()
            gc.freeze()

    def on_unmount(self) -> None:
        gc.unfreeze()

    @work(thread=True, exclusive=True, group="invoices")
    def load_invoices(self) -> None:
        began = time.monotonic()
        with self.engine.connect() as conn:
            rows = triage.invoice_page(conn, self.config, self.clock(), self.sort, self.descending,
                                       self.offset["invoices"], self.page_size, self.filters.search)
            total = triage.invoice_count(conn, self.filters.search)
        self.took["invoices"] = time.monotonic() - began
        self.call_from_thread(self._invoices_read, rows, total)

    def _invoices_read(self, rows: list[dict[str, Any]], total: int) -> None:
        self.total["invoices"] = total
        self._fill_invoices(rows, keep=self._current_number())

    @work(thread=True, exclusive=True, group="poll")
    def poll(self) -> None:
        """A change by the daemon or another person shows without a key: read the marker, and the
        page when it moved."""
        if time.monotonic() < self.next_auto_read:  # the last reads were long: a run of changes waits a little
            return
        if self.acting > 0:  # a decision's own events: it reads back what it changed itself
            return
        with self.engine.connect() as conn:
            marker = triage.marker(conn)
        if self.seen_marker is not None and marker != self.seen_marker:
            self.call_from_thread(self._moved)

    def _moved(self) -> None:
        self.last_auto_read = time.monotonic()
        self.next_auto_read = self.last_auto_read + READ_SHARE * self._read_took()
        self.refresh_all()

    def _read_took(self) -> float:
        """How long what refresh_all reads took last time (the parts it would read again)."""
        kpis = self.took.get("kpis", 0.0) if self.query_one(TabbedContent).active == "kpi-pane" else 0.0
        return self.took.get("queue", 0.0) + (self.took.get("invoices", 0.0) if self.invoices_shown else 0.0) + kpis

    def refresh_all(self) -> None:
        self.load_queue()
        if self.invoices_shown:
            self.load_invoices()
        if self.query_one(TabbedContent).active == "kpi-pane":
            self.load_kpis()

    @work(thread=True, exclusive=True, group="kpi")
    def load_kpis(self) -> None:
        began = time.monotonic()
        with self.engine.connect() as conn:
            doc = reports.kpi(conn, self.config, self.clock())
        self.took["kpis"] = time.monotonic() - began
        self.call_from_thread(self._show_kpis, doc)

    def _show_kpis(self, doc: dict[str, Any]) -> None:
        self.query_one("#kpis", Static).update(kpi_text(doc, self.labels, self.per_kind))
        for key in WEEKLY:
            self.query_one(f"#{key}-title", Static).update(series_title(doc, key))
            self.query_one(f"#{key}", Sparkline).data = series_points(doc, key)

    # Filling the tables -------------------------------------------------------------------------

    def _queue_cells(self, item: triage.Item, keys: list[str]) -> list[str]:
        today = self.clock().astimezone(self.config.zone).date()
        mark = "● " if item.key in self.selected else ""
        seen = (tuple(keys), mark, today)
        kept = self._cells.get(item.key)
        if kept is not None and kept[0] is item and kept[1] == seen:
            return kept[2]
        if len(self._cells) > 4 * PAGE:
            self._cells.clear()
        cells = {"stake": mark + money(item.stake), "kind": words(item.kind), "client": item.client,
                 "invoices": ", ".join(item.numbers or item.suggested),
                 "late": str(max((today - item.due_date).days, 0)) if item.due_date else "",
                 "from": item.sender, "received": moment(item.received_at, self.config.zone),
                 "why": t_reason(item.reason)}
        self._cells[item.key] = (item, seen, [cells[k] for k in keys])
        return self._cells[item.key][2]

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
              total=self.total["invoices"]) + f" · {t('Sort')}: {self._sort_name()} {'↓' if self.descending else '↑'}")

    def _sort_name(self) -> str:
        """The column the invoices are sorted by, by its header (DUE, not amount_due)."""
        return t(next((title for key, title, _ in INVOICE_COLUMNS if key == self.sort), self.sort.upper()))

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
              total=self.total["queue"]) + selected, layout=False)  # one line, always

    def _show_preview(self) -> None:
        item = self.items.get(self._current_key() or "")
        if item is self._previewed:
            return
        self._previewed = item
        text = "" if item is None else (
            f"[b]{escape(item.subject)}[/b] · {escape(item.sender)}\n{escape(t_reason(item.reason))}")
        self.query_one("#preview", Static).update(text, layout=False)  # its size is fixed: no layout

    def _cursor_moved(self) -> None:
        """The preview follows the cursor in the same repaint as the cursor (the RowHighlighted
        message comes after that repaint, and a second one for the preview)."""
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
        # The wait before the next read follows what the screen now shows (the KPIs take seconds).
        self.next_auto_read = self.last_auto_read + READ_SHARE * self._read_took()
        if pane == "kpi-pane":
            self.load_kpis()
        if pane == "invoices-pane" and not self.invoices_shown:
            self.invoices_shown = True
            self.load_invoices()
        if pane in ("queue-pane", "invoices-pane"):
            self.query_one("#queue" if pane == "queue-pane" else "#invoices", DataTable).focus()
        if pane == "kpi-pane":  # the arrows and page keys scroll what does not fit
            self.query_one("#kpi-scroll").focus()

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
    def _open(self, key: str | None, inbound_id: int | None, numbers: tuple[str, ...], line: str = "") -> None:
        with self.engine.connect() as conn:
            message = triage.message(conn, inbound_id) if inbound_id is not None else None
            docs = [triage.invoice(conn, self.config, n, self.clock()) for n in numbers]
        self.call_from_thread(self._show_item, key or f"i{numbers[0]}", message, docs, line)

    def _show_item(self, key: str, message: dict[str, Any] | None, docs: list[dict[str, Any]], line: str = "") -> None:
        screen = self.get_screen("item")
        assert isinstance(screen, ItemScreen)
        screen.show(key, message, docs, line)
        if self.screen is not screen:
            self.push_screen(screen)

    def reopen(self, line: str) -> None:
        """The item shown read again (after a decision on it, or one refused as stale): it shows what
        the next decision will apply to."""
        screen = self.screen
        if isinstance(screen, ItemScreen) and screen.key:
            inbound_id = int(screen.message["id"]) if screen.message else None
            self._open(screen.key, inbound_id, tuple(d["number"] for d in screen.invoices), line)

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
        new = self.offset[which] + step * self.page_size
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
        current = " ".join(f"{k}={v}" for k, v in (("kind", words(f.kind) if f.kind else ""), ("client", f.client),
                                                   ("lang", f.language), ("box", f.mailbox)) if v)

        def then(answer: str) -> None:
            found = filters_typed(answer)
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
        keys = [(self.get_key_display(b), t(b.description)) for b in self.BINDINGS if isinstance(b, Binding)]
        keys += [("o", t("Original")), ("v", t("Reminder as sent")), ("esc", t("Back")), ("tab", "→")]
        self.push_screen(Help(keys))

def run(engine: Engine, config: Config, actor: str, now: datetime | None = None, name: str | None = None) -> None:
    """Entry point of `relance tui` (registered under the `relance.commands` entry points): the
    language follows the config unless RELANCE_LANG says otherwise; `--now` fixes the clock;
    `--as NAME` names who decides (else the OS user)."""
    os.environ.setdefault("RELANCE_LANG", config.company.language)
    who = f"tui:{name or getpass.getuser()}"
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    del actor  # the command line's own actor (cli:USER): the UI names itself
    RelanceApp(engine, config, clock=clock, actor=who).run()
