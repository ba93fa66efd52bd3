"""The decisions of the triage screen: one key each, on the item under the cursor, run in a thread
worker through bot's API (bot.desk records each with who and why, undoable), the cursor kept on
the item acted on, the line above the footer saying what was done or why not."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from textual import work
from textual.app import App
from textual.widgets import DataTable, Static, TabbedContent

from bot import actions, decisions, desk, plans, replies, reports, triage
from bot.config import Config
from bot.errors import DateNeededError, RelanceError, StaleError
from bot.i18n import amount as parse_amount
from bot.i18n import amount_then, amount_typed, day, money, t, words
from bot.store import Engine
from bot.understand import find_dates
from rules.classify import Kind
from rules.plan import Instalment, instalments
from rules.reasons import reason
from tui.reply import Answer, ReplyEditor
from tui.screens import ItemScreen, Prompt

KINDS = tuple(k.value for k in Kind)


def kind_typed(text: str, kinds: tuple[str, ...] = KINDS) -> str:
    """A kind as a person types it: its name in their language (`litige`, `promise to pay`) or its
    code; one of `kinds` (a message's, unless said)."""
    wanted = " ".join(text.lower().replace("_", " ").split())
    names = {k: (k.replace("_", " "), words(k).lower()) for k in kinds}
    for k, said in names.items():
        if wanted in said:
            return k
    begun = [k for k, said in names.items() if wanted and any(n.startswith(wanted) for n in said)]
    if len(begun) == 1:  # the start of one name only: `échéancier` for `échéancier proposé`
        return begun[0]
    raise RelanceError(t("unknown kind {kind} (one of {kinds})", kind=repr(text.strip()),
                         kinds=", ".join(words(k) for k in kinds)))


class Decisions(App[None]):
    """The decision keys; the screen itself (tables, reading the store) is tui.app.RelanceApp."""

    engine: Engine
    config: Config
    clock: Callable[[], datetime]
    actor: str
    items: dict[str, triage.Item]
    invoices: dict[str, dict[str, Any]]
    filters: triage.Filters
    selected: set[str]
    seen_marker: tuple[int, int, int] | None
    acting: int  # decisions under way
    offset: dict[str, int]  # where each table's page starts in its list
    total: dict[str, int]  # how long each table's list is
    page_size: int  # rows a page of a table holds
    spares: list[triage.Item]  # the queue's items after the page, in order
    decided: list[int]  # the decisions made in this session, oldest first: what `u` undoes

    def call_from_thread(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A worker's result shown on the UI thread; dropped when the app is ending (its widgets are
        being taken down: a read that finishes after `q` has nothing left to show on)."""
        def shown(*a: Any, **k: Any) -> Any:
            if self._exit or self._closing or not self.is_running:
                return None
            return callback(*a, **k)
        return super().call_from_thread(shown, *args, **kwargs)

    # What the screen provides (tui.app.RelanceApp).
    def _queue_cells(self, item: triage.Item, keys: list[str]) -> list[str]:
        raise NotImplementedError

    def _invoice_cells(self, r: dict[str, Any], keys: list[str]) -> list[str]:
        raise NotImplementedError

    def _show_counts(self) -> None:
        raise NotImplementedError

    def _show_preview(self) -> None:
        raise NotImplementedError

    def load_queue(self) -> Any:  # a worker
        raise NotImplementedError

    def _counted(self, total: int, per_kind: dict[str, int]) -> None:
        raise NotImplementedError

    def refresh_all(self) -> None:
        raise NotImplementedError

    def recount_soon(self) -> None:
        raise NotImplementedError

    def reopen(self, line: str) -> None:
        raise NotImplementedError

    def _fill_queue(self, rows: list[triage.Item], keep: str | None) -> None:
        raise NotImplementedError

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
        """The invoice an action applies to (number, its version read, the message if any): on the
        item screen, the invoice it shows, with the version it was read with."""
        screen = self.screen
        if isinstance(screen, ItemScreen):
            if len(screen.invoices) != 1:
                self.notify(t("this item concerns no single invoice: open it (Enter) or assign it (a)"),
                            severity="warning")
                return None
            doc = screen.invoices[0]
            return str(doc["number"]), doc.get("version"), int(screen.message["id"]) if screen.message else None
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

    def _message(self) -> tuple[triage.Item, int] | None:
        """The message under the cursor, with its id; None (and a word why) when it is not one."""
        item = self.items.get(self._current_key() or "") if self._pane() != "invoices-pane" else None
        if item is None or item.inbound_id is None:
            self.notify(t("not a message: nothing to read or dismiss"), severity="warning")
            return None
        return item, item.inbound_id

    # Acting -------------------------------------------------------------------------------------

    def _at(self) -> tuple[str | None, str | None]:
        """The queue's row and the invoices' row under the cursors: what a decision reads again."""
        return self._current_key(), self._current_number()

    def decide(self, action: str, why: str, scope: desk.Scope, run: Callable[[], str], many: bool = False,
               otherwise: Callable[[], None] | None = None, at: tuple[str | None, str | None] | None = None
               ) -> None:
        """Run a decision in a worker; show what was done (or why not) in the line above the footer.
        `many`: it changes several rows of the page (a bulk dismissal): the page is read again.
        `otherwise`: what to offer when the decision is refused for want of a date (a prompt).
        `at`: the rows the key was pressed on (`_at`), when the decision comes later than the key
        (after a read in a worker): the cursor may have moved since."""
        key, number = at or self._at()
        item = self.items.get(key or "")
        concerned = tuple(dict.fromkeys((*scope.invoices, *((item.numbers or item.suggested) if item else ()))))
        self.acting += 1  # the poll waits meanwhile: the decision's own events are no one else's change
        self._decide(action, why, scope, run, key, number, concerned, many, otherwise)

    def _acted(self) -> None:
        self.acting = max(self.acting - 1, 0)

    @work(thread=True, group="act")
    def _decide(self, action: str, why: str, scope: desk.Scope, run: Callable[[], str], key: str | None,
                number: str | None, concerned: tuple[str, ...], many: bool,
                otherwise: Callable[[], None] | None) -> None:
        shown = False
        try:
            shown = self._decided(action, why, scope, run, key, number, concerned, many, otherwise)
        finally:
            if not shown:  # refused, or failed: else `_shown` says the decision is over, in the same call
                self.call_from_thread(self._acted)

    def _decided(self, action: str, why: str, scope: desk.Scope, run: Callable[[], str], key: str | None,
                 number: str | None, concerned: tuple[str, ...], many: bool,
                 otherwise: Callable[[], None] | None) -> bool:
        try:
            done = desk.decide(self.engine, self.clock(), self.actor, action, why, scope, run)
            self.decided.append(done.decision)
        except StaleError as e:
            self.call_from_thread(self._refused, str(e), True)
            return False
        except DateNeededError as e:
            self.call_from_thread(self._refused, str(e), False)
            if otherwise is not None:
                self.call_from_thread(otherwise)
            return False
        except RelanceError as e:
            self.call_from_thread(self._refused, str(e), False)
            return False
        except Exception as e:
            self.call_from_thread(self._refused, f"{type(e).__name__}: {e}", True)
            return False
        self._after(t("u: undo · {what} · by {actor}", actor=self.actor, what=done.text), key, number,
                    concerned, done.mark)
        if many:
            self.call_from_thread(self.refresh_all)
        return True

    def _after(self, line: str, key: str | None, number: str | None, concerned: tuple[str, ...],
               mark: int) -> None:
        """Read again only what the decision changed: the item and the invoice acted on; show them.
        An invoice the decision left in a dead end (a dispute confirmed) comes into the queue at
        once. The counts follow once the person pauses (`recount_soon`). `mark`: the latest event
        before the decision ran (`_changed` compares it with what the screen shows)."""
        with self.engine.connect() as conn:
            item = triage.one(conn, key) if key else None
            arrived = triage.dead_ends(conn, concerned) if concerned else []
            row = triage.invoice_row(conn, self.config, self.clock(), number) if number else None
            marker = triage.marker(conn)
            others = triage.others_since(conn, mark, self.actor)
        left = 1 if key and key[0] == "m" and item is None else 0
        self.call_from_thread(self._changed, line, key, item, number, row, (mark, marker, left, others), arrived)
        self.call_from_thread(self._shown)

    def _shown(self) -> None:
        """The decision is on screen: the poll may read again; the counts once the person pauses."""
        self._acted()
        self.recount_soon()

    def _changed(self, line: str, key: str | None, item: triage.Item | None, number: str | None,
                 row: dict[str, Any] | None, moved: tuple[int, tuple[int, int, int], int, bool],
                 arrived: list[triage.Item]) -> None:
        self.query_one("#done", Static).update(line, layout=False)  # one line, always
        screen = self.get_screen("item")
        if isinstance(screen, ItemScreen) and screen.is_mounted:
            screen.query_one("#done", Static).update(line, layout=False)
        # The change marker moves past the decision only when nothing else changed since what the
        # screen shows was read: no event at all before the decision began (`mark`), none by
        # another actor while it ran, no new message, the messages in triage fewer by the one it
        # decided. Else it stays, and the poll reads the page again and shows the other change.
        mark, marker, left, others = moved
        seen = self.seen_marker
        if (seen is not None and mark == seen[0] and not others and marker[1] == seen[1]
                and marker[2] == seen[2] - left):
            self.seen_marker = marker
        if key is not None and key in self.items:
            table = self.query_one("#queue", DataTable)
            new = [a for a in arrived if a.key not in self.items]
            if item is None and new:
                # The message leaves an invoice in a dead end (a dispute confirmed): the invoice takes
                # its row, where it sorts too (the same amount at stake, the same due date), with no
                # query; the page read next (a pause, the poll) puts any other order right.
                rows = list(self.items.values())
                at = list(self.items).index(key)
                rows[at:at + 1] = new
                self.selected.discard(key)
                self.total["queue"] += len(new) - 1
                self.spares = rows[self.page_size:] + self.spares
                self._fill_queue(rows[:self.page_size], keep=new[0].key)
            elif item is None:
                table.remove_row(key)
                del self.items[key]
                self.selected.discard(key)
                self.total["queue"] -= 1
                # A message that leaves a full page is replaced by the first one after the page: the
                # page keeps its length, and the screen its layout (the table's height, its scroll bar).
                while self.spares and len(self.items) < self.page_size:
                    more = self.spares.pop(0)
                    if more.key not in self.items:
                        self.items[more.key] = more
                        keys = [str(c.key.value) for c in table.ordered_columns]
                        table.add_row(*self._queue_cells(more, keys), key=more.key)
            else:
                self.items[key] = item
                keys = [str(c.key.value) for c in table.ordered_columns]
                for k, v in zip(keys, self._queue_cells(item, keys), strict=True):
                    table.update_cell(key, k, v)
        if number is not None and number in self.invoices:
            table = self.query_one("#invoices", DataTable)
            if row is None:
                table.remove_row(number)
                del self.invoices[number]
            else:
                self.invoices[number] = row
                keys = [str(c.key.value) for c in table.ordered_columns]
                for k, v in zip(keys, self._invoice_cells(row, keys), strict=True):
                    table.update_cell(number, k, v)
        self._show_preview()
        self.reopen(line)

    def _refused(self, why: str, stale: bool) -> None:
        self.notify(why, severity="error", timeout=8)
        self.query_one("#done", Static).update(why)
        if stale:
            self.refresh_all()
            self.reopen(why)

    def ask(self, question: str, value: str, then: Callable[[str], None],
            on_change: Callable[[str], None] | None = None,
            suggest: Callable[[str], list[tuple[str, str]]] | None = None) -> None:
        def answered(answer: str | None) -> None:
            if answer is not None:
                try:
                    then(answer.strip())
                except RelanceError as e:
                    self._refused(str(e), False)

        self.push_screen(Prompt(question, value, on_change, suggest), answered)

    def _now(self) -> datetime:
        return self.clock()

    def action_confirm(self) -> None:
        """The bot's reading is right: kept as an example, applied as that kind does."""
        found = self._message()
        if found is not None and found[0].kind in KINDS:
            item, inbound_id = found
            at = self._at()
            self.decide("confirm", reason("decision.confirm"), desk.Scope(inbounds=(inbound_id,)),
                        lambda: decisions.label(self.engine, self.config, self._now(), inbound_id, Kind(item.kind),
                                                self.actor, in_triage=True), at=at,
                        # a promise with no date read: the person gives it, for the message c was pressed on
                        otherwise=(lambda: self._label(item, inbound_id, at))
                        if item.kind == Kind.PROMISE_TO_PAY.value else None)

    def action_label(self) -> None:
        found = self._message()
        if found is not None:
            self._label(*found, self._at())

    def _label(self, item: triage.Item, inbound_id: int, at: tuple[str | None, str | None]) -> None:
        """The kind of message `inbound_id` (the row `at`), asked and recorded."""
        def then(answer: str) -> None:
            typed = re.fullmatch(r"(.*?)\s*(\d{4}-\d{2}-\d{2})?\s*", answer, re.DOTALL)
            assert typed is not None  # every text matches: the date is optional
            kind, when = kind_typed(typed.group(1)), typed.group(2)
            until = date.fromisoformat(when) if when else None
            self.decide("label", reason("decision.label", kind=kind), desk.Scope(inbounds=(inbound_id,)),
                        lambda: decisions.label(self.engine, self.config, self._now(), inbound_id, Kind(kind),
                                                self.actor, until, in_triage=True), at=at)

        self.ask(f"#{inbound_id} · " + t("kind ({kinds}), a promise's date after it; Enter; Escape cancels",
                                         kinds=", ".join(words(k) for k in KINDS)),
                 words(item.kind) + (" " if item.kind == Kind.PROMISE_TO_PAY.value else ""), then)

    def action_assign(self) -> None:
        found = self._message()
        if found is None:
            return
        item, inbound_id = found

        def then(answer: str) -> None:
            numbers = answer.replace(",", " ").split()
            if numbers:
                self.decide("assign", reason("decision.assign", numbers=", ".join(numbers)),
                            desk.Scope(invoices=tuple(numbers), inbounds=(inbound_id,)),
                            lambda: decisions.assign(self.engine, self.config, self._now(), inbound_id, numbers,
                                                     self.actor, in_triage=True))

        self.ask(t("invoice number(s), or part of one or of a client's name and Tab; Enter; Escape cancels"),
                 " ".join(item.suggested or item.numbers), then,
                 suggest=self._invoices_like)

    def _invoices_like(self, text: str) -> list[tuple[str, str]]:
        """The picker of the assign prompt: open invoices by part of their number or client (a worker calls it)."""
        with self.engine.connect() as conn:
            found = triage.find_invoices(conn, text)
        return [(n, f"{client} · {money(due, currency)}") for n, client, due, currency in found]

    def action_paid(self) -> None:
        target = self._target()
        if target is None:
            return
        number, seen, _ = target
        at, currency = self._at(), ""

        def then(answer: str) -> None:
            amount = parse_amount(answer)
            self.decide("paid", reason("decision.paid", amount=str(amount), currency=currency),
                        desk.Scope(invoices=(number,)),
                        lambda: actions.record_payment(self.engine, number, self._now(), amount, self.actor, seen),
                        at=at)

        def asked(row: dict[str, Any] | None) -> None:
            nonlocal currency
            currency = row["currency"] if row else ""
            due = Decimal(row["amount_due"]) if row else None
            self.ask(t("amount received for {number} (due {due}); Enter; Escape cancels", number=number,
                       due=money(due, row["currency"]) if row and due is not None else "?"),
                     amount_typed(due) if due else "", then)

        self._status_row(number, asked)

    def _status_row(self, number: str, then: Callable[[dict[str, Any] | None], None]) -> None:
        """`relance status`'s row of an open invoice (None when it is not open) to `then`: from the
        invoices tab when it holds it, else read in a worker."""
        if number in self.invoices:
            then(self.invoices[number])
            return

        def read() -> dict[str, Any] | None:
            with self.engine.connect() as conn:
                rows = reports.status_rows(conn, self.config, self._now(), [number])
            return rows[0] if rows else None

        self.read_then(read, then)

    def read_then(self, read: Callable[[], Any], then: Callable[[Any], None]) -> None:
        """What a prompt needs from the store, read in a worker (the UI never waits on the
        database); `then` gets it on the UI thread. A refusal is shown as a decision's is."""
        self._read_then(read, then)

    @work(thread=True, group="read")
    def _read_then(self, read: Callable[[], Any], then: Callable[[Any], None]) -> None:
        try:
            found = read()
        except RelanceError as e:
            self.call_from_thread(self._refused, str(e), False)
            return
        except Exception as e:  # the store away (locked, a server gone): said, and the app goes on
            self.call_from_thread(self._refused, f"{type(e).__name__}: {e}", False)
            return
        self.call_from_thread(then, found)

    def action_accept_plan(self) -> None:
        target = self._target()
        if target is None:
            return
        number, seen, inbound_id = target
        at = self._at()

        def accept(steps: tuple[Instalment, ...], reply: Answer | None) -> None:
            def run() -> str:
                composed = (replies.prepare(self.engine, self.config, inbound_id, reply.template, reply.text,
                                            self._now(), instalments=steps)
                            if reply is not None and inbound_id is not None else None)
                return desk.accept_plan(self.engine, self.config, number, steps, self._now(), self.actor,
                                        "", inbound_id, seen, reply=composed)

            self.decide("accept_plan", reason("decision.accept_plan", n=len(steps)),
                        desk.Scope(invoices=(number,), inbounds=(inbound_id,) if inbound_id else ()), run, at=at)

        def then(answer: str) -> None:
            steps = plans.parse(answer)
            if inbound_id is None:  # from the invoices: no message to answer
                accept(steps, None)
                return

            def written(reply: Answer | None) -> None:
                if reply is not None:
                    accept(steps, reply if reply.reply else None)

            self.push_screen(ReplyEditor(self._drafts(inbound_id, steps), "accept_plan", decline=True), written)

        self.read_then(lambda: self._proposed(inbound_id), lambda proposed: self.ask(
            t("instalments for {number}: amount date, amount date…; Enter; Escape cancels", number=number),
            proposed, then))

    def _proposed(self, inbound_id: int | None) -> str:
        """The instalments the client proposed, as read in the message (amounts and dates in order;
        a worker calls it)."""
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

        def reject(why: str, reply: Answer | None) -> None:
            def run() -> str:
                composed = (replies.prepare(self.engine, self.config, inbound_id, reply.template, reply.text,
                                            self._now()) if reply is not None and inbound_id is not None else None)
                return desk.reject_plan(self.engine, number, self._now(), self.actor, why, inbound_id, seen,
                                        reply=composed)

            self.decide("reject_plan", why or reason("plan.declined"),
                        desk.Scope(invoices=(number,), inbounds=(inbound_id,) if inbound_id else ()), run)

        def then(answer: str) -> None:
            if inbound_id is None:  # from the invoices: no message to answer
                reject(answer, None)
                return

            def written(reply: Answer | None) -> None:
                if reply is not None:
                    reject(answer, reply if reply.reply else None)

            self.push_screen(ReplyEditor(self._drafts(inbound_id), "decline_plan", decline=True), written)

        self.ask(t("why the plan is declined (kept in the history); Enter; Escape cancels"), "", then)

    def _drafts(self, inbound_id: int, steps: tuple[Instalment, ...] | None = None
                ) -> Callable[[str], replies.Draft]:
        """What each template writes to this message (the editor calls it in a worker); `steps`: the
        plan being accepted, cited rather than the one proposed."""
        def draft(template: str) -> replies.Draft:
            with self.engine.connect() as conn:
                return replies.draft(conn, self.config, inbound_id, template, self._now(), instalments=steps)
        return draft

    def action_reply(self) -> None:
        """R: answer the client's message from a template in its language, edited before it is queued."""
        found = self._message()
        if found is None:
            return
        item, inbound_id = found

        def written(reply: Answer | None) -> None:
            if reply is not None:
                why = reason("decision.reply", template=reply.template)
                self.decide("reply", why, desk.Scope(inbounds=(inbound_id,)),
                            lambda: desk.reply(self.engine, self.config, inbound_id, reply.template, reply.text,
                                               self._now(), self.actor, why))

        self.push_screen(ReplyEditor(self._drafts(inbound_id), replies.FOR_KIND.get(item.kind, "ack_claim")),
                         written)

    def action_settle(self) -> None:
        target = self._target()
        if target is None:
            return
        number, seen, inbound_id = target

        def then(answer: str) -> None:
            how, _, why = answer.partition(" ")
            credit = None
            if how not in desk.SETTLEMENTS:
                if not how[:1].isdigit():
                    raise RelanceError(t("{value}: expected one of {choices}", value=repr(how),
                                         choices="resume, cancel, 250.00"))
                credit, why = amount_then(answer)  # "1 500,00 commercial gesture": the amount, then why
                how = "credit"
            scope = desk.Scope(invoices=(number,), inbounds=(inbound_id,) if inbound_id else ())

            def run() -> str:
                text = desk.settle_dispute(self.engine, number, how, self._now(), self.actor, why, credit, seen)
                if inbound_id is not None and self.items.get(f"m{inbound_id}"):
                    actions.close_message(self.engine, inbound_id, self._now(), self.actor,
                                          reason("dispute.settled"))
                return text

            self.decide("settle", why or reason("decision.settle", how=how), scope, run)

        self.ask(t("dispute on {number}: resume, cancel, or a credit note amount; then why; Enter", number=number),
                 "resume ", then)

    def action_contact(self) -> None:
        target = self._target()
        if target is None:
            return
        number, seen, inbound_id = target
        at = self._at()

        def then(answer: str) -> None:
            why = reason("decision.contact", address=answer)

            def run() -> str:
                text = actions.change_contact(self.engine, number, answer, self._now(), self.actor, seen)
                if inbound_id is not None:
                    actions.close_message(self.engine, inbound_id, self._now(), self.actor, why)
                return text

            # The client's other invoices on the old address move too (and leave the queue): many.
            self.decide("contact", why, desk.Scope(invoices=(number,), inbounds=(inbound_id,) if inbound_id else ()),
                        run, many=True, at=at)

        self._status_row(number, lambda row: self.ask(
            t("new address for {number} (was {email}); Enter; Escape cancels", number=number,
              email=row["email"] if row else "?"), "", then))

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
            if not why.strip():
                raise RelanceError(t("a pause says why: the date, then the reason"))
            if until.date() > today + timedelta(days=366):
                raise RelanceError(t("{day}: more than a year ahead; a longer hold is a dispute or a plan",
                                     day=day(until.date())))
            self.decide("pause", why, desk.Scope(invoices=(number,)),
                        lambda: actions.pause(self.engine, number, self._now(), until, why, self.actor, seen))

        self.ask(t("pause {number} until YYYY-MM-DD, then why; Enter; Escape cancels", number=number),
                 f"{default.isoformat()} ", then)

    def action_resume(self) -> None:
        target = self._target()
        if target is not None:
            number, seen, _ = target
            item = self.items.get(self._current_key() or "") if self._pane() == "queue-pane" else None
            # Resumed on a failing address: the client's other invoices on it leave the queue too.
            self.decide("resume", reason("decision.resume"), desk.Scope(invoices=(number,)),
                        lambda: actions.resume(self.engine, number, self._now(), self.actor, seen),
                        many=item is not None and item.kind == "bounce")

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
            found = self._message()
            if found is None:
                return
            keys = [found[0].key]
        ids = tuple(self.items[k].inbound_id or 0 for k in keys if k in self.items and self.items[k].inbound_id)
        self.decide("dismiss", reason("decision.dismiss"), desk.Scope(inbounds=ids),
                    lambda: desk.dismiss(self.engine, ids, self._now(), self.actor), many=len(ids) > 1)
        self.selected.clear()

    def action_ignore(self) -> None:
        found = self._message()
        if found is None:
            return
        address = found[0].sender.lower()
        at = self._at()

        def read() -> tuple[int, ...]:
            with self.engine.connect() as conn:
                return tuple(desk.waiting_from(conn, address))

        self.read_then(read, lambda waiting: self.decide(
            "ignore", reason("decision.ignore", address=address), desk.Scope(inbounds=waiting, senders=(address,)),
            lambda: desk.ignore_sender(self.engine, address, self._now(), self.actor), many=True, at=at))

    def action_undo(self) -> None:
        self._undo()

    @work(thread=True, group="act")
    def _undo(self) -> None:
        """The last decision of this session (one from an earlier day is undone from the command
        line, `relance undo ID`, knowingly)."""
        if not self.decided:
            self.call_from_thread(self._refused, t("nothing to undo in this session"), False)
            return
        try:
            text = desk.undo(self.engine, self.clock(), self.actor, self.decided[-1])
            self.decided.pop()
        except RelanceError as e:
            self.call_from_thread(self._refused, str(e), isinstance(e, StaleError))
            return
        except Exception as e:
            self.call_from_thread(self._refused, f"{type(e).__name__}: {e}", True)
            return
        self.call_from_thread(self.query_one("#done", Static).update, text)
        self.call_from_thread(self.refresh_all)

