"""The reply editor: a template in the client's language (bot.replies), prefilled and editable here
(a TextArea) or in $EDITOR; what the person leaves is what is queued."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Select, Static, TextArea
from textual.worker import get_current_worker

from bot import replies
from bot.errors import RelanceError
from bot.i18n import t, words
from tui.footer import SteadyFooter
from tui.screens import translated


@dataclass(frozen=True)
class Answer:
    """What the person chose: the template and the text; `reply` False when a decline goes without one."""

    template: str
    text: str
    reply: bool = True


class ReplyEditor(ModalScreen[Answer | None]):
    """Ctrl+S queues the text, Ctrl+E opens it in $EDITOR, Escape gives up. `decline`: the reply that
    goes with a decision (a plan accepted or declined), where Ctrl+W makes it without a reply."""

    DEFAULT_CSS = """
    ReplyEditor { align: center middle; }
    ReplyEditor > Vertical { width: 95%; max-width: 110; height: 95%; border: round $accent; padding: 0 1;
                             background: $surface; }
    ReplyEditor #head { height: auto; }
    ReplyEditor Select { width: 100%; }
    ReplyEditor TextArea { height: 1fr; }
    ReplyEditor #hint { color: $text-muted; height: auto; width: 100%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "queue", "Queue the reply", priority=True),
        Binding("ctrl+e", "editor", "Edit in $EDITOR", priority=True),
        Binding("ctrl+w", "without", "Without a reply", priority=True, show=False),
        Binding("escape", "cancel", "Back", priority=True),
    ]

    def __init__(self, draft: Callable[[str], replies.Draft], template: str, decline: bool = False) -> None:
        """`draft(template)` reads what a template writes for this message (called in a thread worker)."""
        super().__init__()
        self.draft, self.template, self.decline = draft, template, decline
        translated(self)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("", id="head", markup=False)
            yield Select([(words(n), n) for n in replies.TEMPLATES], value=self.template, allow_blank=False,
                         id="template")
            yield TextArea("", id="body", soft_wrap=True)
            yield Label(t("Ctrl+S decides and queues the reply · Ctrl+W decides without a reply · "
                          "Ctrl+E opens $EDITOR · Escape cancels") if self.decline
                        else t("Ctrl+S queues the reply · Ctrl+E opens $EDITOR · Escape cancels"), id="hint")
        yield SteadyFooter()

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()
        self._load(self.template)

    @on(Select.Changed, "#template")
    def _template(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.template:
            self.template = event.value
            self._load(event.value)

    @work(thread=True, exclusive=True, group="draft")
    def _load(self, template: str) -> None:
        try:
            d = self.draft(template)
        except RelanceError as e:
            self.app.call_from_thread(self._failed, str(e))
            return
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, d)

    def _show(self, d: replies.Draft) -> None:
        self.query_one("#head", Static).update(t("reply to {to} · {subject}", to=d.to, subject=d.subject))
        self.query_one(TextArea).load_text(d.text)

    def _failed(self, why: str) -> None:
        self.notify(why, severity="error", timeout=8)
        self.dismiss(None)

    def action_queue(self) -> None:
        self.dismiss(Answer(self.template, self.query_one(TextArea).text))

    def action_without(self) -> None:
        if self.decline:
            self.dismiss(Answer(self.template, "", reply=False))

    def action_editor(self) -> None:
        """The text in the person's editor, the screen handed over to it meanwhile."""
        area = self.query_one(TextArea)
        try:
            try:
                with self.app.suspend():
                    text = replies.edit(area.text)
            except SuspendNotSupported:  # no terminal to hand over (a test, a web driver): the editor runs alone
                text = replies.edit(area.text)
        except RelanceError as e:
            self.notify(str(e), severity="error", timeout=8)
            return
        area.load_text(text)

    def action_cancel(self) -> None:
        self.dismiss(None)
