"""Preparing reminders ahead of their sending: rendering (Jinja2, babel) and composing (MIME) cost
more than the SMTP exchange itself, so they leave the send path.

The outbox's pending messages are taken a chunk at a time (`Outbox.take`), rendered with their
invoices read once per chunk (`Outbox.prepare`) and stored `prepared` (`Outbox.store_prepared`),
a few chunks ahead of the sending loop. A large batch (PARALLEL_FROM messages waiting) is rendered
in a worker process while this one sends; when the worker lags, or for a few messages, a chunk is
rendered here. Where a worker process cannot be had (limits, a worker killed), everything is
rendered here: slower, the same messages."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from bot.config import Config
from bot.outbox import Outbox, Prepared
from bot.render import Renderer
from bot.store import make_engine

log = logging.getLogger("relance")
PARALLEL_FROM = 1000  # messages waiting; below this, a worker process costs more than it saves
CHUNK = 200  # messages rendered together (their invoices read in three queries)
AHEAD = 2  # chunks given to the worker ahead of the sending loop


class Preparer:
    """Keeps prepared messages ahead of `outbox`'s sending loop. Use as a context manager."""

    def __init__(self, outbox: Outbox, waiting: int, chunk: int = CHUNK, parallel_from: int = PARALLEL_FROM) -> None:
        self.outbox = outbox
        self.chunk = chunk
        self.in_worker: deque[tuple[list[int], Future[list[Prepared | int]]]] = deque()
        self.pool: ProcessPoolExecutor | None = None
        self.exhausted = False  # nothing was pending at the last look
        self.rendered_in_worker = 0
        if waiting >= parallel_from:
            try:  # spawn, not fork: the daemon has threads (the watcher, asyncio's executor) fork would copy
                url = outbox.engine.url.render_as_string(hide_password=False)
                self.pool = ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                    initargs=(url, outbox.config, outbox.now, outbox.wall_now, outbox.instance))
                self.pool.submit(_prepare_in_worker, [])  # the process starts now, not at the first chunk
            except (OSError, RuntimeError) as e:
                _pool_failed(e)

    def __enter__(self) -> Preparer:
        return self

    def __exit__(self, *_: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def feed(self) -> None:
        """Keep the worker AHEAD chunks ahead, and store what it has finished (without waiting)."""
        while self.in_worker and self.in_worker[0][1].done():
            self._store(*self.in_worker.popleft())
        while self.pool is not None and len(self.in_worker) < AHEAD and not self.exhausted:
            ids = self._take()
            if not ids:
                break
            try:
                self.in_worker.append((ids, self.pool.submit(_prepare_in_worker, ids)))
            except (OSError, BrokenProcessPool, RuntimeError) as e:
                self._broken(e)
                self.outbox.store_prepared(self.outbox.prepare(ids))

    async def more(self) -> bool:
        """Nothing is prepared: get the next chunk ready (the worker's, or one rendered here when the
        worker has none ready). False when nothing is left to prepare."""
        if self.in_worker and not self.in_worker[0][1].done() and not self.exhausted:
            ids = self._take()  # the worker lags: this process renders a chunk too
            if ids:
                self.outbox.store_prepared(self.outbox.prepare(ids))
                return True
        if self.in_worker:
            ids, future = self.in_worker.popleft()
            await asyncio.wait([asyncio.wrap_future(future)])
            self._store(ids, future)
            return True
        ids = self._take()
        if not ids:
            return False
        self.outbox.store_prepared(self.outbox.prepare(ids))
        return True

    def _take(self) -> list[int]:
        ids = self.outbox.take(self.chunk)
        self.exhausted = not ids
        return ids

    def _store(self, ids: list[int], future: Future[list[Prepared | int]]) -> None:
        try:
            items = future.result()
            self.rendered_in_worker += len(items)
        except (OSError, BrokenProcessPool) as e:
            self._broken(e)
            items = self.outbox.prepare(ids)
        except Exception as e:  # this chunk could not come back (a pickling error...): the pool is fine
            log.warning("outbox: a worker could not prepare messages #%d-#%d (%s); preparing them here",
                        ids[0], ids[-1], e)
            items = self.outbox.prepare(ids)
        self.outbox.store_prepared(items)

    def _broken(self, e: BaseException) -> None:
        _pool_failed(e)
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


_IN_WORKER: dict[str, Outbox] = {}  # the outbox a worker process renders for


def _start_worker(url: str, config: Config, now: datetime, wall_now: datetime, instance: str) -> None:
    """A worker's start: its own engine (on the sending one's database) and renderer, once for the batch."""
    engine = make_engine(url)
    _IN_WORKER["outbox"] = Outbox(engine, config, Renderer.from_config(config), now, wall_now, instance=instance)


def _prepare_in_worker(ids: list[int]) -> list[Prepared | int]:
    return _IN_WORKER["outbox"].prepare(ids)


def _pool_failed(e: BaseException) -> None:
    log.warning("outbox: rendering in a worker process failed (%s); rendering in this process", e)
