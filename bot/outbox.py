"""The outbox: every reminder is recorded before it is sent, and sent at most once.

Life of a message (`outbound.status`):

    pending --take--> preparing --rendered, bytes stored--> prepared --claim--> claimed --mark--> sending
    sending --250--> sent
            |--4xx / connection lost before DATA--> pending (retried later)
            |--5xx for the recipient--> failed (invoice -> bounced)
            |--cannot be built or addressed, 5xx for the message--> failed
            |      (invoice state kept, `data_error` set: waits for the data to be fixed)
            |--connection lost during DATA--> uncertain
    pending, prepared, claimed --invoice paid/paused/disputed meanwhile--> cancelled

A person's reply to a client (bot/replies.py, stage `reply`) takes the same path from `pending`:
its bytes were composed when it was queued, so `claim` only marks it `sending`; it is sent
whatever the state of its invoices (the person wrote it knowing it), and a 5xx fails the reply
alone (the address it went to is the client's sender or its Reply-To, not the invoice's contact:
nothing bounces).

`queue` writes, in one transaction, the outbound row (with its Message-ID) and one `reminder`
row per (invoice, stage), whose unique key makes a second reminder of the same stage impossible,
whatever the number of instances or crashes.

Sending is split so that rendering leaves the send path (bot/prepare.py):

- `take` moves a chunk of `pending` messages to `preparing` for this instance; `prepare` re-reads
  their invoices once for the chunk and renders them (in a worker process for a large batch);
  `store_prepared` stores the exact bytes, `prepared`, with when and what the invoices had been
  paid then.
- `claim_prepared` moves a chunk of `prepared` messages to `claimed` for this instance, in one
  transaction, only where every invoice is still due, unchanged since it was rendered (the same
  sum paid) and rendered today. On PostgreSQL the chunk is taken with `FOR UPDATE SKIP LOCKED`:
  several instances split the messages without waiting on each other. One whose invoice changed
  goes through the careful path (`claim`: re-read, drop the invoices no longer due, cancel when
  none is left, render again).
- `mark_sending` is one statement per message, committed before DATA: `claimed` -> `sending`,
  again only where its invoices are still as rendered (a payment landing mid-chunk still stops
  it), stamped with the order of the marks (`sending_seq`, a monotonic clock). It runs on the
  driver's connection (bot/driver.py), while the server reads MAIL FROM (`Mailer.send`'s
  `ready`); on PostgreSQL it waits for the disk (`flush_marks`): a mark lost would put a message
  the server accepted back to be sent again, and a PostgreSQL server that crashes (an immediate
  shutdown, the OOM killer), not only its host, loses the last commits that did not wait.
- `delivered` keeps what the server accepted; it is recorded `sent` (with its events) at the
  start of this instance's next transaction: the next claim, a failure's record, `flush` before
  a wait for the rate limit and at the end of the pass. A failure (4xx, 5xx, the connection lost)
  is recorded at once, before the next mark.
- `release`, at the end of a pass, gives back what this instance took and did not send.

What a crash leaves: a batch (one instance's pass: the same `claimed_by` and `claimed_at`, one
SMTP connection) may leave several messages `sending`. Each was marked only once the previous
one's outcome was known, and every outcome but a delivery is recorded before the next mark: so
each of them but the last marked was delivered, and a restart records those `sent`. Nothing
`preparing` or `claimed` has reached the server (DATA waits for `sending`), so a restart puts
those back (`pending`, `prepared`). The last message marked is different: nothing can tell
whether the server accepted it, and a duplicate formal notice is worse than a late one, so it
becomes `uncertain` (at most one per connection): it counts as sent for the ladder (the next
stage will follow in due time), and an event asks a person to check. A restart does this when
the batch's claimant is known dead (same host, process gone) or its claim is older than `LEASE`,
which covers an instance that died on another host. That age is the row's `lease_at`: when its
claimant last took it, claimed it or marked it, by the claimant's clock (`claimed_at` stays the
pass's start, which names the batch): a pass that sends for longer than the lease (a large batch,
a low rate limit) keeps what it holds, the message it is sending above all. A live
daemon whose pass lost the database mid-way does it for its own claims when the database is
back (`resolve_own`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time as clock
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot.compose import Attachment, Envelope, compose, new_message_id, new_reply_token
from bot.config import Config
from bot.driver import DriverConnection
from bot.errors import MessageDataError
from bot.instalments import STAGE as INSTALMENT
from bot.instalments import Reminder as InstalmentReminder
from bot.instalments import read as read_instalment
from bot.ledger import inside
from bot.models import Client, Contact, Event, Invoice, Money, Outbound, Reminder, UtcDateTime, table
from bot.reasons import plain_text
from bot.render import InvoiceContext, ReminderRef, Renderer, penalties_for
from bot.replies import STAGE as REPLY
from bot.store import record_events, session
from rules.effects import CLAIM_HOLD, LEGACY_CLAIM_HOLD
from rules.penalties import ContractRateTooLowError, MissingRateError
from rules.reasons import join, reason

LEASE = timedelta(minutes=15)
WAITING = ("pending", "preparing", "prepared", "claimed")  # queued, not yet handed to the server
MINE = ("preparing", "claimed")  # held by the instance named in `claimed_by`
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
    """A message rendered, as it goes on the wire, with what the outbox records about it."""

    outbound_id: int
    message_id: str
    envelope: Envelope
    data: bytes
    numbers: tuple[str, ...]
    stage: str
    subject: str
    invoice_ids: tuple[int, ...]
    queued_at: datetime
    paid: Decimal  # what its invoices had been paid when it was rendered, summed


QUEUE_CHUNK = 5000  # groups whose messages, reminders and events are built and written together


class Outbox:
    # Whether the per-message commit waits for the disk on PostgreSQL (see bot/driver.py); SQLite
    # runs with synchronous=NORMAL either way. Without it a crash of this process loses nothing,
    # but a crash of the PostgreSQL server loses the last marks: their messages, already accepted,
    # would be sent again (the fault harness saw it: bench/faults.py, "database away"). It costs
    # about a sixth of the sending rate on the bench (bench/outbound.py --async-marks).
    flush_marks = True

    def __init__(self, engine: Engine, config: Config, renderer: Renderer, now: datetime,
                 wall_now: datetime, instance: str | None = None,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """`wall_now`: when the pass started (its claims are named by it); `wall_clock`: the time
        now, that dates each claim's lease (`lease_at`)."""
        self.engine = engine
        self.config = config
        self.renderer = renderer
        self.now = now
        self.wall_now = wall_now
        self.wall_clock = wall_clock
        self.instance = instance or instance_name()
        self.ladder = config.ladder
        self.failures: list[str] = []  # messages that could not be rendered, with why
        self.cancelled = 0  # messages this instance cancelled (no longer due); not those another one took
        self._driver: DriverConnection | None = None  # held by a batch for its per-message statements
        self._delivered: list[tuple[Prepared, tuple[str, ...]]] = []  # delivered, to record `sent` (`flush`)
        # On PostgreSQL the next chunk is claimed in a thread (bot/tick.py): one recording of the
        # deliveries at a time, and the counts kept right.
        self._lock = threading.RLock()
        self._claim_cache: dict[int, _ClaimStatements] = {}
        self._mark_statement = (
            sa.update(out_t).where(out_t.c.id == sa.bindparam("oid"), out_t.c.status == "claimed",
                                   out_t.c.claimed_by == sa.bindparam("me"), self._still_as_rendered())
            .values(status="sending", claimed_at=sa.bindparam("wall", type_=UtcDateTime()),
                    lease_at=sa.bindparam("alive", type_=UtcDateTime()), sending_seq=sa.bindparam("seq"),
                    attempts=out_t.c.attempts + 1))

    # -- recording -------------------------------------------------------------------------------

    def queue(self, groups: Sequence[Group]) -> list[int]:
        """Record `groups` as pending messages, in one transaction; returns their ids. When another
        instance recorded some of these stages first (its unique reminder key refuses ours), the
        rest is recorded in one transaction again (instances started together plan the same
        reminders); only if that races too are the groups recorded one by one."""
        for _ in range(3):
            if not groups:
                return []
            try:
                with session(self.engine) as s:  # one transaction, written a chunk at a time
                    return [i for start in range(0, len(groups), QUEUE_CHUNK)
                            for i in self._queue(s, groups[start:start + QUEUE_CHUNK])]
            except (_AlreadyQueuedError, sa.exc.IntegrityError):
                groups = self._not_queued(groups)
        if groups:
            ids = []
            for g in groups:
                try:
                    with session(self.engine) as s:
                        ids += self._queue(s, [g])
                except (_AlreadyQueuedError, sa.exc.IntegrityError):
                    continue
            return ids
        return []

    def _not_queued(self, groups: Sequence[Group]) -> list[Group]:
        """The groups none of whose stages another instance has recorded meanwhile."""
        taken: set[tuple[int, int]] = set()
        invoice_ids = sorted({i for g in groups for i in g.invoice_ids})
        with self.engine.connect() as c:
            for start in range(0, len(invoice_ids), 5000):
                taken.update((int(r.invoice_id), int(r.stage_index)) for r in c.execute(
                    sa.select(rem_t.c.invoice_id, rem_t.c.stage_index)
                    .where(rem_t.c.invoice_id.in_(invoice_ids[start:start + 5000]))))
        return [g for g in groups if not any((i, g.stage_index) in taken for i in g.invoice_ids)
                and not any((i, k) in taken for i, ks in g.skipped for k in ks)]

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
        """Settle what instances that are gone left half-way (see the module docstring): of the
        messages one batch left `sending`, those marked before its last were delivered and are
        recorded `sent`, the last becomes `uncertain`; `claimed` goes back to `prepared`,
        `preparing` to `pending`. Returns the Message-IDs made uncertain."""
        return self._resolve(lambda r: _claimant_dead(r.claimed_by, self.instance)
                             or _alive_at(r) < self.wall_now - LEASE)

    def resolve_own(self) -> list[str]:
        """Settle what an earlier pass of this same instance left half-way when the database went
        away under it (its last statements could not be written), as `resolve_stale` does for a
        dead instance. Only for a caller that knows no pass of its own is running (the daemon,
        between passes): a live instance's claims are otherwise left alone until `LEASE`. Returns
        the Message-IDs made uncertain."""
        return self._resolve(lambda r: r.claimed_by == self.instance)

    def _resolve(self, left: Callable[[Any], bool]) -> list[str]:
        with session(self.engine) as s:
            rows = s.execute(sa.select(out_t.c.id, out_t.c.message_id, out_t.c.status, out_t.c.claimed_by,
                                       out_t.c.claimed_at, out_t.c.lease_at, out_t.c.sending_seq, out_t.c.stage,
                                       out_t.c.created_at, out_t.c.prepared_at)
                             .where(out_t.c.status.in_(("sending", "claimed", "preparing")))).all()
            stale = [r for r in rows if left(r)]
            for back, status in (("claimed", "prepared"), ("preparing", "pending")):
                ids = [r.id for r in stale if r.status == back]
                if ids:
                    s.execute(sa.update(out_t).where(out_t.c.id.in_(ids), out_t.c.status == back)
                              .values(status=status, claimed_by=None))
            last: dict[tuple[Any, Any], int] = {}  # per batch (instance, start): the last mark
            for r in rows:
                if r.status == "sending" and r.sending_seq is not None:
                    batch = (r.claimed_by, r.claimed_at)
                    last[batch] = max(last.get(batch, r.sending_seq), r.sending_seq)
            delivered = [r for r in stale if r.status == "sending" and r.sending_seq is not None
                         and r.sending_seq < last[(r.claimed_by, r.claimed_at)]]
            self._record_sent(s, [_Sent(int(r.id), str(r.stage), tuple(self._invoices_of(s, int(r.id))),
                                        r.created_at, r.prepared_at or self.now, "") for r in delivered])
            done = {r.id for r in delivered}
            uncertain = [r for r in stale if r.status == "sending" and r.id not in done]
            for r in uncertain:
                self._finish(s, r.id, "uncertain", "delivery_uncertain",
                             reason("outbox.uncertain", instance=r.claimed_by or "?"))
            return [r.message_id for r in uncertain]

    def waiting(self) -> int:
        """Messages queued and not yet sent (pending, being prepared, prepared, claimed)."""
        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).where(out_t.c.status.in_(WAITING))).scalar_one())

    def release(self) -> None:
        """Give back what this instance took and did not send: for the next pass, or another instance."""
        with session(self.engine) as s:
            for mine, status in (("claimed", "prepared"), ("preparing", "pending")):
                s.execute(sa.update(out_t).where(out_t.c.status == mine, out_t.c.claimed_by == self.instance)
                          .values(status=status, claimed_by=None))

    # -- recording deliveries ----------------------------------------------------------------------

    def delivered(self, p: Prepared, refused_cc: Sequence[str] = ()) -> None:
        """`p` was delivered: recorded `sent` with the next transaction this outbox commits (the
        next claim, a failure, `flush`), not one by one. At once when the server refused one of its
        Cc addresses: the record says so, and a crash would lose it."""
        self._delivered.append((p, tuple(refused_cc)))
        if refused_cc:
            self.flush()

    def flush(self) -> None:
        """Record `sent` what was delivered and is not yet."""
        if self._delivered:
            with self._recording():
                pass

    def settle(self, sent: tuple[Prepared, Sequence[str]] | None) -> None:
        """Record a delivered message now (with any delivered before it)."""
        if sent is not None:
            self._delivered.append((sent[0], tuple(sent[1])))
        self.flush()

    @contextlib.contextmanager
    def _recording(self) -> Iterator[Connection]:
        """A transaction that begins by recording what was delivered since the last one."""
        with self._lock:
            batch = list(self._delivered)
            with session(self.engine) as s:
                if batch:
                    # Only what is still this batch's `sending` (another instance may have settled a
                    # message whose claim it judged too old): no second event for one delivery.
                    ids = [p.outbound_id for p, _ in batch]
                    mine = set(s.execute(sa.select(out_t.c.id).where(
                        out_t.c.id.in_(ids), out_t.c.status == "sending",
                        out_t.c.claimed_by == self.instance)).scalars())
                    self._record_sent(s, [_Sent(p.outbound_id, p.stage, p.invoice_ids, p.queued_at, self.now,
                                                join(*(reason("outbox.cc_refused", address=r) for r in refused)))
                                          for p, refused in batch if p.outbound_id in mine])
                yield s
            del self._delivered[:len(batch)]

    def _record_sent(self, s: Connection, sent: Sequence[_Sent]) -> None:
        """`sent`, with one event per invoice and, for a message queued by an earlier run, its
        stage dated by its delivery: three statements for the lot."""
        if not sent:
            return
        s.execute(_SENT, [{"oid": d.outbound_id, "p_at": d.at, "p_error": plain_text(d.why) or None} for d in sent])
        s.execute(_SENT_EVENT, [{"oid": d.outbound_id, "p_invoice": i, "p_at": d.at, "p_reason": d.why,
                                 "p_kind": {REPLY: "reply_sent", INSTALMENT: "instalment_sent"}.get(
                                     d.stage, "reminder_sent")}
                                for d in sent for i in d.invoice_ids])
        later = [{"oid": d.outbound_id, "p_at": d.at} for d in sent if d.queued_at != d.at]
        if later:
            s.execute(_SENT_STAGE, later)

    def _invoices_of(self, s: Connection, outbound_id: int) -> list[int]:
        ids = list(s.execute(sa.select(rem_t.c.invoice_id).where(rem_t.c.outbound_id == outbound_id,
                                                                 rem_t.c.skipped.is_(False))).scalars())
        return ids + [i for i in _linked(s, outbound_id) if i not in ids]

    # -- preparing -------------------------------------------------------------------------------

    def take(self, limit: int) -> list[int]:
        """Up to `limit` pending messages, oldest first, moved to `preparing` for this instance.

        On PostgreSQL, rows another instance is taking are skipped, not waited for."""
        with session(self.engine) as s:
            # Not one deferred during this pass (its claim is dated by this pass): that waits for the next.
            oldest = _skip_locked(s, sa.select(out_t.c.id).where(
                out_t.c.status == "pending", sa.or_(out_t.c.claimed_at.is_(None), out_t.c.claimed_at < self.wall_now))
                .order_by(out_t.c.id).limit(limit))
            # A CTE, evaluated once: PostgreSQL may run an `IN (subquery)` again per row, and with
            # SKIP LOCKED each run can find other rows (a chunk would be taken whole).
            chunk = oldest.cte("chunk")
            return sorted(s.execute(
                sa.update(out_t).where(out_t.c.id == chunk.c.id, out_t.c.status == "pending")
                .values(status="preparing", claimed_by=self.instance, claimed_at=self.wall_now,
                        lease_at=self.wall_clock())
                .returning(out_t.c.id)).scalars())

    def prepare(self, ids: Sequence[int]) -> list[Prepared | int]:
        """Render the messages `ids` this instance is preparing, in bulk, three queries for the lot.
        An id comes back as-is when one of its invoices is no longer due or rendering failed:
        `store_prepared` settles those one by one. Ids no longer this instance's are left out.

        Reads and renders only: it runs in a worker process for a large batch (bot/prepare.py)."""
        with self.engine.connect() as c:
            obs = {r.id: r for r in c.execute(
                sa.select(out_t).where(out_t.c.id.in_(ids), out_t.c.status == "preparing",
                                       out_t.c.claimed_by == self.instance))}
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

    def store_prepared(self, items: Sequence[Prepared | int]) -> None:
        """Store what `prepare` rendered, `prepared`, in one transaction; settle the rest one by one
        (cancelled, failed, or rendered again with the invoices still due)."""
        rendered = [p for p in items if isinstance(p, Prepared)]
        if rendered:
            with session(self.engine) as s:
                s.execute(_STORE_PREPARED, [
                    {"oid": p.outbound_id, "me": self.instance, **{f"p_{k}": v for k, v in self._stored(p).items()}}
                    for p in rendered])
        for item in items:
            if isinstance(item, int):
                with contextlib.suppress(_ClaimedElsewhereError):
                    self._claim(item, "preparing", "prepared")

    def _stored(self, p: Prepared) -> dict[str, Any]:
        """What is stored of a rendered message (the `p_` parameters of `_STORE_PREPARED`)."""
        return {"raw": p.data, "subject": p.subject, "cc": ",".join(p.envelope.recipients[1:]), "at": self.now,
                "paid": p.paid}

    # -- claiming --------------------------------------------------------------------------------

    def claim_prepared(self, limit: int) -> list[Prepared]:
        """Up to `limit` prepared messages, oldest first, `claimed` for this instance in one
        transaction where their invoices are still as rendered (`_still_as_rendered`); the others
        go through the careful path (`claim`) and come back claimed if they still have to go.

        On PostgreSQL, rows another instance is claiming are skipped, not waited for."""
        q = self._claim_statements(limit)
        with self._recording() as s:
            candidates = s.execute(q.candidates if s.dialect.name != "postgresql" else q.candidates_locked).all()
            good = [r.id for r in candidates if r.ok]
            changed = [r.id for r in candidates if not r.ok]
            alive = self.wall_clock()
            rows = s.execute(q.claim, {"ids": good, "alive": alive}).all() if good else []
            if changed:
                s.execute(q.set_aside, {"ids": changed, "alive": alive})
            links: dict[int, list[Any]] = defaultdict(list)
            for r in s.execute(q.links, {"ids": [r.id for r in rows]}) if rows else ():
                links[r.outbound_id].append(r)
            for r in rows:  # a reply, an instalment reminder: its invoices are those of its queued event
                if r.stage in (REPLY, INSTALMENT):
                    links[r.id] += s.execute(sa.select(inv_t.c.id, inv_t.c.number)
                                             .where(inv_t.c.id.in_(_linked(s, r.id))).order_by(inv_t.c.number)).all()
        sender = self.config.company.email
        out = [Prepared(outbound_id=r.id, message_id=r.message_id,
                        envelope=Envelope(sender, (r.to_addr, *(c for c in r.cc.split(",") if c))),
                        data=r.raw, numbers=tuple(i.number for i in links[r.id]), stage=r.stage,
                        subject=r.subject, invoice_ids=tuple(i.id for i in links[r.id]),
                        queued_at=r.created_at, paid=r.prepared_paid) for r in sorted(rows, key=lambda r: r.id)]
        for ob_id in changed:
            with contextlib.suppress(_ClaimedElsewhereError):
                p = self._claim(ob_id, "claimed", "claimed")
                if p is not None:
                    out.append(p)
        return sorted(out, key=lambda p: p.outbound_id)  # the order they were queued in: priority first

    def _claim_statements(self, limit: int) -> _ClaimStatements:
        """`claim_prepared`'s statements, built once a pass (building them cost more than running them)."""
        found = self._claim_cache.get(limit)
        if found is None:
            ok = self._still_as_rendered(today_only=True).label("ok")
            candidates = sa.select(out_t.c.id, ok).where(out_t.c.status == "prepared").order_by(out_t.c.id).limit(limit)
            ids: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)
            mine = {"status": "claimed", "claimed_by": self.instance, "claimed_at": self.wall_now,
                    "lease_at": sa.bindparam("alive", type_=UtcDateTime())}
            found = self._claim_cache[limit] = _ClaimStatements(
                candidates=candidates,
                candidates_locked=candidates.with_for_update(skip_locked=True, of=out_t),
                claim=sa.update(out_t).where(out_t.c.id.in_(ids), out_t.c.status == "prepared").values(**mine)
                .returning(out_t.c.id, out_t.c.message_id, out_t.c.raw, out_t.c.subject, out_t.c.to_addr, out_t.c.cc,
                           out_t.c.stage, out_t.c.created_at, out_t.c.prepared_paid),
                set_aside=sa.update(out_t).where(out_t.c.id.in_(ids), out_t.c.status == "prepared").values(**mine),
                links=sa.select(rem_t.c.outbound_id, inv_t.c.id, inv_t.c.number)
                .join(inv_t, inv_t.c.id == rem_t.c.invoice_id)
                .where(rem_t.c.outbound_id.in_(ids), rem_t.c.skipped.is_(False))
                .order_by(inv_t.c.due_date, inv_t.c.number))
        return found

    def close(self) -> None:
        """Give back the connection a batch held for its per-message statements."""
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def mark_sending(self, p: Prepared) -> bool:
        """`claimed` -> `sending`, committed, if its invoices are still as rendered; False sends
        the caller to `claim` (the careful path). One statement and its commit, on the driver's
        connection: the messages delivered before it are recorded with the next claim."""
        if self._driver is None:
            self._driver = DriverConnection(self.engine, flush_on_commit=self.flush_marks)
        return self._driver.execute(self._mark_statement, {
            "oid": p.outbound_id, "me": self.instance, "wall": self.wall_now, "alive": self.wall_clock(),
            "seq": clock.monotonic_ns()}) == 1

    def claim(self, outbound_id: int, status: str = "pending") -> Prepared | None:
        """The careful path: re-read the invoices, drop those no longer due, render, mark `sending`.

        None when there is nothing to send (cancelled, failed, or claimed by another instance).
        `status`: where the message is now (`claimed` by this instance when its cheap check failed)."""
        try:
            return self._claim(outbound_id, status, "sending")
        except _ClaimedElsewhereError:
            return None

    def _claim(self, outbound_id: int, status: str, to: str) -> Prepared | None:
        with self._lock, session(self.engine) as s:
            ob = s.execute(sa.select(out_t).where(out_t.c.id == outbound_id)).one()
            if ob.status != status or (status in MINE and ob.claimed_by != self.instance):
                return None
            if ob.stage == REPLY:  # composed when it was queued: as it is
                prepared: Prepared | None = self._reply(s, ob)
            elif ob.stage == INSTALMENT:
                prepared = self._rendered_instalment(s, ob)
            else:
                prepared = self._rendered_reminder(s, ob)
            if prepared is None:
                return None
            stored = self._stored(prepared)
            values: dict[str, Any] = {"status": to, "raw": stored["raw"], "subject": stored["subject"],
                                      "cc": stored["cc"], "prepared_at": self.now, "prepared_paid": prepared.paid}
            if to == "prepared":  # anyone's to claim
                values["claimed_by"] = None
            else:
                values.update(claimed_at=self.wall_now, claimed_by=self.instance, lease_at=self.wall_clock())
            if to == "sending":
                values.update(attempts=out_t.c.attempts + 1, sending_seq=clock.monotonic_ns())
            moved = cast(sa.CursorResult[Any], s.execute(
                sa.update(out_t).where(out_t.c.id == outbound_id, out_t.c.status == status).values(**values))).rowcount
            if moved != 1:  # another instance took it between our read and our write
                raise _ClaimedElsewhereError  # rolls back what this transaction did
            return prepared

    def _rendered_reminder(self, s: Connection, ob: sa.Row[Any]) -> Prepared | None:
        """A reminder with its invoices read again: those no longer due dropped, rendered; None when
        none is left (cancelled) or it cannot be written (failed)."""
        outbound_id = int(ob.id)
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
            return self._render(ob, still, self._earlier(s, ids), self._claims(s, ids))
        except (MissingRateError, ContractRateTooLowError) as e:
            self._finish(s, outbound_id, "failed", "reminder_failed", str(e), unlink=True)
            self.failures.append(f"{', '.join(r.number for r in still)}  {ob.stage}: not sent: {e}")
            return None
        except MessageDataError as e:
            self._data_failed(s, outbound_id, e.reason)
            self.failures.append(f"{', '.join(r.number for r in still)}  {ob.stage}: not sent: {e.reason}")
            return None

    def _still_as_rendered(self, today_only: bool = False) -> sa.ColumnElement[bool]:
        """SQL, on an outbound row: every invoice it is linked to is still due (as `_not_due` reads
        it), their sum paid is what it was when the message was rendered, and (`today_only`) it was
        rendered today, so its date and the interest to date are right."""
        linked = (sa.select(inv_t.c.id).select_from(rem_t.join(inv_t, inv_t.c.id == rem_t.c.invoice_id)
                                                    .join(con_t, con_t.c.id == inv_t.c.contact_id))
                  .where(rem_t.c.outbound_id == out_t.c.id, rem_t.c.skipped.is_(False)))
        not_due = sa.or_(inv_t.c.state != "active", inv_t.c.paid >= inv_t.c.amount,
                         sa.and_(inv_t.c.hold_until.is_not(None), inv_t.c.hold_until > self.now),
                         inv_t.c.held_by.is_not(None), con_t.c.failing.is_(True))
        paid = (sa.select(sa.func.sum(inv_t.c.paid)).select_from(rem_t.join(inv_t, inv_t.c.id == rem_t.c.invoice_id))
                .where(rem_t.c.outbound_id == out_t.c.id, rem_t.c.skipped.is_(False)).scalar_subquery())
        # A reply or an instalment reminder has no stage rows: nothing paid to compare (0).
        checks = [~sa.exists(linked.where(not_due)), sa.func.coalesce(paid, 0) == out_t.c.prepared_paid]
        if today_only:
            day = datetime.combine(self.now.astimezone(self.config.zone).date(), time(0), self.config.zone)
            checks.append(out_t.c.prepared_at >= day)
        return sa.and_(*checks)

    def _rendered_instalment(self, s: Connection, ob: sa.Row[Any]) -> Prepared | None:
        """An instalment reminder (bot/instalments.py), the plan read again: rendered, or None when
        it is no longer due (cancelled) or cannot be written (failed)."""
        found = read_instalment(s, int(ob.id), str(ob.message_id), self.now)
        if isinstance(found, str):
            self._finish(s, int(ob.id), "cancelled", "reminder_cancelled", found)
            self.cancelled += 1
            return None
        try:
            return self._instalment(ob, found)
        except MessageDataError as e:
            self._data_failed(s, int(ob.id), e.reason)
            self.failures.append(f"{found.number}  {INSTALMENT}: not sent: {e.reason}")
            return None

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
                        queued_at=ob.created_at, paid=Decimal(0))

    def _reply(self, s: Connection, ob: sa.Row[Any]) -> Prepared:
        """A queued reply as it was composed (bot/replies.py)."""
        ids = _linked(s, int(ob.id))
        numbers = tuple(s.execute(sa.select(inv_t.c.number).where(inv_t.c.id.in_(ids))
                                  .order_by(inv_t.c.number)).scalars())
        return Prepared(outbound_id=int(ob.id), message_id=str(ob.message_id),
                        envelope=Envelope(self.config.company.email, (str(ob.to_addr),)), data=bytes(ob.raw),
                        numbers=numbers, stage=REPLY, subject=str(ob.subject), invoice_ids=tuple(ids),
                        queued_at=ob.created_at, paid=Decimal(0))

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
            paid=sum((r.paid for r in invs), Decimal("0.00")))

    # -- outcomes --------------------------------------------------------------------------------

    def mark_deferred(self, outbound_id: int, reason: str) -> None:
        """A temporary failure: back to pending, retried by the next tick (not by this one: `take`)."""
        with self._recording() as s:
            # Only while this instance holds it: one it lost (its lease judged run out) is another's now.
            s.execute(sa.update(out_t).where(out_t.c.id == outbound_id, out_t.c.claimed_by == self.instance)
                      .values(status="pending", last_error=reason, claimed_by=None, claimed_at=self.wall_now))

    def mark_uncertain(self, outbound_id: int, reason: str) -> None:
        with self._recording() as s:
            self._finish(s, outbound_id, "uncertain", "delivery_uncertain", reason)

    def mark_data_error(self, outbound_id: int, reason: str) -> None:
        """The message cannot go as it is (see MessageDataError): its invoices wait for a fix."""
        with self._recording() as s:
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
        with self._recording() as s:
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
        ids = self._invoices_of(s, outbound_id)
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


_STORE_PREPARED = (
    sa.update(out_t).where(out_t.c.id == sa.bindparam("oid"), out_t.c.status == "preparing",
                           out_t.c.claimed_by == sa.bindparam("me"))
    .values(status="prepared", claimed_by=None, raw=sa.bindparam("p_raw"), subject=sa.bindparam("p_subject"),
            cc=sa.bindparam("p_cc"), prepared_at=sa.bindparam("p_at", type_=UtcDateTime()),
            prepared_paid=sa.bindparam("p_paid", type_=Money())))


@dataclass(frozen=True)
class _ClaimStatements:
    candidates: sa.Select[Any]  # the oldest prepared, and whether each is still as rendered
    candidates_locked: sa.Select[Any]  # the same, FOR UPDATE SKIP LOCKED (PostgreSQL)
    claim: Any  # those still as rendered -> claimed, returning what is sent
    set_aside: Any  # the others -> claimed, for the careful path
    links: sa.Select[Any]  # their invoices' ids and numbers


@dataclass(frozen=True)
class _Sent:
    """A delivery to record: the message, its invoices, and when."""

    outbound_id: int
    stage: str
    invoice_ids: tuple[int, ...]
    queued_at: datetime | None
    at: datetime
    why: str  # what the server said of its Cc addresses, if it refused some (a reason code)


_SENT = (sa.update(out_t).where(out_t.c.id == sa.bindparam("oid"))
         .values(status="sent", sent_at=sa.bindparam("p_at", type_=UtcDateTime()), last_error=sa.bindparam("p_error")))
_SENT_EVENT = sa.insert(ev_t).values(
    invoice_id=sa.bindparam("p_invoice"), kind=sa.bindparam("p_kind"), at=sa.bindparam("p_at", type_=UtcDateTime()),
    actor="relance", reason=sa.bindparam("p_reason"), data="{}", outbound_id=sa.bindparam("oid"))
_SENT_STAGE = (sa.update(rem_t).where(rem_t.c.outbound_id == sa.bindparam("oid"))
               .values(at=sa.bindparam("p_at", type_=UtcDateTime())))


def _skip_locked(s: Connection, q: sa.Select[Any]) -> sa.Select[Any]:
    """`FOR UPDATE SKIP LOCKED` on PostgreSQL: rows another transaction holds are passed over.
    SQLite has one writer at a time (and one daemon per file): nothing to add."""
    return q.with_for_update(skip_locked=True, of=out_t) if s.dialect.name == "postgresql" else q


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


def _alive_at(r: Any) -> datetime:
    """When a held message's claimant last took, claimed or marked it (`lease_at`; its claim for a
    row from before the lease was recorded)."""
    return r.lease_at or r.claimed_at or datetime.min.replace(tzinfo=UTC)


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

