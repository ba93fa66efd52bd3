"""The screens pushed over the main one: a one-line prompt, the list of keys, one item in full."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingsMap, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Label, Static
from textual.worker import get_current_worker

from bot.i18n import day, moment, money, percent, stage, t, words
from bot.reasons import render as t_reason
from tui.footer import SteadyFooter


def translated(node: DOMNode) -> None:
    """The descriptions of `node`'s keys in the reader's language, read when it is built (the
    language is known only once the config is: class attributes are set at import)."""
    node._bindings = BindingsMap([replace(b, description=t(b.description))
                                  for bs in node._bindings.key_to_bindings.values() for b in bs])


class Prompt(ModalScreen[str | None]):
    """One question, one line of answer, prefilled: Enter gives the answer, Escape None."""

    DEFAULT_CSS = """
    Prompt { align: center middle; }
    Prompt > Vertical { width: 90%; max-width: 100; height: auto; border: round $accent; padding: 0 1;
                        background: $surface; }
    Prompt Label { width: 100%; }
    Prompt #choices { color: $text-muted; height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Back"),
                                             Binding("tab", "complete", "Complete", priority=True)]

    def __init__(self, question: str, value: str = "", on_change: Callable[[str], None] | None = None,
                 suggest: Callable[[str], list[tuple[str, str]]] | None = None) -> None:
        """`suggest`: what the last word typed may stand for, as (completion, description) pairs,
        read in a thread worker as the person types; Tab takes the first."""
        super().__init__()
        self.question, self.value, self.on_change, self.suggest = question, value, on_change, suggest
        self.choices: list[tuple[str, str]] = []
        translated(self)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield Input(value=self.value, id="answer")
            yield Static("", id="choices", markup=False)

    def on_input_changed(self, event: Input.Changed) -> None:
        """As the person types: the screen behind follows (the search), or the choices do (a picker)."""
        if self.on_change is not None and event.value != self.value:
            self.on_change(event.value)
        if self.suggest is not None:  # what follows the last comma: a number, or a client's name
            self._choose(event.value.rsplit(",", 1)[-1].strip())

    @work(thread=True, exclusive=True, group="choices")
    def _choose(self, word: str) -> None:
        assert self.suggest is not None
        choices = self.suggest(word) if word else []
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_choices, choices)

    def _show_choices(self, choices: list[tuple[str, str]]) -> None:
        self.choices = choices
        self.query_one("#choices", Static).update("\n".join(f"{c}  {d}" for c, d in choices))

    def action_complete(self) -> None:
        """Tab: what follows the last comma becomes the first choice, and a comma for the next one."""
        if not self.choices:
            return
        box = self.query_one(Input)
        head, _, _ = box.value.rpartition(",")
        box.value = (head + ", " if head else "") + self.choices[0][0] + ", "
        box.cursor_position = len(box.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Help(ModalScreen[None]):
    """Every key of the screen it was opened from, with what it does (the footer shows a few)."""

    DEFAULT_CSS = """
    Help { align: center middle; }
    Help > VerticalScroll { width: 90%; max-width: 80; height: 90%; border: round $accent; padding: 0 1;
                            background: $surface; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Back")]

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = keys
        translated(self)

    def compose(self) -> ComposeResult:
        lines = [f"[b]{t('Keys')}[/b]  ({t('Escape closes')})", ""]
        lines += [f"[b]{escape(k):>10}[/b]  {escape(d)}" for k, d in self.keys]
        with VerticalScroll():
            yield Static("\n".join(lines), id="keys")

    def action_close(self) -> None:
        self.dismiss(None)


class ItemScreen(Screen[None]):
    """One item in full: the reply as written (o: the original with its headers), its attachments,
    the bot's reading in words; beside it each invoice with its timeline. The action keys of the
    queue work here too, on this item."""

    DEFAULT_CSS = """
    ItemScreen Horizontal { height: 1fr; }
    ItemScreen VerticalScroll { width: 1fr; border: round $accent; padding: 0 1; }
    """
    # Back, undo and help first: the footer keeps them at 80 columns (the queue's keys follow).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back"),
        Binding("u", "app.undo", "Undo"),
        Binding("question_mark", "app.help", "Help"),
        Binding("o", "original", "Original"),
        Binding("v", "sent", "Reminder as sent"),
        # Enter opens an item from the tables: here it does nothing, and the footer does not offer it
        # (an App.check_action hiding it cost 80 ms of each open: bindings checked on every refresh).
        Binding("enter", "stay", "", show=False),
    ]

    def __init__(self, zone: Any, labels: dict[str, tuple[str, str]]) -> None:
        super().__init__()
        self.key, self.zone, self.labels = "", zone, labels
        self.message: dict[str, Any] | None = None
        self.invoices: list[dict[str, Any]] = []
        self.show_original = False
        self.showing_sent = self.attachment = 0
        self.line = ""
        translated(self)

    def compose(self) -> ComposeResult:
        with Horizontal():
            with VerticalScroll(id="message-pane"):
                yield Static("", id="message")
            with VerticalScroll(id="invoice-pane"):
                yield Static("", id="invoice")
        yield Static("", id="done", markup=False)
        yield SteadyFooter()

    def show(self, key: str, message: dict[str, Any] | None, invoices: list[dict[str, Any]], line: str = "") -> None:
        """Another item in the same screen (built once: a new screen per item costs a tenth of a second),
        or the same one read again after a decision (`line`: what was done). The actions taken here
        apply to what it shows: the invoices' versions it was read with (bot.versions)."""
        self.key, self.message, self.invoices, self.show_original = key, message, invoices, False
        self.showing_sent = self.attachment = 0
        self.line = line
        if self.is_mounted:
            self._paint()

    def on_mount(self) -> None:
        self._paint()

    def action_stay(self) -> None:
        """Enter on the item shown: it is open already."""

    def _paint(self) -> None:
        message = self.message
        self.query_one("#message-pane").display = message is not None
        if message is not None:
            self.query_one("#message", Static).update(self._message_text())
        self.query_one("#invoice", Static).update(self._invoices_text())
        self.query_one("#done", Static).update(self.line)
        for pane in self.query(VerticalScroll):
            if pane.scroll_offset:  # scrolling to where it is would lay the screen out once more
                pane.scroll_home(animate=False)

    def _message_text(self) -> str:
        m = self.message
        assert m is not None
        if self.show_original:
            return escape(m["original"])
        head = [f"[b]{escape(m['subject'] or '')}[/b]", f"{escape(m['from'])} · {moment(m['received_at'], self.zone)}"
                f" · {escape(m['folder'] or '')}", ""]
        body = [escape(m["text"] or ""), ""]
        conf = percent(m["confidence"]) if m["confidence"] is not None else "?"
        reading = [f"[b]{t('reading: {kind}, confidence {confidence}', kind=words(m['kind'] or '?'), confidence=conf)}"
                   "[/b]", t(_reason(m["reason"]))]
        said = evidence(m["cues"])
        proof = [t("evidence:"), *(f"  · {escape(c)}" for c in said)] if said else []
        files = ([t("attachments:"), *(f"  {a.index + 1}. {escape(a.filename)} ({a.content_type}, {a.size} B)"
                                       for a in m["attachments"])] if m["attachments"] else [])
        return "\n".join([*head, *body, *reading, *proof, *([""] if files else []), *files])

    def _invoices_text(self) -> str:
        out: list[str] = []
        for d in self.invoices:
            out += [f"[b]{escape(d['number'])}[/b] · {escape(d.get('client') or '')}",
                    f"{t('AMOUNT')}: {money(d['amount'], d.get('currency') or 'EUR')}   "
                    f"{t('PAID')}: {money(d['paid'], d.get('currency') or 'EUR')}   "
                    f"{t('DUE')}: {money(d.get('amount_due') or 0, d.get('currency') or 'EUR')}",
                    f"{t('DUE DATE')}: {day(_date(d.get('due_date')))}   "
                    f"{t('STAGE')}: {stage(d.get('stage'), self.labels)}   "
                    f"{t('STATE')}: {words(d.get('state') or '')}", "", t("timeline:")]
            out += [f"  {moment(_when(at), self.zone)}  {t(TIMELINE[what])}: [b]{escape(_kind(kind, self.labels))}[/b]"
                    + (f" · {escape(who)}" if who else "") + (f" · {escape(_reason(detail))}" if detail else "")
                    for at, what, kind, who, detail in d["timeline"]]
            out.append("")
        return "\n".join(out) or t("(none)")

    def action_sent(self) -> None:
        """The reminders of the invoice(s) as sent, one after the other on each press, then the reply again."""
        sent = [x for d in self.invoices for x in d.get("sent", [])]
        if not sent:
            self.notify(t("no reminder sent yet"))
            return
        self.showing_sent = (self.showing_sent + 1) % (len(sent) + 1)
        pane = self.query_one("#message-pane")
        pane.display = True
        if self.showing_sent == 0:
            pane.display = self.message is not None
            if self.message is not None:
                self.query_one("#message", Static).update(self._message_text())
            return
        head = f"[b]{t('Reminder as sent')} {self.showing_sent}/{len(sent)}[/b]\n\n"
        self.query_one("#message", Static).update(head + escape(sent[self.showing_sent - 1]["text"]))

    def action_original(self) -> None:
        if self.message is not None:
            self.show_original = not self.show_original
            self.query_one("#message", Static).update(self._message_text())

    def action_close(self) -> None:
        self.app.pop_screen()


TIMELINE = {"reminder": "Reminder", "reply": "Reply", "event": "Event"}


def _kind(kind: str, labels: dict[str, tuple[str, str]]) -> str:
    """An event's or a message's kind in words: `message_dispute` reads as the dispute it records;
    a reminder's kind is its stage."""
    if kind.startswith("message_"):
        return words(kind.removeprefix("message_"))
    return stage(kind, labels) if kind in labels else words(kind)


def _reason(text: str) -> str:
    return t_reason(text or "")


def evidence(cues: list[str]) -> list[str]:
    """The cues a person can read as evidence: the sentences the reading rests on (quoted «…») and
    how the invoice was found; the classifier's features (word stems, character n-grams, scores)
    say nothing to a reader and are left out."""
    out = []
    for cue in cues:
        if cue.startswith("«"):
            out.append(cue.strip("«» "))
        elif cue.startswith(("match: ", "number: ")):
            out.append(_reason(cue.split(": ", 1)[1].split(": ", 1)[-1]))
    return out


def _date(value: Any) -> Any:
    return date.fromisoformat(value) if isinstance(value, str) else value


def _when(value: Any) -> Any:
    if isinstance(value, str) and value:
        v = datetime.fromisoformat(value)
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    return value
