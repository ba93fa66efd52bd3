"""Reading stored messages in worker processes: a large backlog (a first sync, a busy mailbox,
`reprocess --all`) is parsed and understood by `imap.workers` processes while this one goes on
fetching and applying; a small one, or a machine that will not start processes, is read here."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot import learn
from bot.config import Config
from bot.models import Event, Inbound, table
from bot.store import inbound_raw
from bot.understand import Understood, first_line, understand_batch
from rules.intent import Model

in_t, ev_t = table(Inbound), table(Event)
log = logging.getLogger("relance")
PARALLEL_FROM = 1000  # messages in one pass; below this, worker processes cost more than they save


def understood_batches(engine: Engine, config: Config, now: datetime, feed: Iterator[list[int]],
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
                    pool = stack.enter_context(ProcessPoolExecutor(
                        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_hold_model,
                        initargs=(_model_file(stack, model),)))
                except (OSError, RuntimeError) as e:
                    broken = _pool_failed(e)
            future = None
            if pool is not None and not broken:
                try:
                    future = pool.submit(_understand_in_worker, _read(engine, chunk), domain, today)
                except (OSError, BrokenProcessPool, RuntimeError) as e:
                    broken = _pool_failed(e)
            pending.append((chunk, future))
            while pending and (pending[0][1] is None or pending[0][1].done() or len(pending) > 2 * workers):
                done, broken = _result(engine, *pending.popleft(), domain, today, model, broken)
                yield done
        while pending:
            done, broken = _result(engine, *pending.popleft(), domain, today, model, broken)
            yield done


_IN_WORKER: dict[str, Model] = {}  # the model a worker process was started with


def _model_file(stack: contextlib.ExitStack, model: Model) -> str:
    """The model, pickled into a private file the workers read at their start (removed with the pool).
    Handed to a starting process, its 2 MB would keep this one waiting on the pipe until the new
    process had imported everything: 1.6 s a worker, during which nothing was fetched."""
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="relance-model-"))
    path = os.path.join(folder, "model.pickle")
    with open(path, "wb") as f:
        pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _hold_model(path: str) -> None:
    """A worker's start: the model comes once, not with every batch."""
    with open(path, "rb") as f:
        _IN_WORKER["model"] = pickle.load(f)  # noqa: S301 - written by the parent process a moment ago


def _understand_in_worker(messages: list[tuple[int, bytes, bool]], domain: str, today: date) -> list[Understood]:
    return understand_batch(messages, domain, today, _IN_WORKER["model"])


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
        raws = inbound_raw(c, list(ids))
        before = set(c.execute(sa.select(ev_t.c.inbound_id).where(ev_t.c.inbound_id.in_(list(ids)))).scalars())
    return [(i, raws[i], i in before) for i in ids if i in raws]
