"""The triage UI: what the bot could not settle alone, and the open invoices, with the overrides
a credit controller needs. It reaches the store only through bot's API (reports, actions).

Keys: tab switches panes; on a message, a assigns it to invoices (the suggested ones are filled
in: Enter confirms), k says what it is (its kind, applied and kept for the classifier to learn
from; a promise takes its date after the kind) and d closes it (decided); on an invoice, p pauses
it 7 days, r resumes it, m marks it paid; g refreshes; q quits."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Input, Static, TabbedContent, TabPane

from bot import actions, decisions, reports
from bot.config import Config
from bot.errors import RelanceError
from bot.i18n import t, t_reason
from bot.store import Engine
from rules.classify import Kind

KINDS = tuple(k.value for k in Kind)
INVOICE_COLUMNS = ("number", "client", "amount_due", "days_overdue", "stage", "state", "next_action")
MESSAGE_COLUMNS = ("received_at", "from", "kind", "invoices", "reason")


class RelanceApp(App[None]):
    TITLE = "Relance"
    CSS = "#text { height: 12; border: round $accent; padding: 0 1; } #assign-to { display: none; }"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "assign", t("Assign to invoices")),
        Binding("k", "label", t("Kind")),
        Binding("d", "close_message", t("Decided")),
        Binding("p", "pause", t("Pause 7 days")),
        Binding("r", "resume", t("Resume")),
        Binding("m", "paid", t("Paid")),
        Binding("g", "reload", t("Refresh")),
        Binding("q", "quit", t("Quit")),
    ]

    def __init__(self, engine: Engine, config: Config, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 actor: str = "tui") -> None:
        super().__init__()
        self.engine = engine
        self.config = config
        self.clock = clock
        self.actor = actor
        self.messages: dict[str, dict[str, Any]] = {}
        self.asking = "assign"  # what the input box is for: "assign" (invoice numbers) or "label" (a kind)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent():
            with TabPane(t("To triage"), id="triage-pane"):
                yield DataTable(id="triage", cursor_type="row")
                yield Static("", id="text")
                yield Input(placeholder=t("invoice number(s), then Enter; Escape cancels"), id="assign-to")
            with TabPane(t("Open invoices"), id="invoices-pane"):
                yield DataTable(id="invoices", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#triage", DataTable).add_columns(*(t(c) for c in ("RECEIVED", "FROM", "KIND", "INVOICES",
                                                                          "WHY")))
        self.query_one("#invoices", DataTable).add_columns(*(t(c) for c in ("NUMBER", "CLIENT", "DUE", "LATE",
                                                                            "STAGE", "STATE", "NEXT")))
        self.reload()

    @work(thread=True, exclusive=True)
    def reload(self) -> None:
        """Read the store in a worker thread; fill the tables on the UI thread."""
        with self.engine.connect() as conn:
            triage = reports.messages(conn, triage_only=True)
            invoices = reports.status_rows(conn, self.config, self.clock())
        self.call_from_thread(self._fill, triage, invoices)

    def _fill(self, triage: list[dict[str, Any]], invoices: list[dict[str, Any]]) -> None:
        self.messages = {str(m["id"]): m for m in triage}
        table = self.query_one("#triage", DataTable)
        table.clear()
        for m in triage:
            table.add_row(*(", ".join(m[c]) if c == "invoices" else t(m[c]) if c == "kind"
                            else t_reason(m[c] or "")[:60] if c == "reason" else str(m[c] or "")[:60]
                            for c in MESSAGE_COLUMNS), key=str(m["id"]))
        inv = self.query_one("#invoices", DataTable)
        inv.clear()
        for r in invoices:
            inv.add_row(*(t(str(r[c])) if c in ("state", "next_action") else str(r[c] or "")
                          for c in INVOICE_COLUMNS), key=r["number"])
        self._show_text()

    def _selected(self, table_id: str) -> str | None:
        table = self.query_one(f"#{table_id}", DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def _show_text(self) -> None:
        key = self._selected("triage")
        m = self.messages.get(key or "")
        self.query_one("#text", Static).update(
            "" if m is None else f"{m['subject']}\n\n{m['text']}\n\n{t_reason(m['reason'] or '')}\n"
            + "\n".join(m.get("cues", [])))

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_text()

    def _invoice_action(self, do: Callable[[str], str]) -> None:
        pane = self.query_one(TabbedContent).active
        number = self._selected("invoices") if pane == "invoices-pane" else None
        if number is None:
            key = self._selected("triage")
            numbers = self.messages.get(key or "", {}).get("invoices", [])
            number = numbers[0] if len(numbers) == 1 else None
        if number is None:
            self.notify(t("Select an invoice first"), severity="warning")
            return
        try:
            self.notify(do(number))
        except RelanceError as e:
            self.notify(str(e), severity="error")
        self.reload()

    def action_pause(self) -> None:
        now = self.clock()
        self._invoice_action(lambda n: actions.pause(self.engine, n, now, now + timedelta(days=7),
                                                     "paused from the triage UI", self.actor))

    def action_resume(self) -> None:
        self._invoice_action(lambda n: actions.resume(self.engine, n, self.clock(), self.actor))

    def action_paid(self) -> None:
        self._invoice_action(lambda n: actions.record_payment(self.engine, n, self.clock(), None, self.actor))

    def action_close_message(self) -> None:
        key = self._selected("triage")
        if key is None:
            self.notify(t("Nothing to triage"), severity="warning")
            return
        self.notify(actions.close_message(self.engine, int(key), self.clock(), self.actor))
        self.reload()

    def action_assign(self) -> None:
        key = self._selected("triage")
        if key is None:
            self.notify(t("Nothing to triage"), severity="warning")
            return
        self._ask("assign", " ".join(self.messages.get(key, {}).get("suggested", [])),
                  t("invoice number(s), then Enter; Escape cancels"))

    def action_label(self) -> None:
        key = self._selected("triage")
        if key is None:
            self.notify(t("Nothing to triage"), severity="warning")
            return
        self._ask("label", self.messages.get(key, {}).get("kind") or "",
                  t("kind ({kinds}), a promise's date after it; Enter; Escape cancels", kinds=", ".join(KINDS)))

    def _ask(self, what: str, value: str, placeholder: str) -> None:
        self.asking = what
        box = self.query_one("#assign-to", Input)
        box.value, box.placeholder, box.display = value, placeholder, True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        box = event.input
        key = self._selected("triage")
        words = event.value.replace(",", " ").split()
        box.display = False
        self.query_one("#triage", DataTable).focus()
        if key is None or not words:
            return
        try:
            if self.asking == "label":
                self.notify(self._label(int(key), words))
            else:
                self.notify(decisions.assign(self.engine, self.config, self.clock(), int(key), words, self.actor))
        except RelanceError as e:
            self.notify(str(e), severity="error")
        self.reload()

    def _label(self, inbound_id: int, words: list[str]) -> str:
        if words[0] not in KINDS:
            raise RelanceError(t("unknown kind {kind} (one of {kinds})", kind=repr(words[0]), kinds=", ".join(KINDS)))
        try:
            until = date.fromisoformat(words[1]) if len(words) > 1 else None
        except ValueError:
            raise RelanceError(t("{value}: expected a date as YYYY-MM-DD", value=repr(words[1]))) from None
        return decisions.label(self.engine, self.config, self.clock(), inbound_id, Kind(words[0]), self.actor, until)

    def on_key(self, event: Any) -> None:
        box = self.query_one("#assign-to", Input)
        if event.key == "escape" and box.display:
            box.display = False
            self.query_one("#triage", DataTable).focus()
            event.stop()

    def action_reload(self) -> None:
        self.reload()


def run(engine: Engine, config: Config, actor: str) -> None:
    """Entry point of `relance tui` (registered under the `relance.commands` entry points)."""
    RelanceApp(engine, config, actor=actor).run()
