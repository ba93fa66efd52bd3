"""A labelled set through the real pipeline, replayed in time: the ledger gets its first reminders
on 5 April 2027, each reply arrives at its own time and is read by `inbound.sync` as the daemon
would, and the ladder ticks every day at 10:00 until the end of May with nobody deciding anything.

Scored: the kind of every message (per-kind precision and recall, confusions), what was applied
without a person and whether its reading was right, the invoices each message was threaded to
(and any wrong one), and the reminders that went to a client who had answered before the answer
let them (a claim's `payment_claim_days`, a promise's date plus grace; a plan, a dispute or another
reply until a person decides)."""

from __future__ import annotations

import asyncio
import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot import inbound, ledger, reports, store
from bot.config import Config, from_dict
from bot.mailbox import MemorySource
from bot.mailer import MemoryMailer
from bot.tick import tick
from tests.understanding.cases import KINDS, LEDGER, Case, render

PARIS = ZoneInfo("Europe/Paris")
FIRST_REMINDERS = datetime(2027, 4, 5, 10, tzinfo=PARIS)
REPLAY_UNTIL = date(2027, 5, 31)
ANSWERS = ("payment_claim", "promise_to_pay", "payment_plan", "dispute", "human_reply")


@dataclass(frozen=True)
class Result:
    case: Case
    kind: str
    invoices: tuple[str, ...]  # threaded for sure
    suggested: tuple[str, ...]  # a guess for a person to confirm
    status: str
    reason: str
    confidence: float


@dataclass
class Replay:
    results: list[Result]
    sent: list[tuple[datetime, tuple[str, ...]]] = field(default_factory=list)  # reminders after the first ones
    config: Config | None = None


async def _no_wait(seconds: float) -> None:
    """The SMTP rate limit is the server's business; the replay does not wait for it."""


def owners() -> dict[str, str]:
    """Every invoice number of the ledger -> its contact's address."""
    with LEDGER.open(encoding="utf-8") as f:
        return {row["number"]: row["email"] for row in csv.DictReader(f)}


def replay(cases: list[Case], work: Path, settings: dict[str, Any] | None = None) -> Replay:
    # The shipped defaults, with the ECB rates a formal notice of 2027 needs.
    cfg = from_dict({"database": {"url": f"sqlite:///{work / 'replay.db'}"},
                     "penalties": {"ecb_rates": {"2026-H2": "2.15", "2027-H1": "2.15"}}, **(settings or {})},
                    str(work / "replay.toml"))
    engine = store.make_engine(cfg.database.url)
    store.migrate(engine)
    ledger.import_rows(engine, ledger.read(LEDGER, "fr"), datetime(2027, 3, 1, tzinfo=UTC), "ledger")
    mailer = MemoryMailer()
    asyncio.run(tick(engine, cfg, mailer, FIRST_REMINDERS, datetime.now(UTC), sleep=_no_wait))
    reminders: dict[str, tuple[str, str]] = {}
    for _, _, raw in mailer.sent:
        m = message_from_bytes(raw)
        reminders[str(m["X-Relance-Invoices"])] = (str(m["Message-ID"]), str(m["Subject"]))
    first = len(mailer.sent)
    assert first == len(owners()), f"{first} first reminders for {len(owners())} invoices"
    source = MemorySource({"INBOX": []})
    # Replies at their own time, a tick every day at 10:00, in the order they happen.
    timeline: list[tuple[datetime, int, Case | None]] = [(c.sent, 1, c) for c in cases]
    day = FIRST_REMINDERS.date() + timedelta(days=1)
    while day <= REPLAY_UNTIL:
        timeline.append((datetime.combine(day, time(10), PARIS), 0, None))
        day += timedelta(days=1)
    sent: list[tuple[datetime, tuple[str, ...]]] = []
    for moment, _, case in sorted(timeline, key=lambda e: (e[0], e[1], e[2].id if e[2] else "")):
        if case is not None:
            source.folders["INBOX"].append(render(case, reminders))
            inbound.sync(engine, source, cfg, moment + timedelta(minutes=1), inbound.SyncReport())
            continue
        before = len(mailer.sent)
        asyncio.run(tick(engine, cfg, mailer, moment, datetime.now(UTC), sleep=_no_wait))
        for _, _, raw in mailer.sent[before:]:
            numbers = tuple(n.strip() for n in str(message_from_bytes(raw)["X-Relance-Invoices"]).split(","))
            sent.append((moment, numbers))
    with engine.connect() as c:
        got = {m["message_id"]: m for m in reports.messages(c)}
    engine.dispose()
    results = []
    for case in cases:
        m = got[f"<{case.id}@client.example>"]
        results.append(Result(case, m["kind"] or "", tuple(m["invoices"]), tuple(m.get("suggested") or ()),
                              m["status"], m["reason"] or "", float(m["confidence"] or 0)))
    return Replay(results, sent, cfg)


def scores(run: Replay) -> dict[str, Any]:
    results = run.results
    per_kind: dict[str, dict[str, float]] = {}
    for k in KINDS:
        tp = sum(1 for r in results if r.kind == k and r.case.kind == k)
        predicted = sum(1 for r in results if r.kind == k)
        actual = sum(1 for r in results if r.case.kind == k)
        alone = [r for r in results if r.kind == k and r.status == "applied"]
        per_kind[k] = {"precision": tp / predicted if predicted else 1.0, "recall": tp / actual if actual else 1.0,
                       "n": actual, "predicted": predicted,
                       "applied_alone": len(alone),
                       "applied_alone_right": sum(1 for r in alone if r.case.kind == k)}
    right = sum(1 for r in results if r.kind == r.case.kind)
    # Threading: what was matched for sure must be the right set; a guess is counted apart.
    threadable = [r for r in results if r.case.invoices]
    exact = [r for r in threadable if set(r.invoices) == set(r.case.invoices)]
    wrong = [r.case.id for r in results if r.invoices and not set(r.invoices) <= set(r.case.invoices)]
    wrong_guess = [r.case.id for r in results if r.suggested and not set(r.suggested) <= set(r.case.invoices)]
    guessed = [r for r in threadable if not r.invoices and set(r.suggested) == set(r.case.invoices)]
    promised = [r for r in results if r.case.kind == "promise_to_pay"]
    return {
        "messages": len(results), "kind_accuracy": right / len(results) if results else 1.0,
        "per_kind": per_kind,
        "confusions": Counter(f"{r.case.kind} -> {r.kind}" for r in results if r.kind != r.case.kind),
        "threading": {"with_invoices": len(threadable), "exact": len(exact), "guessed_right": len(guessed),
                      "wrong_invoice": wrong, "wrong_guess": wrong_guess},
        "promises_with_date": sum(1 for r in promised if r.case.pay_by),
        "reminders_to_answered": answered_reminders(run),
    }


def answered_reminders(run: Replay) -> list[str]:
    """Each reminder sent to an invoice whose client had answered, before the answer let it go."""
    assert run.config is not None
    p = run.config.pause
    by_owner: dict[str, list[str]] = {}
    for number, email in owners().items():
        by_owner.setdefault(email, []).append(number)
    holds: dict[str, list[tuple[datetime, datetime, str]]] = {}
    for r in run.results:
        c = r.case
        if c.kind not in ANSWERS:
            continue
        until = datetime.max.replace(tzinfo=UTC)
        if c.kind == "payment_claim":
            until = c.sent + timedelta(days=p.payment_claim_days)
        elif c.kind == "promise_to_pay" and c.pay_by:
            until = datetime.combine(c.pay_by + timedelta(days=p.promise_grace_days), time(0), PARIS)
        for n in c.invoices or by_owner.get(c.sender, []):
            holds.setdefault(n, []).append((c.sent, until, c.id))
    out = []
    for moment, numbers in run.sent:
        for n in numbers:
            for start, until, case_id in holds.get(n, ()):
                if start < moment < until:
                    out.append(f"{n} on {moment.date().isoformat()} after {case_id}")
    return sorted(set(out))


def summary(s: dict[str, Any]) -> str:
    lines = [f"messages {s['messages']}, kind right {s['kind_accuracy']:.1%}"]
    lines.append(f"{'kind':<16}{'n':>5}{'pred':>6}{'precision':>11}{'recall':>8}{'alone':>7}{'alone ok':>10}")
    for k, v in s["per_kind"].items():
        lines.append(f"{k:<16}{v['n']:>5}{v['predicted']:>6}{v['precision']:>11.1%}{v['recall']:>8.1%}"
                     f"{v['applied_alone']:>7}{v['applied_alone_right']:>10}")
    t = s["threading"]
    lines.append(f"threading: {t['exact']}/{t['with_invoices']} exact, {t['guessed_right']} more guessed right for a "
                 f"person; wrong invoice {len(t['wrong_invoice'])}, wrong guess {len(t['wrong_guess'])}")
    lines.append(f"reminders to a client who had answered: {len(s['reminders_to_answered'])}")
    lines.append("confusions (labelled -> read): " + json.dumps(dict(s["confusions"].most_common()),
                                                               ensure_ascii=False))
    return "\n".join(lines)
