"""The IMAP watcher of `relance run`: stores and understands new mail as it arrives.

imapclient is blocking, so the watcher runs in threads, the one place the daemon crosses into
threads for mail: one thread does the passes (store, understand, apply, move) on its own
connection; each watched folder has a thread of its own holding an IMAP IDLE on it (IDLE watches
one folder per connection), which wakes the passes when the server announces new mail. Where the
server has no IDLE, that thread wakes them every `imap.poll_seconds` instead. IDLE is renewed
every `imap.idle_seconds`, and a pass runs at least that often even if no announcement came.

Everything stops when `stop` (a threading.Event) is set, within about a second. Network or
server errors reconnect with exponential backoff and jitter, up to five minutes between tries,
each thread on its own: a folder that cannot be watched does not stop the others."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot import health, inbound, logs
from bot.config import Config
from bot.errors import RelanceError
from bot.mailbox import ImapSource
from bot.store import TRANSIENT_DB, unreachable
from bot.tokens import credential

log = logging.getLogger("relance")
MAX_BACKOFF = 300.0
DATABASE_BACKOFF = 10.0  # at most this long between tries while the database does not answer
STALE_AFTER = 60.0  # seconds unused after which the passes' connection is opened afresh (NAT, firewalls)
LEASE_SECONDS = 10.0  # how often an instance tries to take the folders no instance holds


class FolderLeases:
    """Which watched folders this instance reads. On PostgreSQL, where several instances share the
    work, each folder is held by one instance at a time through a session advisory lock on a
    connection kept for it: when the holder dies, PostgreSQL drops its connection and the lock, and
    another instance takes the folder at its next try (every LEASE_SECONDS). Elsewhere (SQLite, one
    daemon per file) this instance reads every folder."""

    def __init__(self, engine: Engine, folders: Sequence[str]) -> None:
        self.engine, self.folders = engine, list(folders)
        self.shared = engine.dialect.name == "postgresql"
        self.conn: Connection | None = None
        self.held: set[str] = set()

    def refresh(self) -> list[str]:
        """Take what no instance holds; return the folders this instance holds, in config order."""
        if not self.shared:
            return self.folders
        try:
            if self.conn is None:
                self.conn, self.held = self.engine.connect(), set()
            else:
                self.conn.execute(sa.text("SELECT 1"))  # a lock connection dropped took its locks: notice it
            for folder in self.folders:
                if folder not in self.held and self.conn.execute(
                        sa.select(sa.func.pg_try_advisory_lock(_key(folder)))).scalar():
                    self.held.add(folder)
                    log.info("mail: this instance now reads %s", folder)
            self.conn.commit()  # session locks outlive the transaction; no transaction stays open
        except sa.exc.DBAPIError:
            self.close()  # the locks went with the connection; the next try takes them again
            raise
        return [f for f in self.folders if f in self.held]

    @property
    def complete(self) -> bool:
        return not self.shared or len(self.held) == len(self.folders)

    def close(self) -> None:
        """Let the folders go: the connection is discarded, not pooled, so its session locks end with it."""
        if self.conn is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self.conn.invalidate()
                self.conn.close()
        self.conn, self.held = None, set()


def _key(folder: str) -> int:
    """The advisory lock's key for a folder: 64 bits of its name's digest, signed as PostgreSQL's bigint."""
    return int.from_bytes(hashlib.sha256(f"relance folder {folder}".encode()).digest()[:8], "big", signed=True)


class Watcher:
    def __init__(self, engine: Engine, config: Config, stop: threading.Event,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.config = config
        self.stop = stop
        self.clock = clock
        self.passes = 0  # completed passes, for tests and logs
        self.wake = threading.Event()  # set by a folder's IDLE thread: something arrived
        self.leases = FolderLeases(engine, config.imap.folders)

    def run(self) -> None:
        """The passes, and the folders' IDLE threads (blocking: run it in a thread)."""
        idlers = [threading.Thread(target=self._watch, args=(folder,), name=f"relance-idle-{folder}", daemon=True)
                  for folder in self.config.imap.folders]
        for t in idlers:
            t.start()
        try:
            self._passes()
        finally:
            self.leases.close()
            for t in idlers:
                t.join(timeout=20)

    def _passes(self) -> None:
        backoff = 1.0
        source: ImapSource | None = None
        used = time.monotonic()
        while not self.stop.is_set():
            cfg = self.config  # as a SIGHUP left it
            try:
                if source is not None and time.monotonic() - used > STALE_AFTER:
                    source.close()  # a connection left unused this long may have been dropped on the way
                    source = None
                if source is None:
                    source = ImapSource(cfg.imap, credential(cfg, "imap"))
                self.wake.clear()  # what arrives from now on wakes the next pass
                self.one_pass(source, self.leases.refresh())
                used = time.monotonic()
                backoff = 1.0
                deadline = time.monotonic() + cfg.imap.idle_seconds
                retake = time.monotonic() + LEASE_SECONDS
                while not self.stop.is_set() and not self.wake.is_set() and time.monotonic() < deadline:
                    self.wake.wait(1.0)
                    if not self.leases.complete and time.monotonic() >= retake:
                        retake, before = time.monotonic() + LEASE_SECONDS, len(self.leases.held)
                        if len(self.leases.refresh()) > before:  # took over a folder: read it now
                            self.wake.set()
            except (RelanceError, *TRANSIENT_DB) as e:  # the mail server, or the database, is away for now
                backoff = self._failed(e, source, backoff, "")
                source = None
        if source is not None:
            source.close()

    def _failed(self, e: Exception, source: ImapSource | None, backoff: float, where: str) -> float:
        """After a network or server error: log it, drop the connection, wait `backoff` seconds with
        jitter (or until stopped); returns the next, doubled, wait: at most five minutes for the
        mail server, DATABASE_BACKOFF for the database (a reconnection costs it little, and the
        mail waits for it)."""
        if isinstance(e, TRANSIENT_DB):
            why, most = f"waiting for the database ({unreachable(e)})", DATABASE_BACKOFF
        else:
            why, most = str(e).splitlines()[0] if str(e) else repr(e), MAX_BACKOFF
        backoff = min(backoff, most)
        log.warning("mail: %s%s; retrying in %.0f s", where, why, backoff)
        health.beat(self.engine, "imap", datetime.now(UTC), f"{where}{why}")
        if source is not None:
            source.close()
        self.stop.wait(backoff * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto
        return min(backoff * 2, most)

    def _watch(self, folder: str) -> None:
        """Hold an IDLE on `folder` and wake the passes when mail arrives; reconnect on errors."""
        backoff = 1.0
        source: ImapSource | None = None
        while not self.stop.is_set():
            cfg = self.config  # as a SIGHUP left it
            try:
                if source is None:
                    source = ImapSource(cfg.imap, credential(cfg, "imap"))
                    source.select(folder)
                    self.wake.set()  # what arrived before this IDLE began is for the next pass
                if not source.can_idle():
                    self.stop.wait(cfg.imap.poll_seconds)
                    self.wake.set()
                    continue
                if source.wait(cfg.imap.idle_seconds, self.stop):
                    self.wake.set()
                backoff = 1.0
            except RelanceError as e:
                backoff = self._failed(e, source, backoff, f"watching {folder}: ")
                source = None
        if source is not None:
            source.close()

    def one_pass(self, source: ImapSource, folders: Sequence[str] | None = None) -> None:
        report = inbound.SyncReport()
        now = self.clock()
        for line in inbound.sync(self.engine, source, self.config, now, report, self.stop, folders):
            log.info("mail %s", line, extra=logs.fields(line))
        moved = inbound.move_handled(self.engine, source, self.config.imap.move_handled_to, now)
        if moved:
            log.info("mail: %d handled message(s) moved to %s", moved, self.config.imap.move_handled_to)
        health.beat(self.engine, "imap", datetime.now(UTC))
        self.passes += 1
