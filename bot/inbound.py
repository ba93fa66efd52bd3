"""The inbound side: store every new message of the watched folders, then understand it.

Storing and understanding are separate steps. `store_new` writes the raw bytes and advances the
folder's last UID in one transaction per batch, so a crash between fetch and commit re-fetches
the batch and a restart resumes exactly; nothing is parsed before it is stored. `process`
parses, classifies, matches and applies the effects of each stored message in its own
transaction; a message that breaks the parser is kept, marked `quarantined` with the reason,
and the next one goes on. `reprocess` runs stored messages through the pipeline again."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot import learn
from bot.actions import release_holds
from bot.config import Config
from bot.errors import FolderError, MailboxError, NotFoundError, RelanceError
from bot.mailbox import MailSource
from bot.models import Contact, Event, Inbound, Invoice, Mailbox, Outbound, Reminder, table
from bot.store import record_events, session
from bot.understand import Parsed, Understood, first_line, understand_batch
from rules.classify import Kind, Understanding
from rules.effects import Held, Policy, decide
from rules.intent import Model
from rules.match import Known, Match, digits, match, normalise
from rules.model import State

in_t, mb_t, inv_t, con_t = table(Inbound), table(Mailbox), table(Invoice), table(Contact)
out_t, rem_t, ev_t = table(Outbound), table(Reminder), table(Event)
log = logging.getLogger("relance")
BATCH = 200
PARALLEL_FROM = 1000  # messages in one pass; below this, worker processes cost more than they save
OPEN = ("active", "disputed", "plan", "bounced")


@dataclass
class SyncReport:
    stored: int = 0
    duplicates: int = 0
    rescanned: list[str] = field(default_factory=list)  # folders whose UIDVALIDITY changed
    expected: int = 0  # messages this pass will understand, as far as the folders' UIDNEXT tell
    unreadable: list[str] = field(default_factory=list)  # folders the server would not open, and why
    processed: list[str] = field(default_factory=list)


def store_new(engine: Engine, source: MailSource, folder: str, now: datetime, report: SyncReport) -> None:
    """Fetch and store what arrived in `folder` since the last pass."""
    for _ in store_batches(engine, source, folder, now, report):
        pass


def store_batches(engine: Engine, source: MailSource, folder: str, now: datetime, report: SyncReport
                  ) -> Iterator[list[int]]:
    """Fetch and store what arrived in `folder` since the last pass, a batch per transaction;
    yields the ids of each batch once it is committed (and only then may it be parsed)."""
    uidvalidity = source.select(folder)
    with engine.connect() as c:
        state = c.execute(sa.select(mb_t).where(mb_t.c.folder == folder)).first()
    last_uid = 0
    if state is None:
        with session(engine) as s:
            s.execute(sa.insert(mb_t).values(folder=folder, uidvalidity=uidvalidity, last_uid=0))
    elif state.uidvalidity != uidvalidity:
        # The server renumbered the folder: read it again; Message-ID and content hash dedupe it.
        report.rescanned.append(folder)
        with session(engine) as s:
            s.execute(sa.update(mb_t).where(mb_t.c.folder == folder).values(uidvalidity=uidvalidity, last_uid=0))
    else:
        last_uid = int(state.last_uid)
    uidnext = source.uidnext  # as SELECT reported it: every UID below exists or was expunged
    report.expected += max(0, uidnext - 1 - last_uid)
    while True:
        batch = source.fetch_after(last_uid, BATCH)
        if not batch:
            if uidnext - 1 > last_uid:  # the rest were expunged before we saw them: do not wait for them
                with session(engine) as s:
                    s.execute(sa.update(mb_t).where(mb_t.c.folder == folder).values(last_uid=uidnext - 1))
            return
        with session(engine) as s:
            hashes = [hashlib.sha256(f.raw).hexdigest() for f in batch]
            mids = [_clean(_header(f.raw, b"message-id"))[:250] for f in batch]
            known = set(s.execute(sa.select(in_t.c.content_hash).where(in_t.c.content_hash.in_(hashes))).scalars())
            # Renumbered by the server (an older UIDVALIDITY of this folder): the same Message-ID is the
            # same message, even if the server rewrote a header on the way.
            renumbered = set(s.execute(sa.select(in_t.c.message_id).where(
                in_t.c.folder == folder, in_t.c.uidvalidity != uidvalidity,
                in_t.c.message_id.in_([m for m in mids if m]))).scalars())
            rows = []
            for f, h, mid in zip(batch, hashes, mids, strict=True):
                if h in known or mid in renumbered:
                    report.duplicates += 1
                    continue
                known.add(h)
                rows.append({"folder": folder, "uidvalidity": uidvalidity, "uid": f.uid, "raw": f.raw,
                             "content_hash": h, "stored_at": now, "received_at": f.internaldate,
                             "message_id": mid, "status": "new"})
            ids = list(s.execute(sa.insert(in_t).returning(in_t.c.id), rows).scalars()) if rows else []
            last_uid = batch[-1].uid
            s.execute(sa.update(mb_t).where(mb_t.c.folder == folder).values(last_uid=last_uid))
        report.stored += len(rows)
        if ids:
            yield sorted(ids)


def move_handled(engine: Engine, source: MailSource, dest: str, now: datetime) -> int:
    """Move the messages Relance has fully handled (status `applied`) to `dest`; returns how many.
    Messages waiting for a person stay where people look. A crash between the MOVE and the commit
    moves nothing twice: those UIDs are gone from the folder, and moving them again is a no-op.
    A failed move is logged and tried again on the next pass; it never stops the reading of mail."""
    if not dest:
        return 0
    with engine.connect() as c:
        rows = c.execute(sa.select(in_t.c.id, in_t.c.folder, in_t.c.uidvalidity, in_t.c.uid)
                         .where(in_t.c.status == "applied", in_t.c.moved_at.is_(None), in_t.c.uid.is_not(None),
                                in_t.c.folder != dest).order_by(in_t.c.id)).all()
    moved = 0
    for (folder, uidvalidity), group in itertools.groupby(sorted(rows, key=lambda r: (r.folder, r.uidvalidity, r.id)),
                                                          key=lambda r: (r.folder, r.uidvalidity)):
        todo = list(group)
        for start in range(0, len(todo), BATCH):
            chunk = todo[start:start + BATCH]
            try:
                if not source.move(folder, int(uidvalidity), [int(r.uid) for r in chunk], dest):
                    break  # renumbered since: those UIDs name other messages now
            except MailboxError as e:  # moving is a courtesy: it never stops reading the mail
                log.warning("mail: %s; will try again on the next pass", e)
                break
            with session(engine) as s:
                s.execute(sa.update(in_t).where(in_t.c.id.in_([r.id for r in chunk])).values(moved_at=now))
            moved += len(chunk)
    return moved


def _header(raw: bytes, name: bytes) -> str:
    """One header from raw bytes without parsing the message (parsing comes after storing)."""
    m = re.search(rb"^" + name + rb":[ \t]*(.*(?:\r?\n[ \t].*)*)", raw[:65536], re.IGNORECASE | re.MULTILINE)
    return m.group(1).decode("utf-8", "replace").strip() if m else ""


def sync(engine: Engine, source: MailSource, config: Config, now: datetime, report: SyncReport,
         stop: threading.Event | None = None) -> list[str]:
    """One pass over the watched folders: store what is new, then understand and apply it. The two
    overlap: while worker processes read a stored batch, this process fetches and stores the next.
    Messages left `new` by an earlier pass (a crash, an upgrade) go first. When `stop` is set, no
    further batch is fetched; what is stored and in flight is finished. Returns a line a message."""

    def feed() -> Iterator[list[int]]:
        with engine.connect() as c:
            left = list(c.execute(sa.select(in_t.c.id).where(in_t.c.status == "new").order_by(in_t.c.id)).scalars())
        report.expected += len(left)
        yield from (left[i:i + BATCH] for i in range(0, len(left), BATCH))
        for folder in config.imap.folders:
            try:
                for ids in store_batches(engine, source, folder, now, report):
                    yield ids
                    if stop is not None and stop.is_set():
                        return
            except FolderError as e:  # one folder gone or forbidden: the others are still read
                log.warning("mail: %s; the other folders are read", e)
                report.unreadable.append(str(e))

    lines = _understand_and_apply(engine, config, now, feed(), lambda: report.expected)
    report.processed += lines
    return lines


def process(engine: Engine, config: Config, now: datetime, ids: Sequence[int] | None = None) -> list[str]:
    """Understand and apply stored messages (`status = new`, or the given ids). Returns a line each."""
    with engine.connect() as c:
        q = sa.select(in_t.c.id).order_by(in_t.c.id)
        q = q.where(in_t.c.id.in_(list(ids))) if ids is not None else q.where(in_t.c.status == "new")
        todo = list(c.execute(q).scalars())
    return _understand_and_apply(engine, config, now, (todo[i:i + BATCH] for i in range(0, len(todo), BATCH)),
                                 lambda: len(todo))


def _understand_and_apply(engine: Engine, config: Config, now: datetime, feed: Iterator[list[int]],
                          expected: Callable[[], int]) -> list[str]:
    """Messages go through in batches: parsed and understood outside any transaction, then matched and
    applied in one transaction per batch. A message that cannot be read or understood is
    quarantined on its own; when a batch's writes fail, its messages are applied one at a time, so
    one bad message never holds back the others."""
    lines: list[str] = []
    numbers: _Numbers | None = None
    for understood in _understood_batches(engine, config, now, feed, expected):
        if numbers is None:
            with engine.connect() as c:
                numbers = _Numbers(list(c.execute(sa.select(inv_t.c.number)).scalars()))
        try:
            lines += _apply_all(engine, config, now, understood, numbers)
        except Exception:
            for one in understood:
                try:
                    lines += _apply_all(engine, config, now, [one], numbers)
                except Exception as e:
                    lines.append(_quarantine(engine, one.id, f"could not be processed: {first_line(e)}"))
    return lines


def _quarantine(engine: Engine, inbound_id: int, reason: str) -> str:
    with session(engine) as s:
        s.execute(sa.update(in_t).where(in_t.c.id == inbound_id).values(status="quarantined",
                                                                        reason=_clean(reason)[:1000]))
    return f"quarantined  #{inbound_id}: {reason}"


def _understood_batches(engine: Engine, config: Config, now: datetime, feed: Iterator[list[int]],
                        expected: Callable[[], int]) -> Iterator[list[Understood]]:
    """The batches of `feed`, read and understood, in order.

    A large pass (a first sync, a backlog, `reprocess --all`: `expected()` at least PARALLEL_FROM)
    is parsed by worker processes, up to two batches per worker ahead of the transactions that
    apply them, while the feed goes on fetching; a few messages are parsed right here. Only a few
    batches of raw bytes are in memory at once. Where worker processes cannot be had (limits, a
    worker killed), the batches not yet given are parsed here."""
    today, domain = now.astimezone(config.zone).date(), config.company.domain
    model = learn.current(engine)
    workers = config.imap.workers or min(4, os.cpu_count() or 1)
    pending: deque[tuple[list[int], Future[list[Understood]] | None]] = deque()
    with contextlib.ExitStack() as stack:
        pool: ProcessPoolExecutor | None = None
        broken = workers < 2
        for chunk in feed:
            if pool is None and not broken and expected() >= PARALLEL_FROM:
                try:  # spawn, not fork: the daemon has threads (the watcher, asyncio's executor) fork would copy
                    pool = stack.enter_context(ProcessPoolExecutor(workers,
                                                                   mp_context=multiprocessing.get_context("spawn")))
                except (OSError, RuntimeError) as e:
                    broken = _pool_failed(e)
            future = None
            if pool is not None and not broken:
                try:
                    future = pool.submit(understand_batch, _read(engine, chunk), domain, today, model)
                except (OSError, BrokenProcessPool, RuntimeError) as e:
                    broken = _pool_failed(e)
            pending.append((chunk, future))
            while pending and (pending[0][1] is None or pending[0][1].done() or len(pending) > 2 * workers):
                done, broken = _result(engine, *pending.popleft(), domain, today, model, broken)
                yield done
        while pending:
            done, broken = _result(engine, *pending.popleft(), domain, today, model, broken)
            yield done


def _pool_failed(e: BaseException) -> bool:
    log.warning("mail: parsing in worker processes failed (%s); parsing in this process", e)
    return True


def _result(engine: Engine, chunk: list[int], future: Future[list[Understood]] | None, domain: str, today: date,
            model: Model, broken: bool) -> tuple[list[Understood], bool]:
    """The understood batch `chunk`: from its worker, or parsed here when it had none or the worker failed."""
    if future is not None:
        try:
            return future.result(), broken
        except (OSError, BrokenProcessPool) as e:
            broken = broken or _pool_failed(e)
        except Exception as e:  # this batch's result could not come back (a pickling error...): the pool is fine
            log.warning("mail: a worker could not return messages #%d-#%d (%s); reading them here",
                        chunk[0], chunk[-1], first_line(e))
    return understand_batch(_read(engine, chunk), domain, today, model), broken


def _read(engine: Engine, ids: Sequence[int]) -> list[tuple[int, bytes, bool]]:
    """(id, raw bytes, whether its effects were applied by an earlier pass) for each of `ids`."""
    with engine.connect() as c:
        raws: dict[int, bytes] = dict(c.execute(sa.select(in_t.c.id, in_t.c.raw).where(in_t.c.id.in_(list(ids)))).all())
        before = set(c.execute(sa.select(ev_t.c.inbound_id).where(ev_t.c.inbound_id.in_(list(ids)))).scalars())
    return [(i, raws[i], i in before) for i in ids if i in raws]


def _clean(text: str) -> str:
    """Text a database accepts: no NUL (PostgreSQL refuses it), no lone surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


class _Numbers:
    """Every invoice number, normalised two ways, read once per pass (not once per message)."""

    def __init__(self, numbers: list[str]) -> None:
        self.by_normalised = {normalise(n): n for n in numbers}
        self.by_digits: dict[str, tuple[str, ...]] = {}
        for n in numbers:
            d = digits(n)
            if len(d) >= 4:
                self.by_digits[d] = (*self.by_digits.get(d, ()), n)


def _apply_all(engine: Engine, config: Config, now: datetime, batch: Sequence[Understood], numbers: _Numbers
               ) -> list[str]:
    """Match and apply a batch of understood messages in one transaction."""
    lines: list[str] = []
    with session(engine) as s:
        lookups = _Lookups(s, [u.parsed for u in batch if u.parsed is not None], [t for u in batch for t in u.tokens],
                           [a for u in batch for a in u.failed])
        effects = _Effects(s, config, now, lookups)
        rows: list[dict[str, Any]] = []
        found_all = {u.id: lookups.bounced(u, match(p.refs, u.tokens, (p.subject, p.facts.text, *p.facts.attachments),
                                                    lookups.known(p, numbers)))
                     for u in batch if (p := u.parsed) is not None and u.understanding is not None}
        effects.load([n for m in found_all.values() if m.sure for n in m.numbers])
        for u in batch:
            if u.parsed is None or u.understanding is None:
                rows.append({"_id": u.id, "status": "quarantined", "reason": _clean(u.failure)[:1000]})
                lines.append(f"quarantined  #{u.id}: {u.failure}")
                continue
            p, understood, found = u.parsed, u.understanding, found_all[u.id]
            if u.applied_before:
                status, reason = _reprocessed(s, u.id, understood, found)
            else:
                status, reason = effects.apply(u, understood, found)
            rows.append({
                "_id": u.id, "message_id": _clean(p.message_id)[:250] or f"<no-message-id.{u.id}@relance>",
                "from_addr": _clean(p.sender)[:250], "subject": _clean(p.subject)[:500],
                "received_at": p.received_at if p.received_at and p.received_at.tzinfo else None,
                "kind": understood.kind.value, "confidence": understood.confidence, "status": status,
                "reason": _clean(reason)[:1000], "text": _clean(p.facts.text)[:20000],
                "cues": json.dumps([*understood.cues, f"match: {found.method}: {found.reason}"], ensure_ascii=False),
                "suggested": json.dumps(list(found.numbers) if found.numbers and not found.sure else [])})
            lines.append(f"{status:<11} {understood.kind.value:<15} {', '.join(found.numbers) or '-':<20} "
                         f"{p.subject[:60]}")
        effects.flush()
        for keys in sorted({tuple(sorted(r)) for r in rows}):  # one UPDATE per set of columns, many rows
            same = [{f"v_{k}": v for k, v in r.items()} for r in rows if tuple(sorted(r)) == keys]
            # The server's arrival time (INTERNALDATE, stored with the bytes) is when it was received;
            # the sender's Date header only stands in where the server gave none.
            s.execute(sa.update(in_t).where(in_t.c.id == sa.bindparam("v__id"))
                      .values({k: sa.func.coalesce(in_t.c.received_at, sa.bindparam(f"v_{k}")) if k == "received_at"
                               else sa.bindparam(f"v_{k}") for k in keys if k != "_id"}), same)
    return lines


class _Lookups:
    """What the store knows about a batch's references, tokens, senders and bounced addresses, read
    in a query each."""

    def __init__(self, s: Connection, parsed: Sequence[Parsed], tokens: Sequence[str], failed: Sequence[str]
                 ) -> None:
        refs = list({r for p in parsed for r in p.refs})
        senders = list({p.sender for p in parsed})
        self.by_mid: dict[str, tuple[str, ...]] = {}
        for chunk in range(0, len(refs), 500):
            for mid, number in s.execute(
                    sa.select(out_t.c.message_id, inv_t.c.number).join(rem_t, rem_t.c.outbound_id == out_t.c.id)
                    .join(inv_t, inv_t.c.id == rem_t.c.invoice_id)
                    .where(out_t.c.message_id.in_(refs[chunk:chunk + 500]), rem_t.c.skipped.is_(False))):
                self.by_mid[mid] = (*self.by_mid.get(mid, ()), number)
        self.by_token: dict[str, tuple[str, ...]] = {}
        if tokens:
            for tok, number in s.execute(
                    sa.select(out_t.c.reply_token, inv_t.c.number).join(rem_t, rem_t.c.outbound_id == out_t.c.id)
                    .join(inv_t, inv_t.c.id == rem_t.c.invoice_id).where(out_t.c.reply_token.in_(list(set(tokens))))):
                self.by_token[tok] = (*self.by_token.get(tok, ()), number)
        # The open invoices of the clients those replies are about: "we paid this one and 0437 too".
        referenced = list({n for ns in (*self.by_mid.values(), *self.by_token.values()) for n in ns})
        self.siblings: dict[str, tuple[str, ...]] = {}
        if referenced:
            sib = inv_t.alias("sibling")
            for chunk in range(0, len(referenced), 500):
                for number, other in s.execute(
                        sa.select(inv_t.c.number, sib.c.number).join(sib, sib.c.client_id == inv_t.c.client_id)
                        .where(inv_t.c.number.in_(referenced[chunk:chunk + 500]), sib.c.state.in_(OPEN))
                        .order_by(sib.c.number)):
                    self.siblings[number] = (*self.siblings.get(number, ()), other)
        self.sender_open: dict[str, list[str]] = {}
        for email, number in s.execute(
                sa.select(con_t.c.email, inv_t.c.number).join(con_t, con_t.c.client_id == inv_t.c.client_id)
                .where(con_t.c.email.in_(senders), inv_t.c.state.in_(OPEN)).distinct()
                .order_by(con_t.c.email, inv_t.c.number)):
            self.sender_open.setdefault(email, []).append(number)
        self.contacts: dict[str, list[int]] = {}  # a bounced address -> the contacts that have it
        self.contact_open: dict[str, list[str]] = {}  # a bounced address -> the open invoices it is the contact of
        if failed:
            for contact_id, email, number, state in s.execute(
                    sa.select(con_t.c.id, con_t.c.email, inv_t.c.number, inv_t.c.state)
                    .outerjoin(inv_t, inv_t.c.contact_id == con_t.c.id)
                    .where(sa.func.lower(con_t.c.email).in_(list(set(failed))))
                    .order_by(con_t.c.email, inv_t.c.number)):
                key = email.lower()
                if contact_id not in self.contacts.setdefault(key, []):
                    self.contacts[key].append(contact_id)
                if number is not None and state in OPEN and number not in self.contact_open.setdefault(key, []):
                    self.contact_open[key].append(number)

    def bounced(self, u: Understood, m: Match) -> Match:
        """A bounce that does not carry our Message-ID: the open invoices of the contacts it names."""
        if m.sure and m.numbers:
            return m
        numbers = [n for a in u.failed for n in self.contact_open.get(a, ())]
        if not numbers:
            return m
        return Match(tuple(dict.fromkeys(numbers)), "bounce", True,
                     f"the server gave up on {', '.join(a for a in u.failed if a in self.contact_open)}, "
                     f"the contact of {', '.join(dict.fromkeys(numbers))}")

    def known(self, p: Parsed, numbers: _Numbers) -> Known:
        return Known(by_message_id=self.by_mid, by_token=self.by_token, by_normalised=numbers.by_normalised,
                     by_digits=numbers.by_digits, sender_open=tuple(self.sender_open.get(p.sender, ())),
                     siblings=self.siblings)


def _reprocessed(s: Connection, inbound_id: int, u: Understanding, m: Match) -> tuple[str, str]:
    """A message whose effects were applied before: never apply them twice. When it is understood
    as before, its status stays; otherwise a person compares the two readings."""
    old = s.execute(sa.select(in_t.c.kind, in_t.c.status, in_t.c.reason).where(in_t.c.id == inbound_id)).one()
    linked = sorted(set(s.execute(sa.select(inv_t.c.number).join(ev_t, ev_t.c.invoice_id == inv_t.c.id)
                                  .where(ev_t.c.inbound_id == inbound_id)).scalars()))
    if old.kind == u.kind.value and set(m.numbers) <= set(linked):
        return old.status, old.reason
    return "triage", (f"read again as {u.kind.value} for {', '.join(m.numbers) or 'no invoice'} "
                      f"(was {old.kind} for {', '.join(linked) or 'no invoice'}); the first reading's effects "
                      "stay: decide")


def policy(config: Config) -> Policy:
    p = config.pause
    return Policy(human_reply_days=p.human_reply_days, promise_grace_days=p.promise_grace_days,
                  payment_claim_days=p.payment_claim_days,
                  auto_apply_margin=config.understanding.auto_apply_margin, zone=config.zone)


def _held(inv: dict[str, Any]) -> Held:
    return Held(inv["number"], State(inv["state"]), inv["hold_until"])


class _Effects:
    """The effects of understood messages on their invoices, as events, per `[pause]`. Invoices are
    read once per batch and written once at the end, so two messages about one invoice see each other."""

    def __init__(self, s: Connection, config: Config, now: datetime, lookups: _Lookups) -> None:
        self.s, self.config, self.now, self.lookups = s, config, now, lookups
        self.policy = policy(config)
        self.invoices: dict[str, dict[str, Any]] = {}
        self.changed: dict[str, set[str]] = {}
        self.failing: dict[int, str] = {}  # contact id -> why it is failing
        self.events: list[dict[str, Any]] = []

    def load(self, numbers: Sequence[str]) -> list[dict[str, Any]]:
        """The invoices `numbers` (read from the store the first time the batch needs them)."""
        missing = list({n for n in numbers if n not in self.invoices})
        for chunk in range(0, len(missing), 500):
            for row in self.s.execute(sa.select(inv_t.c.id, inv_t.c.number, inv_t.c.state, inv_t.c.hold_until,
                                                inv_t.c.held_by, inv_t.c.contact_id)
                                      .where(inv_t.c.number.in_(missing[chunk:chunk + 500]))).mappings():
                self.invoices[row["number"]] = dict(row)
        return [self.invoices[n] for n in numbers if n in self.invoices]

    def _set(self, inv: dict[str, Any], **values: Any) -> None:
        inv.update(values)
        self.changed.setdefault(inv["number"], set()).update(values)

    def apply(self, message: Understood, u: Understanding, m: Match) -> tuple[str, str]:
        """The effects of `message`, understood as `u` and matched to `m`, as `rules.effects.decide`
        says. Returns its (status, reason)."""
        inbound_id, now = message.id, self.now
        # The contacts a bounce names, whichever invoices it was matched to (or none).
        named = [c for a in message.failed for c in self.lookups.contacts.get(a, ())] if u.kind is Kind.BOUNCE else []
        for contact_id in named:
            self.failing[contact_id] = f"delivery failure: the server gave up on {', '.join(message.failed)[:300]}"
        matched = self.load(m.numbers) if m.sure else []
        sender = message.parsed.sender if message.parsed is not None else ""
        client_open = [] if m.sure and m.numbers else self.load(self.lookups.sender_open.get(sender, []))
        decision = decide(u, m, [_held(i) for i in matched], [_held(i) for i in client_open], self.policy, now,
                          delayed_only=u.kind is Kind.BOUNCE and bool(message.delayed) and not message.failed)
        proposal = [c.removeprefix("proposes ") for c in u.cues if c.startswith("proposes ")]
        for e in decision.effects:
            inv = self.invoices[e.number]
            base = {"invoice_id": inv["id"], "at": now, "inbound_id": inbound_id}
            self.events.append({**base, "kind": e.event, "reason": e.reason[:500]})
            if e.hold_until is not None:
                new = max(e.hold_until, inv["hold_until"]) if inv["hold_until"] else e.hold_until
                self._set(inv, hold_until=new)
                self.events.append({**base, "kind": "paused", "reason": e.reason, "data": {"until": new.isoformat()}})
            if e.until_decided:
                if inv["held_by"] is None:
                    self._set(inv, held_by=inbound_id)
                self.events.append({**base, "kind": "paused", "reason": "until a person decides",
                                    "data": {"until_decided": True}})
            if e.state is not None:
                self._set(inv, state=e.state.value)
                if e.state is State.BOUNCED and not named:  # the bounce does not say which address failed
                    self.failing.setdefault(inv["contact_id"], "delivery failure reported by the recipient's server")
                elif e.state in (State.PLAN, State.DISPUTED):
                    self.events.append({**base, "kind": e.state.value, "reason": "until a person decides",
                                        "data": {"proposal": proposal} if proposal else {}})
        return decision.status.value, decision.reason

    def flush(self) -> None:
        """Write the batch's invoice changes, contact failures and events."""
        for column in ("hold_until", "state", "held_by"):
            rows = [{"v_id": inv["id"], "v": inv[column]} for n, inv in self.invoices.items()
                    if column in self.changed.get(n, ())]
            if rows:
                self.s.execute(sa.update(inv_t).where(inv_t.c.id == sa.bindparam("v_id"))
                               .values({column: sa.bindparam("v")}), rows)
        if self.failing:
            self.s.execute(sa.update(con_t).where(con_t.c.id == sa.bindparam("v_id")).values(
                failing=True, failure_reason=sa.bindparam("v_reason")),
                [{"v_id": c, "v_reason": why} for c, why in sorted(self.failing.items())])
        record_events(self.s, self.events)


def assign(engine: Engine, config: Config, now: datetime, inbound_id: int, numbers: Sequence[str], actor: str) -> str:
    """A person says which invoices a message concerns: its effects apply to them, as if it had been
    matched (`relance assign`, the triage UI). Refused for a message whose effects already applied."""
    numbers = list(dict.fromkeys(numbers))
    with engine.connect() as c:
        row = c.execute(sa.select(in_t.c.raw, in_t.c.status).where(in_t.c.id == inbound_id)).first()
        if row is None:
            raise NotFoundError(f"no message #{inbound_id} (see `relance messages`)")
        known = set(c.execute(sa.select(inv_t.c.number).where(inv_t.c.number.in_(numbers))).scalars())
        applied = set(c.execute(sa.select(inv_t.c.number).join(ev_t, ev_t.c.invoice_id == inv_t.c.id)
                                .where(ev_t.c.inbound_id == inbound_id, ev_t.c.kind.like("message_%"))).scalars())
    if missing := [n for n in numbers if n not in known]:
        raise NotFoundError(f"no invoice {', '.join(missing)} (see `relance status`)")
    if applied:
        raise RelanceError(f"message #{inbound_id} was already applied to {', '.join(sorted(applied))}: "
                           "change the invoices themselves (pause, resume, paid)")
    (u,) = understand_batch([(inbound_id, row.raw, False)], config.company.domain,
                            now.astimezone(config.zone).date(), learn.current(engine))
    if u.parsed is None or u.understanding is None:
        raise RelanceError(f"message #{inbound_id} cannot be read: {u.failure}")
    found = Match(tuple(numbers), "person", True, f"assigned by {actor} to {', '.join(numbers)}")
    with session(engine) as s:
        release_holds(s, inbound_id, now, actor)  # the holds on the client's invoices; the assigned ones decide anew
        effects = _Effects(s, config, now, _Lookups(s, [u.parsed], u.tokens, u.failed))
        status, reason = effects.apply(u, u.understanding, found)
        for inv in effects.load(numbers):
            effects.events.append({"invoice_id": inv["id"], "at": now, "inbound_id": inbound_id, "actor": actor,
                                   "kind": "message_assigned", "reason": found.reason})
        effects.flush()
        s.execute(sa.update(in_t).where(in_t.c.id == inbound_id).values(
            status=status, reason=_clean(f"{found.reason}; {reason}")[:1000], suggested="[]"))
    return f"#{inbound_id} {u.understanding.kind.value} -> {', '.join(numbers)}: {status}"


def label(engine: Engine, config: Config, now: datetime, inbound_id: int, kind: Kind, actor: str,
          until: date | None = None) -> str:
    """A person's reading of a message (`relance label`, the triage UI): its kind is set, what that
    kind does is applied to its invoices (those it was threaded to, else the ones suggested), the
    holds it put on them until a person decides are lifted, and it is kept as an example the
    classifier learns from (`relance learn`). A promise needs its date: the one read in the
    message, or `until`."""
    with engine.connect() as c:
        row = c.execute(sa.select(in_t.c.raw, in_t.c.kind, in_t.c.suggested).where(in_t.c.id == inbound_id)).first()
        if row is None:
            raise NotFoundError(f"no message #{inbound_id} (see `relance messages`)")
        linked = sorted(set(c.execute(sa.select(inv_t.c.number).join(ev_t, ev_t.c.invoice_id == inv_t.c.id).where(
            ev_t.c.inbound_id == inbound_id, ev_t.c.kind.like("message_%"))).scalars()))
    numbers = linked or json.loads(row.suggested or "[]")
    (u,) = understand_batch([(inbound_id, row.raw, False)], config.company.domain,
                            now.astimezone(config.zone).date(), learn.current(engine))
    if u.parsed is None or u.understanding is None:
        raise RelanceError(f"message #{inbound_id} cannot be read: {u.failure}")
    day = until or (u.understanding.date if u.understanding.kind is kind else None)
    if kind is Kind.PROMISE_TO_PAY and day is None and numbers:
        raise RelanceError(f"message #{inbound_id}: no date was read for this promise: add --until YYYY-MM-DD")
    person = Understanding(kind, Decimal(1), (f"labelled {kind.value} by {actor}",), date=day)
    done = ""
    with session(engine) as s:
        released = release_holds(s, inbound_id, now, actor)
        undone = {"payment_plan": "plan", "dispute": "disputed"}.get(row.kind or "")
        if undone and kind.value != row.kind and linked:  # the bot's reading set a state a person now undoes
            for invoice_id in s.execute(sa.select(inv_t.c.id).where(inv_t.c.number.in_(linked),
                                                                    inv_t.c.state == undone)).scalars():
                s.execute(sa.update(inv_t).where(inv_t.c.id == invoice_id).values(state="active"))
                record_events(s, [{"invoice_id": invoice_id, "at": now, "inbound_id": inbound_id, "actor": actor,
                                   "kind": "resumed", "reason": f"was {undone}; labelled {kind.value} by {actor}"}])
        # What the bot already applied for the same kind stays; a new kind applies what it does.
        if numbers and kind is not Kind.HUMAN_REPLY and not (row.kind == kind.value and linked):
            effects = _Effects(s, config, now, _Lookups(s, [u.parsed], u.tokens, u.failed))
            _, done = effects.apply(u, person, Match(tuple(numbers), "person", True,
                                                     f"labelled by {actor} for {', '.join(numbers)}"))
            effects.flush()
        s.execute(sa.update(in_t).where(in_t.c.id == inbound_id).values(
            kind=kind.value, confidence=Decimal(1), label=kind.value, labelled_by=actor, labelled_at=now,
            status="applied", suggested="[]", reason=_clean(f"labelled {kind.value} by {actor}")[:1000]))
    out = f"#{inbound_id} labelled {kind.value} (read as {row.kind})"
    if numbers:
        out += f" for {', '.join(numbers)}" + (f": {done}" if done else "")
    if released:
        out += f"; the ladder goes on for {', '.join(released)}"
    return out
