"""The footer of every screen, rebuilt only when the keys it shows change.

Textual's Footer removes and mounts all its keys (a dozen widgets, each styled again) whenever its
screen says its bindings changed: on every screen pushed or popped and every focus move, though
the keys shown are most often the same. On the triage screen that was 10 to 20 ms of each open
and close of an item."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class SteadyFooter(Footer):
    """A Footer that compares the keys it would show with those it shows before rebuilding."""

    shown: tuple[tuple[str, str, str, bool, str], ...] | None = None

    def bindings_changed(self, screen: Screen[object]) -> None:
        shown = tuple((b.key, b.action, b.description, enabled, tooltip)
                      for _, b, enabled, tooltip in screen.active_bindings.values() if b.show)
        if shown == self.shown and self.children:
            return
        self.shown = shown
        super().bindings_changed(screen)
