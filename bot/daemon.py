"""`relance run`: the long-running process: the scheduler (a pass every `schedule.tick_minutes`)
and the IMAP watcher (bot/watcher.py, unless `imap.folders` is empty) in one TaskGroup.

Shutdown, as uvicorn does it: the first SIGTERM or SIGINT stops new work and lets the message in
flight finish (the rest stays pending for the next start); a second one exits at once (a message
caught mid-send is then resolved as `uncertain` at the next start, see bot/outbox.py).

A server going away never ends it: the SMTP server's absence stops a pass (the next comes 30 s
later, backing off); the IMAP watcher reconnects on its own (bot/watcher.py); while the database
does not answer, the scheduler says so in one line a try and tries again after 5 s, doubling up
to the tick, then settles what the interrupted pass had claimed (`Outbox.resolve_own`)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine, make_url

from bot import health, learn
from bot.config import Config
from bot.errors import ConfigError, ConnectionFailedError, RelanceError
from bot.mailer import SmtpMailer
from bot.metrics import MetricsServer
from bot.outbox import Outbox
from bot.render import Renderer, check_templates
from bot.store import TRANSIENT_DB, unreachable
from bot.tick import tick
from bot.tokens import credential
from bot.watcher import Watcher

log = logging.getLogger("relance")


@contextlib.contextmanager
def one_per_sqlite_file(url: str) -> Iterator[None]:
    """A second `relance run` on the same SQLite file stops with a clear message: SQLite has one
    writer at a time, so two daemons would only queue behind each other (several instances share
    the work on PostgreSQL). The lock is the kernel's (flock on `<file>.run.lock`): a daemon killed
    by SIGKILL leaves nothing to clean up."""
    path = make_url(url).database if url.startswith("sqlite") else None
    if not path or path == ":memory:":
        yield
        return
    lock = Path(f"{path}.run.lock")
    try:
        f = lock.open("a+")
    except OSError as e:
        raise RelanceError(f"{lock}: cannot create the daemon's lock file beside the database: {e.strerror}") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RelanceError(f"{path}: another `relance run` uses this database ({holder}); one daemon per "
                               "SQLite file (several instances share the work on PostgreSQL)") from None
        f.truncate(0)
        f.write(f"pid {os.getpid()}, since {datetime.now(UTC).isoformat(timespec='seconds')}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Daemon:
    def __init__(self, engine: Engine, config: Config, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 reload: Callable[[], Config] | None = None) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self.stop = asyncio.Event()
        self.renderer = Renderer.from_config(config)
        self.reload = reload  # reads the configuration again (SIGHUP)
        self._watcher: Watcher | None = None

    def _on_hangup(self) -> None:
        """SIGHUP: read the configuration and templates again. A new configuration that does not load,
        or whose templates do not render, is refused with its reason, and the running one stays."""
        if self.reload is None:
            return
        try:
            new = self.reload()
            renderer = Renderer.from_config(new)
            problems = check_templates(new, renderer, self.clock().astimezone(new.zone).date())
        except (RelanceError, ConfigError, OSError) as e:
            problems = [str(e)]
        if problems:
            log.error("SIGHUP: configuration not reloaded, the running one stays: %s", problems[0])
            return
        later = [name for name, old, now in (("database", self.config.database.url, new.database.url),
                                             ("imap.folders", self.config.imap.folders, new.imap.folders),
                                             ("imap.host", self.config.imap.host, new.imap.host),
                                             ("daemon.metrics_port", self.config.daemon.metrics_port,
                                              new.daemon.metrics_port)) if old != now]
        self.config, self.renderer = new, renderer
        if self._watcher is not None:
            self._watcher.config = new
        log.info("SIGHUP: configuration and templates reloaded from %s%s", new.source,
                 f" ({', '.join(later)}: at the next start)" if later else "")

    def _on_signal(self, name: str) -> None:
        if self.stop.is_set():
            log.warning("second %s: exiting now", name)
            os._exit(1)
        log.info("%s: finishing the message in flight, then stopping (again to force)", name)
        self.stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        log.info("relance running: a scheduling pass every %d min", self.config.schedule.tick_minutes)
        port = self.config.daemon.metrics_port
        metrics = MetricsServer(self.engine, port).start() if port else None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.scheduler())
                if self.config.imap.folders:
                    tg.create_task(self.watcher())
        finally:
            if metrics is not None:
                metrics.close()
        log.info("relance stopped")

    async def watcher(self) -> None:
        """The IMAP watcher in its worker thread, stopped through a threading.Event."""
        stop = threading.Event()
        watcher = self._watcher = Watcher(self.engine, self.config, stop, self.clock)
        thread = asyncio.create_task(asyncio.to_thread(watcher.run))
        await self.stop.wait()
        stop.set()
        await thread

    async def _beat(self, component: str, error: str | None = None) -> None:
        await asyncio.to_thread(health.beat, self.engine, component, datetime.now(UTC), error)

    def _resolve_own(self) -> None:
        now = self.clock()
        outbox = Outbox(self.engine, self.config, self.renderer, now, datetime.now(UTC))
        for mid in outbox.resolve_own():
            log.warning("%s: left 'sending' when the database went away; counted as sent", mid)

    async def scheduler(self) -> None:
        unavailable = 0  # passes in a row that found the SMTP server unavailable
        database = 0  # passes in a row that found the database unreachable
        while not self.stop.is_set():
            try:
                if database:  # the last pass lost the database mid-way: settle what it left
                    await asyncio.to_thread(self._resolve_own)
                password = credential(self.config, "smtp")  # as the configuration says now
                report = await tick(self.engine, self.config, SmtpMailer(self.config.smtp, password), self.clock(),
                                    datetime.now(UTC), renderer=self.renderer, stop=self.stop)
            except ConnectionFailedError as e:
                unavailable, database = unavailable + 1, 0
                log.error("scheduling pass failed: %s", e)  # noqa: TRY400 - the reason, not a traceback
                await self._beat("scheduler")
                await self._beat("smtp", str(e))
            except TRANSIENT_DB as e:  # the database away: wait for it, and try again soon
                database += 1
                pause = next_try_seconds(self.config.schedule.tick_minutes, database)
                log.error("scheduling pass: waiting for the database (%s); next try in %.0f s",  # noqa: TRY400
                          unreachable(e), pause)
                await self._beat("scheduler", f"the database is unreachable: {unreachable(e)}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=pause)
                continue
            except RelanceError as e:  # a template broken...: try again at the next pass
                database = 0
                log.error("scheduling pass failed: %s", e)  # noqa: TRY400
                await self._beat("scheduler", str(e))
            else:
                if database:
                    log.info("scheduling pass: the database answers again")
                database = 0
                unavailable = unavailable + 1 if report.server_unavailable else 0
                await self._beat("scheduler")
                # A pass that met no SMTP failure (it sent, or had nothing to send) ends one.
                await self._beat("smtp", report.aborted if report.server_unavailable else None)
                for line in report.sent:
                    log.info("sent %s", line)
                for line in report.failed + report.deferred + report.uncertain:
                    log.warning("%s", line)
                if report.aborted:
                    log.warning("pass stopped: %s", report.aborted)
                if report.digest:
                    log.info("%s", report.digest)
            try:  # what people labelled today teaches the classifier tonight
                refitted = await asyncio.to_thread(learn.refit_if_due, self.engine, self.config.zone, self.clock())
            except Exception as e:  # learning is a bonus: the shipped or last model goes on serving
                log.error("nightly refit failed: %s", e)  # noqa: TRY400
            else:
                if refitted:
                    log.info("%s", refitted)
            pause = next_pass_seconds(self.config.schedule.tick_minutes, unavailable)
            if unavailable:
                log.warning("SMTP server unavailable %d pass(es) in a row: next pass in %.0f s", unavailable, pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=pause)


SMTP_RETRY = 30.0  # seconds before the first pass again after the SMTP server was unavailable


def next_pass_seconds(tick_minutes: int, unavailable: int) -> float:
    """Seconds to the next pass: the tick; after `unavailable` passes in a row found the SMTP
    server unavailable, 30 s, doubled each time, at most eight ticks. A relay restarted or a
    network back sends the waiting reminders within a minute, not a tick later (15 min by
    default); a server that keeps answering 421 is asking for room, and is left alone longer each
    time (two hours at most with the default tick). Such a pass costs one connection attempt."""
    if not unavailable:
        return tick_minutes * 60.0
    return min(SMTP_RETRY * (1 << min(unavailable - 1, 16)), tick_minutes * 60.0 * 8)


DATABASE_RETRY = 5.0  # seconds before the first try again after the database did not answer


def next_try_seconds(tick_minutes: int, failures: int) -> float:
    """Seconds to the next try after `failures` passes in a row found the database unreachable:
    5 s, doubled each time, at most the tick. A database back after a restart or a fail-over is
    used within seconds, not a tick later (up to `schedule.tick_minutes`, 15 by default)."""
    return min(DATABASE_RETRY * (1 << min(failures - 1, 16)), tick_minutes * 60.0)
