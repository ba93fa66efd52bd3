"""The inbound side: store every new message of the watched folders, then understand it.

Storing and understanding are separate steps. `store_new` writes the raw bytes and advances the
folder's last UID in one transaction per batch, so a crash between fetch and commit re-fetches
the batch and a restart resumes exactly; nothing is parsed before it is stored. `process` (and
`sync`, which overlaps fetching with it) has each stored message read (bot/pool.py,
bot/understand.py) then threaded, decided and applied (bot/apply.py, rules/effects.py) in a
transaction per batch; a message that breaks the parser is kept, marked `quarantined` with the
reason, and the next one goes on. `reprocess` runs stored messages through the pipeline again.

A message's life (`inbound.status`): `new` once stored; `applied` when the bot settled it alone
(or a person closed it), `triage` while it waits for a person (its holds on the client's
invoices with it), `quarantined` when it could not be read (`reprocess` tries it again)."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot.apply import Numbers, apply_batch
from bot.config import Config
from bot.errors import FolderError, MailboxError
from bot.logs import Line
from bot.mailbox import Fetched, MailSource
from bot.models import Client, Contact, Inbound, InboundRaw, Invoice, Mailbox, table
from bot.pool import understood_batches
from bot.reasons import fit
from bot.store import db_text, session
from bot.understand import first_line

in_t, mb_t, inv_t, cli_t, con_t = table(Inbound), table(Mailbox), table(Invoice), table(Client), table(Contact)
raw_t = table(InboundRaw)
log = logging.getLogger("relance")
BATCH = 200
# Bytes fetched at once: a batch of 200 messages of 43 MB each would be 8.6 GB. Large messages come
# one at a time; small ones still 200 a fetch.
BATCH_BYTES = 16 * 2**20

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
        # another pass may create it first: the same row
        with contextlib.suppress(sa.exc.IntegrityError), session(engine) as s:
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
        batch = source.fetch_after(last_uid, BATCH, BATCH_BYTES)
        if not batch:
            if uidnext - 1 > last_uid:  # the rest were expunged before we saw them: do not wait for them
                with session(engine) as s:
                    s.execute(sa.update(mb_t).where(mb_t.c.folder == folder).values(last_uid=uidnext - 1))
            return
        try:
            ids, stored = _store(engine, folder, uidvalidity, batch, now, report)
        except sa.exc.IntegrityError:
            # Another pass (another instance reading this mailbox) stored some of them first: what
            # it stored is stored; the rest are stored now.
            ids, stored = _store(engine, folder, uidvalidity, batch, now, report)
        last_uid = batch[-1].uid
        report.stored += stored
        del batch  # stored: its bytes are read again from the store when parsed, not held meanwhile
        if ids:
            yield sorted(ids)


def _store(engine: Engine, folder: str, uidvalidity: int, batch: Sequence[Fetched], now: datetime,
           report: SyncReport) -> tuple[list[int], int]:
    """Store one fetched batch in one transaction, leaving out what is stored already (the same bytes,
    the same message renumbered, or the same UID stored by another pass); returns the new ids."""
    dupes = 0
    with session(engine) as s:
        hashes = [hashlib.sha256(f.raw).hexdigest() for f in batch]
        mids = [db_text(_header(f.raw, b"message-id"))[:250] for f in batch]
        known = set(s.execute(sa.select(in_t.c.content_hash).where(in_t.c.content_hash.in_(hashes))).scalars())
        taken = set(s.execute(sa.select(in_t.c.uid).where(
            in_t.c.folder == folder, in_t.c.uidvalidity == uidvalidity,
            in_t.c.uid.in_([f.uid for f in batch]))).scalars())
        # Renumbered by the server (an older UIDVALIDITY of this folder): the same Message-ID is the
        # same message, even if the server rewrote a header on the way.
        renumbered = set(s.execute(sa.select(in_t.c.message_id).where(
            in_t.c.folder == folder, in_t.c.uidvalidity != uidvalidity,
            in_t.c.message_id.in_([m for m in mids if m]))).scalars())
        rows, raws = [], []
        for f, h, mid in zip(batch, hashes, mids, strict=True):
            if h in known or mid in renumbered or f.uid in taken:
                dupes += 1
                continue
            known.add(h)
            rows.append({"folder": folder, "uidvalidity": uidvalidity, "uid": f.uid,
                         "content_hash": h, "stored_at": now, "received_at": f.internaldate,
                         "message_id": mid, "status": "new"})
            raws.append(f.raw)
        ids = list(s.execute(sa.insert(in_t).returning(in_t.c.id, sort_by_parameter_order=True), rows).scalars()
                   ) if rows else []
        _store_raw(s, list(zip(ids, raws, strict=True)))
        top = batch[-1].uid  # never back: another pass may be further on
        s.execute(sa.update(mb_t).where(mb_t.c.folder == folder, mb_t.c.last_uid < top).values(last_uid=top))
    report.duplicates += dupes
    return ids, len(rows)


BLOB_CHUNK = 1 << 20


def _store_raw(s: Connection, raws: list[tuple[int, bytes]]) -> None:
    """The messages' bytes. On SQLite a large one is written a MB at a time into a blob made to its
    size: bound to a statement, SQLite copies it and keeps the copy as long as the statement stays
    in the connection's cache (a 40 MB message held 40 MB more until the next one came)."""
    large = s.dialect.name == "sqlite"
    small = [{"inbound_id": i, "raw": r} for i, r in raws if not large or len(r) <= BLOB_CHUNK]
    if small:
        s.execute(sa.insert(raw_t), small)
    dbapi: Any = s.connection.dbapi_connection
    for i, r in raws:
        if large and len(r) > BLOB_CHUNK:
            s.execute(sa.insert(raw_t).values(inbound_id=i, raw=sa.func.zeroblob(len(r))))
            with dbapi.blobopen("inbound_raw", "raw", i) as blob:
                view = memoryview(r)
                for start in range(0, len(r), BLOB_CHUNK):
                    blob.write(view[start:start + BLOB_CHUNK])


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
         stop: threading.Event | None = None, folders: Sequence[str] | None = None) -> list[str]:
    """One pass over the watched folders: store what is new, then understand and apply it. The two
    overlap: while worker processes read a stored batch, this process fetches and stores the next.
    Messages left `new` by an earlier pass (a crash, an upgrade) go first. When `stop` is set, no
    further batch is fetched; what is stored and in flight is finished. `folders` (default: all
    watched ones) are those this instance holds (bot/watcher.py). Returns a line a message."""

    def feed() -> Iterator[list[int]]:
        with engine.connect() as c:
            left = list(c.execute(sa.select(in_t.c.id).where(in_t.c.status == "new").order_by(in_t.c.id)).scalars())
        report.expected += len(left)
        yield from (left[i:i + BATCH] for i in range(0, len(left), BATCH))
        for folder in config.imap.folders if folders is None else folders:
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
                                 lambda: len(todo), claim=ids is None)


def _understand_and_apply(engine: Engine, config: Config, now: datetime, feed: Iterator[list[int]],
                          expected: Callable[[], int], claim: bool = True) -> list[str]:
    """Messages go through in batches: parsed and understood outside any transaction, then matched and
    applied in one transaction per batch. A message that cannot be read or understood is
    quarantined on its own; when a batch's writes fail, its messages are applied one at a time, so
    one bad message never holds back the others."""
    lines: list[str] = []
    numbers: Numbers | None = None
    for understood in understood_batches(engine, config, now, feed, expected):
        if numbers is None:
            with engine.connect() as c:
                numbers = Numbers(list(c.execute(sa.select(inv_t.c.number)).scalars()),
                                  dict(c.execute(sa.select(cli_t.c.id, cli_t.c.name)).all()),
                                  [(i, e) for i, e in c.execute(sa.select(con_t.c.client_id, con_t.c.email))])
        try:
            lines += apply_batch(engine, config, now, understood, numbers, claim)
        except Exception:
            for one in understood:
                try:
                    lines += apply_batch(engine, config, now, [one], numbers, claim)
                except Exception as e:
                    lines.append(_quarantine(engine, one.id, f"could not be processed: {first_line(e)}", claim))
    return lines


def _quarantine(engine: Engine, inbound_id: int, reason: str, claim: bool = False) -> str:
    """Keep a message that could not be processed, with why; with `claim`, only if no other pass
    has applied it meanwhile."""
    with session(engine) as s:
        q = sa.update(in_t).where(in_t.c.id == inbound_id)
        s.execute((q.where(in_t.c.status == "new") if claim else q).values(status="quarantined",
                                                                          reason=fit(db_text(reason))))
    return Line(f"quarantined  #{inbound_id}: {reason}", inbound_id=inbound_id, status="quarantined")
