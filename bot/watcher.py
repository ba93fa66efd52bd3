"""The IMAP watcher of `relance run`: stores and understands new mail as it arrives.

imapclient is blocking, so the whole watch loop runs in one worker thread, the one place the
daemon crosses into threads for mail; it stops when `stop` (a threading.Event) is set, within
about a second. Network or server errors reconnect with exponential backoff and jitter, up to
five minutes between tries. IDLE watches the first folder; the others are polled each time the
watcher wakes up (at least every `imap.idle_seconds`)."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import inbound
from bot.config import Config
from bot.errors import RelanceError
from bot.mailbox import ImapSource
from bot.models import Mailbox, table

mb_t = table(Mailbox)

log = logging.getLogger("relance")
MAX_BACKOFF = 300.0


class Watcher:
    def __init__(self, engine: Engine, config: Config, stop: threading.Event,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.config = config
        self.stop = stop
        self.clock = clock
        self.passes = 0  # completed passes, for tests and logs

    def run(self) -> None:
        """The watch loop (blocking: run it in a thread)."""
        cfg = self.config
        backoff = 1.0
        source: ImapSource | None = None
        while not self.stop.is_set():
            try:
                if source is None:
                    source = ImapSource(cfg.imap, cfg.imap.password(cfg.source))
                self.one_pass(source)
                backoff = 1.0
                source.select(cfg.imap.folders[0])
                if source.uidnext > self._last_uid(cfg.imap.folders[0]) + 1:
                    continue  # arrived between our fetch and this SELECT: IDLE would not announce it
                source.wait(cfg.imap.idle_seconds if len(cfg.imap.folders) == 1
                            else min(cfg.imap.idle_seconds, cfg.imap.poll_seconds), self.stop)
            except RelanceError as e:
                log.warning("mailbox: %s; retrying in %.0f s", e, backoff)
                if source is not None:
                    source.close()
                    source = None
                self.stop.wait(backoff * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto
                backoff = min(backoff * 2, MAX_BACKOFF)
        if source is not None:
            source.close()

    def _last_uid(self, folder: str) -> int:
        with self.engine.connect() as c:
            last = c.execute(sa.select(mb_t.c.last_uid).where(mb_t.c.folder == folder)).scalar_one_or_none()
        return int(last or 0)

    def one_pass(self, source: ImapSource) -> None:
        report = inbound.SyncReport()
        now = self.clock()
        for line in inbound.sync(self.engine, source, self.config, now, report, self.stop):
            log.info("mail %s", line)
        moved = inbound.move_handled(self.engine, source, self.config.imap.move_handled_to, now)
        if moved:
            log.info("mail: %d handled message(s) moved to %s", moved, self.config.imap.move_handled_to)
        self.passes += 1
