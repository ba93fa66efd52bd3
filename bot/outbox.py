"""The outbox: every reminder is recorded before it is sent, and sent at most once.

Life of a message (`outbound.status`):

    pending --claim--> sending --250--> sent
                          |--4xx / connection lost before DATA--> pending (retried later)
                          |--5xx for the recipient--> failed (invoice -> bounced)
                          |--cannot be built or addressed, 5xx for the message--> failed
                          |      (invoice state kept, `data_error` set: waits for the data to be fixed)
                          |--connection lost during DATA--> uncertain
    pending --invoice paid/paused/disputed meanwhile--> cancelled

A person's reply to a client (bot/replies.py, stage `reply`) takes the same path from `pending`:
its bytes were composed when it was queued, so `claim` only marks it `sending`; it is sent
whatever the state of its invoices (the person wrote it knowing it), and a 5xx fails the reply
alone (the address it went to is the client's sender, not the invoice's contact: nothing bounces).

`queue` writes, in one transaction, the outbound row (with its Message-ID) and one `reminder`
row per (invoice, stage), whose unique key makes a second reminder of the same stage impossible,
whatever the number of instances or crashes. `claim` re-reads the invoices, renders, stores the
exact bytes and commits `sending` *before* the first SMTP command of that message.

What a restart does with a message left `sending` (the process died between claim and the
server's answer): nothing can tell whether the server accepted it, and a duplicate formal notice
is worse than a late one, so it becomes `uncertain`: it counts as sent for the ladder (the next
stage will follow in due time), and an event asks a person to check. That happens when its
claimant is known dead (same host, process gone) or its claim is older than `LEASE`, which
covers an instance that died on another host. A `pending` message left by a crash is simply
sent by the next tick, after the same re-read.
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot.compose import Attachment, Envelope, compose, new_message_id, new_reply_token
from bot.config import Config
from bot.errors import MessageDataError
from bot.instalments import STAGE as INSTALMENT
from bot.instalments import Reminder as InstalmentReminder
from bot.instalments import read as read_instalment
from bot.ledger import inside
from bot.models import Client, Contact, Event, Invoice, Outbound, Reminder, table
from bot.reasons import plain_text
from bot.render import InvoiceContext, ReminderRef, Renderer, penalties_for
from bot.replies import STAGE as REPLY
from bot.store import record_events, session
from rules.effects import CLAIM_HOLD, LEGACY_CLAIM_HOLD
from rules.penalties import ContractRateTooLowError, MissingRateError
from rules.reasons import join, reason

LEASE = timedelta(minutes=15)
inv_t, cli_t, con_t = table(Invoice), table(Client), table(Contact)
out_t, rem_t, ev_t = table(Outbound), table(Reminder), table(Event)


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Group:
    """One message to queue: a stage for one invoice, or for several of one client (consolidated)."""

    client_id: int
    contact_id: int
    email: str
    stage_index: int
    invoice_ids: tuple[int, ...]
    numbers: tuple[str, ...]
    skipped: tuple[tuple[int, tuple[int, ...]], ...] = ()  # (invoice id, stage indexes passed over)


@dataclass(frozen=True)
class Prepared:
    outbound_id: int
    message_id: str
    envelope: Envelope
    data: bytes
    numbers: tuple[str, ...]
    stage: str
    subject: str
    invoice_ids: tuple[int, ...]
    queued_at: datetime
    snapshot: tuple[tuple[Any, ...], ...]  # (id, state, paid, hold_until, held_by, failing) of each invoice rendered


class Outbox:
    def __init__(self, engine: Engine, config: Config, renderer: Renderer, now: datetime,
                 wall_now: datetime, instance: str | None = None) -> None:
        self.engine = engine
        self.config = config
        self.renderer = renderer
        self.now = now
        self.wall_now = wall_now
        self.instance = instance or instance_name()
        self.ladder = config.ladder
        self.failures: list[str] = []  # messages that could not be rendered, with why
        self.cancelled = 0  # messages this instance cancelled (no longer due); not those another one took

    # -- recording -------------------------------------------------------------------------------

    def queue(self, groups: Sequence[Group]) -> list[int]:
        """Record `groups` as pending messages, in one transaction; returns their ids. When another
        instance recorded one of these stages first (its unique reminder key refuses ours), the
        groups are recorded one by one and the refused ones left out."""
        if not groups:
            return []
        try:
            with session(self.engine) as s:
                return self._queue(s, groups)
        except (_AlreadyQueuedError, sa.exc.IntegrityError):
            ids = []
            for g in groups:
                try:
                    with session(self.engine) as s:
                        ids += self._queue(s, [g])
                except (_AlreadyQueuedError, sa.exc.IntegrityError):
                    continue
            return ids

    def _queue(self, s: Connection, groups: Sequence[Group]) -> list[int]:
        with_token = "{token}" in self.config.company.reply_to
        messages = [{
            "message_id": new_message_id(self.config.company.domain, g.numbers[0], g.stage_index),
            "client_id": g.client_id, "stage_index": g.stage_index, "stage": self.ladder[g.stage_index].name,
            "to_addr": g.email, "status": "pending", "created_at": self.now, "attempts": 0,
            "reply_token": new_reply_token() if with_token else None,
        } for g in groups]
        ids = list(s.execute(sa.insert(out_t).returning(out_t.c.id, sort_by_parameter_order=True),
                             messages).scalars())
        reminders, events = [], []
        for g, ob_id, m in zip(groups, ids, messages, strict=True):
            stage = self.ladder[g.stage_index]
            for i in g.invoice_ids:
                reminders.append({"invoice_id": i, "stage_index": g.stage_index, "stage": stage.name,
                                  "outbound_id": ob_id, "skipped": False, "at": self.now})
                events.append({"invoice_id": i, "kind": "reminder_queued", "at": self.now, "outbound_id": ob_id,
                               "reason": stage.name, "data": {"message_id": m["message_id"]}})
            for invoice_id, indexes in g.skipped:
                for k in indexes:
                    reminders.append({"invoice_id": invoice_id, "stage_index": k, "stage": self.ladder[k].name,
                                      "outbound_id": ob_id, "skipped": True, "at": self.now})
                    events.append({"invoice_id": invoice_id, "kind": "stage_skipped", "at": self.now,
                                   "reason": reason("outbox.late_start", stage=self.ladder[k].name, due=stage.name)})
        # The unique (invoice, stage) key settles a race with another instance. A conflict is
        # skipped rather than raised: psycopg would otherwise abort its pipeline mid-batch and log
        # "error ignored terminating <Pipeline>" on stderr. A row short means another instance
        # queued one of these stages first: this transaction is undone and retried group by group.
        inserted = s.execute(_insert_new(s, rem_t).returning(rem_t.c.id), reminders).all()
        if len(inserted) != len(reminders):
            raise _AlreadyQueuedError
        record_events(s, events)
        return ids

    def resolve_stale(self) -> list[str]:
        """Turn `sending` rows whose claimant is gone into `uncertain` (see the module docstring)."""
        with session(self.engine) as s:
            rows = s.execute(sa.select(out_t.c.id, out_t.c.message_id, out_t.c.claimed_by, out_t.c.claimed_at)
                             .where(out_t.c.status == "sending")).all()
            stale = [r for r in rows if _claimant_dead(r.claimed_by, self.instance)
                     or r.claimed_at is None or r.claimed_at < self.wall_now - LEASE]
            for r in stale:
                self._finish(s, r.id, "uncertain", "delivery_uncertain",
                             reason("outbox.uncertain", instance=r.claimed_by or "?"))
            return [r.message_id for r in stale]

    def pending_ids(self) -> list[int]:
        with self.engine.connect() as c:
            return list(c.execute(sa.select(out_t.c.id).where(out_t.c.status == "pending")
                                  .order_by(out_t.c.id)).scalars())

    # -- claiming --------------------------------------------------------------------------------

    def prepare(self, ids: Sequence[int]) -> list[Prepared | int]:
        """Render the pending messages `ids` in bulk, three queries for the lot. An id comes back
        as-is when one of its invoices is no longer due or rendering failed: `claim` settles those
        one by one. Ids no longer pending are left out."""
        with self.engine.connect() as c:
            obs = {r.id: r for r in c.execute(
                sa.select(out_t).where(out_t.c.id.in_(ids), out_t.c.status == "pending"))}
            rows: dict[int, list[sa.Row[Any]]] = defaultdict(list)
            for r in c.execute(self._invoices_query().where(rem_t.c.outbound_id.in_(list(obs)),
                                                            rem_t.c.skipped.is_(False))):
                rows[r.outbound_id].append(r)
            earlier = self._earlier(c, [r.id for group in rows.values() for r in group])
            claims = self._claims(c, [r.id for group in rows.values() for r in group])
        out: list[Prepared | int] = []
        for ob_id in ids:
            ob = obs.get(ob_id)
            if ob is None:
                continue
            invs = rows.get(ob_id, [])
            if ob.stage in (REPLY, INSTALMENT):  # composed when queued, or read again at claim: one by one
                out.append(ob_id)
                continue
            if not invs or any(self._not_due(r) for r in invs):
                out.append(ob_id)
                continue
            try:
                out.append(self._render(ob, invs, earlier, claims))
            except (MissingRateError, ContractRateTooLowError, MessageDataError):
                out.append(ob_id)
        return out

    def begin(self, p: Prepared, settle: tuple[Prepared, Sequence[str]] | None = None) -> bool:
        """Mark `p` sending if its invoices are still as rendered; False sends the caller to `claim`.

        `settle` (the previous message, delivered) is recorded in the same transaction: one commit
        per message."""
        with session(self.engine) as s:
            if settle is not None:
                self._record_sent(s, *settle)
            current = s.execute(sa.select(inv_t.c.id, inv_t.c.state, inv_t.c.paid, inv_t.c.hold_until,
                                          inv_t.c.held_by, con_t.c.failing)
                                .join(con_t, con_t.c.id == inv_t.c.contact_id)
                                .where(inv_t.c.id.in_(p.invoice_ids))).all()
            if sorted(tuple(r) for r in current) != sorted(p.snapshot):
                return False
            return self._mark_sending(s, p)

    def claim(self, outbound_id: int) -> Prepared | None:
        """The careful path: re-read the invoices, drop those no longer due, render, mark `sending`.

        None when there is nothing to send (cancelled, failed, or claimed by another instance)."""
        try:
            return self._claim(outbound_id)
        except _ClaimedElsewhereError:
            return None

    def _claim(self, outbound_id: int) -> Prepared | None:
        with session(self.engine) as s:
            ob = s.execute(sa.select(out_t).where(out_t.c.id == outbound_id)).one()
            if ob.status != "pending":
                return None
            if ob.stage == REPLY:
                prepared = self._reply(s, ob)
                if not self._mark_sending(s, prepared):
                    raise _ClaimedElsewhereError
                return prepared
            if ob.stage == INSTALMENT:
                return self._claim_instalment(s, ob)
            invs = s.execute(self._invoices_query().where(rem_t.c.outbound_id == outbound_id,
                                                          rem_t.c.skipped.is_(False))).all()
            still = []
            for r in invs:
                why = self._not_due(r)
                if why:
                    self._unlink(s, outbound_id, r.id, "reminder_cancelled", why)
                else:
                    still.append(r)
            if not still:
                s.execute(sa.update(out_t).where(out_t.c.id == outbound_id).values(status="cancelled"))
                self.cancelled += 1
                return None
            try:
                ids = [r.id for r in still]
                prepared = self._render(ob, still, self._earlier(s, ids), self._claims(s, ids))
            except (MissingRateError, ContractRateTooLowError) as e:
                self._finish(s, outbound_id, "failed", "reminder_failed", str(e), unlink=True)
                self.failures.append(f"{', '.join(r.number for r in still)}  {ob.stage}: not sent: {e}")
                return None
            except MessageDataError as e:
                self._data_failed(s, outbound_id, e.reason)
                self.failures.append(f"{', '.join(r.number for r in still)}  {ob.stage}: not sent: {e.reason}")
                return None
            if not self._mark_sending(s, prepared):
                raise _ClaimedElsewhereError  # rolls back what this transaction did
            return prepared

    def _claim_instalment(self, s: Connection, ob: sa.Row[Any]) -> Prepared | None:
        """An instalment reminder (bot/instalments.py): the plan read again, then rendered and claimed."""
        found = read_instalment(s, int(ob.id), str(ob.message_id), self.now)
        if isinstance(found, str):
            self._finish(s, int(ob.id), "cancelled", "reminder_cancelled", found)
            self.cancelled += 1
            return None
        try:
            prepared = self._instalment(ob, found)
        except MessageDataError as e:
            self._data_failed(s, int(ob.id), e.reason)
            self.failures.append(f"{found.number}  {INSTALMENT}: not sent: {e.reason}")
            return None
        if not self._mark_sending(s, prepared):
            raise _ClaimedElsewhereError
        return prepared

    def _instalment(self, ob: sa.Row[Any], r: InstalmentReminder) -> Prepared:
        cfg = self.config
        ctx = InvoiceContext(number=r.number, issue_date=r.issue_date, due_date=r.due_date, amount=r.invoice_amount,
                             paid=r.paid, currency=r.currency)
        rendered = self.renderer.render(
            r.language, cfg.plans.template, client_name=r.client_name, client_kind=r.client_kind, invoices=[ctx],
            today=self.now.astimezone(cfg.zone).date(),
            extra={"instalment": {"index": r.index + 1, "count": r.count, "amount": r.amount, "due": r.due}})
        reply_to = cfg.company.reply_to.replace("{token}", ob.reply_token or "") if cfg.company.reply_to else ""
        data = compose(rendered, company_name=cfg.company.name, company_email=cfg.company.email, to=str(ob.to_addr),
                       to_name=r.client_name, cc=(), reply_to=reply_to, message_id=str(ob.message_id),
                       references=(), date=self.now, invoice_numbers=[r.number])
        return Prepared(outbound_id=int(ob.id), message_id=str(ob.message_id),
                        envelope=Envelope(cfg.company.email, (str(ob.to_addr),)), data=data, numbers=(r.number,),
                        stage=INSTALMENT, subject=rendered.subject, invoice_ids=(r.invoice_id,),
                        queued_at=ob.created_at, snapshot=())

    def _reply(self, s: Connection, ob: sa.Row[Any]) -> Prepared:
        """A queued reply as it was composed (bot/replies.py)."""
        ids = _linked(s, int(ob.id))
        numbers = tuple(s.execute(sa.select(inv_t.c.number).where(inv_t.c.id.in_(ids))
                                  .order_by(inv_t.c.number)).scalars())
        return Prepared(outbound_id=int(ob.id), message_id=str(ob.message_id),
                        envelope=Envelope(self.config.company.email, (str(ob.to_addr),)), data=bytes(ob.raw),
                        numbers=numbers, stage=REPLY, subject=str(ob.subject), invoice_ids=tuple(ids),
                        queued_at=ob.created_at, snapshot=())

    def _mark_sending(self, s: Connection, p: Prepared) -> bool:
        claimed = cast(sa.CursorResult[Any], s.execute(
            sa.update(out_t).where(out_t.c.id == p.outbound_id, out_t.c.status == "pending")
            .values(status="sending", raw=p.data, subject=p.subject, claimed_at=self.wall_now,
                    claimed_by=self.instance, attempts=out_t.c.attempts + 1))).rowcount
        return claimed == 1  # 0: another instance claimed it between our read and our write

    @staticmethod
    def _invoices_query() -> sa.Select[Any]:
        return (sa.select(rem_t.c.outbound_id, inv_t, cli_t.c.name.label("client_name"),
                          cli_t.c.kind.label("client_kind"), con_t.c.email, con_t.c.cc, con_t.c.failing)
                .join(rem_t, rem_t.c.invoice_id == inv_t.c.id).join(cli_t, cli_t.c.id == inv_t.c.client_id)
                .join(con_t, con_t.c.id == inv_t.c.contact_id).order_by(inv_t.c.due_date, inv_t.c.number))

    @staticmethod
    def _earlier(c: Connection, invoice_ids: list[int]) -> dict[int, list[Any]]:
        """Reminders already delivered (or uncertain) for these invoices, oldest first."""
        out: dict[int, list[Any]] = defaultdict(list)
        if invoice_ids:
            for e in c.execute(
                    sa.select(rem_t.c.invoice_id, rem_t.c.stage_index, rem_t.c.stage, rem_t.c.at, out_t.c.message_id)
                    .join(out_t, out_t.c.id == rem_t.c.outbound_id)
                    .where(rem_t.c.invoice_id.in_(invoice_ids), rem_t.c.skipped.is_(False),
                           out_t.c.status.in_(("sent", "uncertain")))
                    .order_by(rem_t.c.at, rem_t.c.stage_index)):
                out[e.invoice_id].append(e)
        return out

    @staticmethod
    def _claims(c: Connection, invoice_ids: list[int]) -> dict[int, datetime]:
        """When the client last said it had paid each of these invoices: a claim the bot was sure of,
        or a person confirmed (the hold it put on the invoice), never a reading left to a person."""
        if not invoice_ids:
            return {}
        return dict(c.execute(sa.select(ev_t.c.invoice_id, sa.func.max(ev_t.c.at))
                              .where(ev_t.c.invoice_id.in_(invoice_ids), ev_t.c.kind == "paused",
                                     ev_t.c.reason.in_((CLAIM_HOLD, LEGACY_CLAIM_HOLD)))
                              .group_by(ev_t.c.invoice_id)).all())

    def _not_due(self, r: sa.Row[Any]) -> str:
        """Why a reminder queued for this invoice is no longer due ("" when it still is)."""
        if r.state != "active":
            return reason("outbox.not_active", state=r.state)
        if r.amount - r.paid <= 0:
            return reason("outbox.nothing_due")
        if r.hold_until is not None and r.hold_until > self.now:
            return reason("outbox.paused", until=r.hold_until.astimezone(self.config.zone).date().isoformat())
        if r.held_by is not None:
            return reason("outbox.held", id=r.held_by)
        if r.failing:
            return reason("outbox.failing", address=r.email)
        return ""

    def _render(self, ob: sa.Row[Any], invs: Sequence[sa.Row[Any]], earlier: dict[int, list[Any]],
                claims: dict[int, datetime]) -> Prepared:
        cfg, stage = self.config, self.ladder[int(ob.stage_index)]
        refs: dict[int, list[ReminderRef]] = defaultdict(list)
        message_ids: list[str] = []
        for r in invs:
            for e in earlier.get(r.id, ()):
                if e.stage_index >= ob.stage_index:
                    continue
                refs[r.id].append(ReminderRef(e.at.astimezone(cfg.zone).date(), e.stage))
                if e.message_id not in message_ids:
                    message_ids.append(e.message_id)
        today: date = self.now.astimezone(cfg.zone).date()
        first = invs[0]
        contexts = []
        for r in invs:
            # "You told us on 10 April that the transfer had been made": a claim made since our last
            # reminder, which led to nothing (the invoice is due again).
            claimed = claims.get(r.id)
            last_sent = max((e.at for e in earlier.get(r.id, ())), default=None)
            if claimed is not None and last_sent is not None and claimed < last_sent:
                claimed = None
            ctx = InvoiceContext(number=r.number, issue_date=r.issue_date, due_date=r.due_date, amount=r.amount,
                                 paid=r.paid, currency=r.currency, reminders=tuple(refs[r.id]),
                                 margin_points=cfg.penalties.margin_points,
                                 claimed_paid_on=claimed.astimezone(cfg.zone).date() if claimed else None)
            if stage.penalties:
                ctx = replace(ctx, penalties=penalties_for(cfg.penalty_policy, ctx, first.client_kind, today))
            contexts.append(ctx)
        attachments = []
        if stage.attach_invoice:
            # As imported (confined to the attachments folder then), unless a link was put in its place since.
            folder = cfg.attachments.path(cfg.source)
            attachments = [Attachment(Path(r.pdf), Path(r.pdf).name) for r in invs
                           if r.pdf and Path(r.pdf).is_file() and Path(r.pdf).resolve() == Path(r.pdf)
                           and (folder is None or inside(Path(r.pdf), folder))]
        rendered = self.renderer.render(first.language, stage.template, client_name=first.client_name,
                                        client_kind=first.client_kind, invoices=contexts, today=today,
                                        attached=len(attachments))
        cc = [c.strip() for c in first.cc.split(",") if c.strip()]
        reply_to = cfg.company.reply_to.replace("{token}", ob.reply_token or "") if cfg.company.reply_to else ""
        data = compose(rendered, company_name=cfg.company.name, company_email=cfg.company.email,
                       to=first.email, to_name=first.client_name, cc=cc, reply_to=reply_to,
                       message_id=str(ob.message_id), references=message_ids, date=self.now,
                       invoice_numbers=[r.number for r in invs], attachments=attachments)
        return Prepared(
            outbound_id=int(ob.id), message_id=str(ob.message_id),
            envelope=Envelope(cfg.company.email, (first.email, *cc)), data=data,
            numbers=tuple(r.number for r in invs), stage=stage.name, subject=rendered.subject,
            invoice_ids=tuple(r.id for r in invs), queued_at=ob.created_at,
            snapshot=tuple((r.id, r.state, r.paid, r.hold_until, r.held_by, r.failing) for r in invs))

    # -- outcomes --------------------------------------------------------------------------------

    def settle(self, sent: tuple[Prepared, Sequence[str]] | None) -> None:
        """Record a delivered message on its own (when no next message carries it)."""
        if sent is not None:
            with session(self.engine) as s:
                self._record_sent(s, *sent)

    def _record_sent(self, s: Connection, p: Prepared, refused_cc: Sequence[str]) -> None:
        why = join(*(reason("outbox.cc_refused", address=r) for r in refused_cc))
        s.execute(sa.update(out_t).where(out_t.c.id == p.outbound_id).values(
            status="sent", sent_at=self.now, last_error=why or None))
        kind = {REPLY: "reply_sent", INSTALMENT: "instalment_sent"}.get(p.stage, "reminder_sent")
        record_events(s, [{"invoice_id": i, "kind": kind, "at": self.now, "reason": why,
                           "outbound_id": p.outbound_id} for i in p.invoice_ids])
        if p.queued_at != self.now:  # queued by an earlier run: the stage is dated by its delivery
            s.execute(sa.update(rem_t).where(rem_t.c.outbound_id == p.outbound_id).values(at=self.now))

    def mark_deferred(self, outbound_id: int, reason: str) -> None:
        """A temporary failure: back to pending, retried by the next tick."""
        with session(self.engine) as s:
            s.execute(sa.update(out_t).where(out_t.c.id == outbound_id)
                      .values(status="pending", last_error=reason, claimed_by=None))

    def mark_uncertain(self, outbound_id: int, reason: str) -> None:
        with session(self.engine) as s:
            self._finish(s, outbound_id, "uncertain", "delivery_uncertain", reason)

    def mark_data_error(self, outbound_id: int, reason: str) -> None:
        """The message cannot go as it is (see MessageDataError): its invoices wait for a fix."""
        with session(self.engine) as s:
            if self._is_reply(s, outbound_id):
                self._finish(s, outbound_id, "failed", "reply_failed", reason)
                return
            self._data_failed(s, outbound_id, reason)

    @staticmethod
    def _is_reply(s: Connection, outbound_id: int) -> bool:
        return s.execute(sa.select(out_t.c.stage).where(out_t.c.id == outbound_id)).scalar() == REPLY

    def _data_failed(self, s: Connection, outbound_id: int, reason: str) -> None:
        ids = self._finish(s, outbound_id, "failed", "reminder_failed", reason, unlink=True)
        s.execute(sa.update(inv_t).where(inv_t.c.id.in_(ids)).values(data_error=reason))

    def mark_refused(self, outbound_id: int, reason: str) -> None:
        """The server refused the recipient for good: the invoices bounce, the contact is failing."""
        with session(self.engine) as s:
            if self._is_reply(s, outbound_id):  # the client's sender refused: the reply fails, nothing bounces
                self._finish(s, outbound_id, "failed", "reply_failed", reason)
                return
            ids = self._finish(s, outbound_id, "failed", "bounced", reason, unlink=True)
            s.execute(sa.update(inv_t).where(inv_t.c.id.in_(ids)).values(state="bounced"))
            s.execute(sa.update(con_t).where(con_t.c.id.in_(
                sa.select(inv_t.c.contact_id).where(inv_t.c.id.in_(ids)))).values(
                failing=True, failure_reason=reason))

    def _finish(self, s: Connection, outbound_id: int, status: str, event: str, reason: str,
                unlink: bool = False) -> list[int]:
        ids = list(s.execute(sa.select(rem_t.c.invoice_id).where(rem_t.c.outbound_id == outbound_id,
                                                                 rem_t.c.skipped.is_(False))).scalars())
        ids += [i for i in _linked(s, outbound_id) if i not in ids]
        s.execute(sa.update(out_t).where(out_t.c.id == outbound_id).values(
            status=status, last_error=plain_text(reason) or None))
        record_events(s, [{"invoice_id": i, "kind": event, "at": self.now, "reason": reason,
                           "outbound_id": outbound_id} for i in ids])
        if unlink:  # the stage was not delivered: free it so it can be sent once the cause is fixed
            s.execute(sa.delete(rem_t).where(rem_t.c.outbound_id == outbound_id))
        return ids

    def _unlink(self, s: Connection, outbound_id: int, invoice_id: int, event: str, reason: str) -> None:
        s.execute(sa.delete(rem_t).where(rem_t.c.outbound_id == outbound_id, rem_t.c.invoice_id == invoice_id))
        record_events(s, [{"invoice_id": invoice_id, "kind": event, "at": self.now, "reason": reason,
                           "outbound_id": outbound_id}])


def _linked(s: Connection, outbound_id: int) -> list[int]:
    """The invoices of a message that has no stage rows: a reply, an instalment reminder (their events)."""
    return [int(i) for i in s.execute(sa.select(ev_t.c.invoice_id).where(
        ev_t.c.outbound_id == outbound_id, ev_t.c.kind.in_(("reply_queued", "instalment_queued")),
        ev_t.c.invoice_id.is_not(None))).scalars()]


def _insert_new(s: Connection, t: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING on the dialects the store runs on."""
    if s.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: PLC0415

        return pg_insert(t).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: PLC0415

    return sqlite_insert(t).on_conflict_do_nothing()


class _AlreadyQueuedError(Exception):
    """Another instance recorded one of these stages first."""


class _ClaimedElsewhereError(Exception):
    """Another instance claimed the message between our read and our write."""


def _claimant_dead(claimed_by: str | None, me: str) -> bool:
    if not claimed_by or claimed_by == me:
        return False
    host, _, pid = claimed_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False

