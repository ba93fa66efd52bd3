"""One scheduling pass: plan with the rules, queue in the outbox, deliver over one connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal

from sqlalchemy.engine import Engine

from bot import digest, dryrun, instalments, store, views
from bot.config import Config
from bot.errors import (
    ConnectionFailedError,
    MessageDataError,
    PermanentDeliveryError,
    ServerUnavailableError,
    TransientDeliveryError,
)
from bot.mailer import Mailer, UncertainDeliveryError
from bot.outbox import Group, Outbox, Prepared
from bot.prepare import PARALLEL_FROM, Preparer
from bot.render import Renderer
from bot.views import InvoiceRow
from rules.penalties import ContractRateTooLowError, MissingRateError, compute
from rules.schedule import plan, priority_key


@dataclass(frozen=True)
class Planned:
    group: Group
    stage: str
    amount_due: str
    client: str
    problem: str = ""  # why it would fail if sent now (a dry run says so, as simulate does)


@dataclass
class TickReport:
    planned: list[Planned] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # lines for the user
    failed: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)
    cancelled: int = 0
    aborted: str = ""  # why the batch stopped early, if it did
    server_unavailable: bool = False  # it stopped because the server is (421, connection lost): back off
    digest: str = ""  # what became of today's digest to the operator, if this tick was its moment
    window_opens: datetime | None = None  # a dry run outside the sending window: when it next opens...
    then: list[Planned] = field(default_factory=list)  # ... and what would go out then
    # A dry run: replies and instalment reminders waiting in the outbox or due (bot/dryrun.py),
    # now and when the window opens.
    waiting: list[dryrun.Waiting] = field(default_factory=list)
    then_waiting: list[dryrun.Waiting] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # time spent per phase, for logs and bench
    rendered_in_worker: int = 0  # messages rendered in a worker process (bot/prepare.py), for the bench

    def __repr__(self) -> str:
        """Counts, not lines: asyncio writes the repr of a task's result when it tears its loop down,
        and that of 100,000 reminders took 90 MB for a moment."""
        counts = {name: len(getattr(self, name)) for name in ("planned", "sent", "failed", "deferred", "uncertain",
                                                              "then")}
        return (f"TickReport({', '.join(f'{k}={n}' for k, n in counts.items())}, cancelled={self.cancelled}, "
                f"aborted={self.aborted!r})")

    @property
    def ok(self) -> bool:
        return not (self.failed or self.deferred or self.aborted)


@dataclass(slots=True)
class _Due:
    """What planning keeps of a due invoice (a row of the rules' view weighs three times more)."""

    id: int
    number: str
    client_id: int
    contact_id: int
    email: str
    language: str
    currency: str
    client: str
    amount_due: Decimal
    due_date: date
    send: int
    skipped: tuple[int, ...]
    problem: str


def plan_groups(rows: Iterable[InvoiceRow], config: Config, now: datetime, problems: bool = False) -> list[Planned]:
    """What is due at `now`, in sending order; consolidated per client and stage when configured.

    `rows` may be a stream: only the due ones are kept. With `problems`, each says what would fail
    if sent at `now` (a formal notice with no rate for the half-year), as a dry run shows."""
    cal = views.calendar(config)
    ladder = config.ladder
    today = now.astimezone(config.zone).date()
    due: list[_Due] = []
    for row in rows:
        if row.contact_failing or row.data_error:  # waits for a person to fix the address or the data
            continue
        p = plan(row.view, ladder, cal, now)
        if p.send is None:
            continue
        problem = ""
        # L441-10 penalties are for business clients only.
        if problems and ladder[p.send].penalties and row.client_kind == "business":
            try:
                compute(row.view.amount_due, row.view.due_date, today, config.penalty_policy, business_client=True)
            except (MissingRateError, ContractRateTooLowError) as e:
                problem = str(e)
        due.append(_Due(row.id, row.number, row.client_id, row.contact_id, row.email, row.language, row.currency,
                        row.client, row.view.amount_due, row.view.due_date, p.send, p.skipped, problem))
    due.sort(key=lambda d: priority_key(d.amount_due, d.due_date, d.number))
    if config.schedule.consolidate:
        buckets: dict[object, list[_Due]] = {}
        for d in due:
            buckets.setdefault((d.client_id, d.contact_id, d.send, d.language, d.currency), []).append(d)
        groups = list(buckets.values())
    else:
        groups = [[d] for d in due]
    del due
    out = []
    for members in groups:
        first = members[0]
        out.append(Planned(
            group=Group(
                client_id=first.client_id, contact_id=first.contact_id, email=first.email, stage_index=first.send,
                invoice_ids=tuple(d.id for d in members), numbers=tuple(d.number for d in members),
                skipped=tuple((d.id, d.skipped) for d in members if d.skipped)),
            stage=ladder[first.send].name,
            amount_due=str(sum((d.amount_due for d in members), start=Decimal("0.00"))),
            client=first.client,
            problem=next((d.problem for d in members if d.problem), ""),
        ))
    return out


def _plan_due(engine: Engine, config: Config, now: datetime, problems: bool = False) -> list[Planned]:
    """Plan from the invoices whose first stage can be due (due_date + first delay <= today) and
    that can still get a stage, read as a stream: what is not due is not kept."""
    first_due_by = now.astimezone(config.zone).date() - timedelta(days=config.ladder[0].delay_days)
    with engine.connect() as conn:
        return plan_groups(views.stream(conn, views.sendable(due_by=first_due_by, stages=len(config.ladder))),
                           config, now, problems)


def plan_only(engine: Engine, config: Config, now: datetime) -> TickReport:
    """`tick --dry-run`: what is due at `now`, and what would fail; outside the sending window,
    also when it opens and what would go then. Changes nothing."""
    report = TickReport()
    started = time.perf_counter()
    report.planned = _plan_due(engine, config, now, problems=True)
    report.seconds["plan"] = time.perf_counter() - started
    with engine.connect() as conn:
        report.waiting = dryrun.in_outbox(conn, now) + dryrun.instalments_due(conn, config, now)
    cal = views.calendar(config)
    if not cal.is_allowed(now):
        report.window_opens = opens = cal.next_allowed(now)
        report.then = _plan_due(engine, config, opens, problems=True)
        with engine.connect() as conn:
            report.then_waiting = dryrun.instalments_due(conn, config, opens)
    return report


class RateLimiter:
    """At most `per_minute` sends a minute, spaced evenly (0 = no limit).

    Waiting (`ready`) and using a slot (`take`) are apart so that the outbox waits *before* it
    marks a message `sending`: killed while waiting, it leaves the message pending, not uncertain."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.clock, self.sleep = clock, sleep
        self.next_at = 0.0

    def delay(self) -> float:
        """Seconds until the next slot."""
        return max(0.0, self.next_at - self.clock()) if self.interval else 0.0

    async def ready(self) -> None:
        """Wait for the next slot without taking it."""
        if (seconds := self.delay()) > 0:
            await self.sleep(seconds)

    def take(self) -> None:
        if self.interval:
            self.next_at = max(self.clock(), self.next_at) + self.interval

    async def wait(self) -> None:
        await self.ready()
        self.take()


CLAIM = 100  # messages claimed per transaction, at most; a rate limit makes it fewer (about a second's worth)


def claim_size(rate_per_minute: int) -> int:
    """How many messages to claim at once: what is claimed waits for its turn unseen by other
    instances, so no more than about a second of sending."""
    return max(1, min(CLAIM, rate_per_minute // 60)) if rate_per_minute else CLAIM


async def deliver(outbox: Outbox, mailer: Mailer, config: Config, report: TickReport,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                  stop: asyncio.Event | None = None, parallel_from: int = PARALLEL_FROM,
                  preparer: Preparer | None = None) -> None:
    """Send what waits in the outbox, oldest first, over `mailer` (already connected).

    Messages are rendered ahead (bot/prepare.py), claimed a chunk at a time, and each is marked
    `sending` (after a last check of its invoices) by one statement, committed while the server
    reads its envelope; those delivered are recorded `sent` together, with the next claim.
    Several instances on PostgreSQL share the messages this way. `preparer`: one started earlier
    (its worker process boots while the messages are queued); by default, one of this pass's own.

    On PostgreSQL the next chunk is stored and claimed in a thread while this one is sent: its
    round trips are waited for there, not here. SQLite has one writer at a time: a claim there
    would hold up the next mark (its busy wait sleeps by the millisecond), so it is made here."""
    limiter = RateLimiter(config.smtp.rate_per_minute, sleep=sleep)
    size = claim_size(config.smtp.rate_per_minute)
    lost = False
    stack = contextlib.ExitStack()
    if preparer is None:
        preparer = stack.enter_context(Preparer(outbox, outbox.waiting(), parallel_from=parallel_from))
    loop = asyncio.get_running_loop()
    claims = (ThreadPoolExecutor(1, thread_name_prefix="relance-claims")
              if outbox.engine.dialect.name == "postgresql" else None)
    ahead: asyncio.Future[list[Prepared]] | None = None  # the next chunk, being claimed

    def next_chunk() -> list[Prepared]:
        assert preparer is not None
        preparer.feed()
        return outbox.claim_prepared(size)

    try:
        with stack:
            try:
                while True:
                    if ahead is not None:
                        batch, ahead = await ahead, None
                    else:
                        batch = next_chunk() if claims is None else await loop.run_in_executor(claims, next_chunk)
                    if not batch:
                        if await preparer.more():
                            continue
                        break
                    if claims is not None:
                        ahead = loop.run_in_executor(claims, next_chunk)
                    sent = await _send_chunk(outbox, mailer, config, report, batch, limiter, sleep, stop)
                    if sent != "sent":
                        lost = sent == "lost"
                        return
            finally:
                if ahead is not None:  # claimed meanwhile: given back by `release` below
                    await asyncio.wait([ahead])
                    if not ahead.cancelled():
                        ahead.exception()  # what stops this pass is already on its way up
                if claims is not None:
                    claims.shutdown(wait=True)
    finally:
        report.rendered_in_worker += preparer.rendered_in_worker
        outbox.flush()
        outbox.release()
        outbox.close()
        if lost:
            report.aborted += f"; {outbox.waiting()} message(s) left pending for the next pass"
        report.failed += outbox.failures
        report.cancelled += outbox.cancelled


async def _send_chunk(outbox: Outbox, mailer: Mailer, config: Config, report: TickReport, batch: list[Prepared],
                      limiter: RateLimiter, sleep: Callable[[float], Awaitable[None]],
                      stop: asyncio.Event | None) -> Literal["sent", "stopped", "lost"]:
    """Send a claimed chunk, one message at a time: "lost" when the connection is lost for good,
    "stopped" on request (the rest stays queued)."""
    for p in batch:
        if stop is not None and stop.is_set():  # shutting down: the rest stays queued
            report.aborted = "stopped on request; the rest is sent by the next run"
            return "stopped"
        if limiter.delay() > 0:  # wait before marking anything `sending`, what went recorded sent
            outbox.flush()
            await limiter.ready()
            if stop is not None and stop.is_set():
                report.aborted = "stopped on request; the rest is sent by the next run"
                return "stopped"
        sending: Prepared | None = p
        outcome = await _send(outbox, mailer, p, config, report, limiter, sleep, mark=True)
        if outcome is _CHANGED:  # an invoice changed since it was rendered: the careful path
            sending = outbox.claim(p.outbound_id, "claimed")
            if sending is None:  # cancelled or failed: counted by the outbox
                continue
            outcome = await _send(outbox, mailer, sending, config, report, limiter, sleep)
        if outcome is None:
            return "lost"
        if isinstance(outcome, list) and sending is not None:
            outbox.delivered(sending, outcome)
    return "sent"


async def deliver_one(outbox: Outbox, mailer: Mailer, outbound_id: int, config: Config, report: TickReport,
                      sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Send one pending message now (a person's reply, `relance reply --send`), by the careful path:
    read again, marked `sending` before DATA, recorded sent after; the rest of the outbox waits for
    its pass."""
    try:
        p = outbox.claim(outbound_id)
        if p is None:  # sent, cancelled or claimed by another pass meanwhile
            return
        outcome = await _send(outbox, mailer, p, config, report, RateLimiter(config.smtp.rate_per_minute,
                                                                               sleep=sleep), sleep)
        if isinstance(outcome, list):
            outbox.settle((p, outcome))
    finally:
        outbox.close()
        report.failed += outbox.failures
        report.cancelled += outbox.cancelled


class _NotMarkedError(Exception):
    """The message was not marked `sending`: one of its invoices changed since it was rendered."""


_CHANGED: Final = "changed"


async def _send(outbox: Outbox, mailer: Mailer, p: Prepared, config: Config, report: TickReport,
                limiter: RateLimiter, sleep: Callable[[float], Awaitable[None]],
                mark: bool = False) -> list[str] | Literal[False, "changed"] | None:
    """Send one claimed message with retries. Returns the refused Cc addresses when delivered,
    False when it was not, None when the connection is lost for good (the batch stops).

    `mark`: the message is `claimed` and marked `sending` (`Outbox.mark_sending`) while the server
    reads its envelope, before DATA; "changed" when it was not (it is left `claimed`, for the
    careful path)."""
    backoff = float(config.smtp.retry_backoff_seconds)
    label = f"{', '.join(p.numbers)}  {p.stage}  -> {p.envelope.recipients[0]}"
    marked: list[bool] = []  # the mark's outcome, once made (a retry does not make it again)

    async def ready() -> None:
        if not marked:
            marked.append(outbox.mark_sending(p))
        if not marked[0]:
            raise _NotMarkedError

    for attempt in range(config.smtp.retries + 1):
        if attempt:
            await limiter.wait()
        else:
            limiter.take()  # the caller waited for the slot before marking the message sending
        try:
            try:
                refused = await mailer.send(p.envelope.sender, list(p.envelope.recipients), p.data,
                                            ready=ready if mark else None)
            finally:
                if marked == [False]:  # whatever the server said: a message not to send
                    return _CHANGED  # noqa: B012 - the server's answer is about a message not to send
        except ServerUnavailableError as e:  # about the server, not this message: stop, say it once
            outbox.mark_deferred(p.outbound_id, e.reason)
            report.aborted, report.server_unavailable = e.reason, True
            return None
        except TransientDeliveryError as e:
            if attempt < config.smtp.retries:
                await sleep(backoff * 2 ** attempt)
                continue
            outbox.mark_deferred(p.outbound_id, e.reason)
            report.deferred.append(f"{label}: {e.reason} (will retry at the next tick)")
        except PermanentDeliveryError as e:
            outbox.mark_refused(p.outbound_id, e.reason)
            report.failed.append(f"{label}: refused: {e.reason}")
        except MessageDataError as e:
            outbox.mark_data_error(p.outbound_id, e.reason)
            report.failed.append(f"{label}: not sent: {e.reason}")
        except UncertainDeliveryError as e:
            outbox.mark_uncertain(p.outbound_id, e.reason)
            report.uncertain.append(f"{label}: {e.reason}")
        except ConnectionFailedError as e:  # reconnecting failed: stop, the rest stays pending
            outbox.mark_deferred(p.outbound_id, e.reason)
            report.aborted, report.server_unavailable = e.reason, True
            return None
        else:
            report.sent.append(label)
            return refused
        return False
    return False  # pragma: no cover - the loop always returns


async def tick(engine: Engine, config: Config, mailer: Mailer, now: datetime, wall_now: datetime,
               renderer: Renderer | None = None, dry_run: bool = False,
               sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
               stop: asyncio.Event | None = None) -> TickReport:
    """Plan, queue and send everything due at `now`. With `dry_run`, only plan.

    The mailer connects before anything is queued, so an unreachable server or a refused login
    leaves the store as it was (ConnectionFailedError propagates)."""
    if dry_run:
        return plan_only(engine, config, now)
    report = TickReport()
    started = time.perf_counter()
    report.planned = _plan_due(engine, config, now)
    report.seconds["plan"] = time.perf_counter() - started
    outbox = Outbox(engine, config, renderer or Renderer.from_config(config), now, wall_now)
    for mid in outbox.resolve_stale():
        report.uncertain.append(f"{mid}: left 'sending' by a crashed run; counted as sent")
    waiting = outbox.waiting()
    with engine.connect() as conn:
        plans_due = views.calendar(config).is_allowed(now) and bool(instalments.due(conn, config, now))
    if report.planned or waiting or plans_due:
        async with mailer:
            # A large batch's rendering process boots while the messages are queued.
            with Preparer(outbox, waiting + len(report.planned)) as preparer:
                started = time.perf_counter()
                queued = outbox.queue([p.group for p in report.planned])
                store.refresh_statistics(engine, len(queued), "outbound", "reminder")
                instalments.queue(engine, config, now)
                report.seconds["queue"] = time.perf_counter() - started
                started = time.perf_counter()
                await deliver(outbox, mailer, config, report, sleep, stop=stop, preparer=preparer)
                report.seconds["deliver"] = time.perf_counter() - started
    if not report.aborted and (stop is None or not stop.is_set()):
        report.digest = await digest.send_if_due(engine, config, mailer, now, wall_now)
    return report
