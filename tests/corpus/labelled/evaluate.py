"""Runs the labelled corpus through the real pipeline (store, parse, classify, match) and scores it."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot import inbound, ledger, reports, store
from bot.config import from_dict
from bot.mailbox import MemorySource
from bot.mailer import MemoryMailer
from bot.tick import tick
from tests.conftest import no_sleep
from tests.corpus.labelled.build import Case, load, render

PARIS = ZoneInfo("Europe/Paris")


@dataclass(frozen=True)
class Result:
    case: Case
    kind: str
    invoices: tuple[str, ...]
    status: str
    reason: str = ""
    pieces: tuple[Any, ...] = ()  # the reason as stored: codes (and text from outside)


SHAPES = ("gmail", "outlook_fr", "outlook_en", "apple_fr", "iphone", "html_gmail", "html_outlook", "plain")


def variants(cases: list[Case]) -> list[Case]:
    """Every person's reply in every mail client's shape (robots' messages keep their own)."""
    out = []
    for c in cases:
        if c.kind in ("bounce", "auto_reply"):
            out.append(c)
        else:
            out += [replace(c, id=f"{c.id}.{shape}", client=shape) for shape in SHAPES]
    return out


def evaluate(work: Path) -> list[Result]:
    cases = variants(load())
    cfg = from_dict({"database": {"url": f"sqlite:///{work / 'corpus.db'}"}}, str(work / "corpus.toml"))
    engine = store.make_engine(cfg.database.url)
    store.migrate(engine)
    rows = ["number,client,email,amount,currency,issue_date,due_date"]
    numbers = sorted({n for c in cases for n in c.invoices})
    owner = {n: c.sender for c in cases for n in c.invoices}
    rows += [f"{n},{owner[n].split('@')[1]},{owner[n]},100.00,EUR,2027-03-01,2027-03-31" for n in numbers]
    # Senders with other open invoices too, so that "the sender's only invoice" is not a shortcut.
    rows.append("F-2027-0901,dupont.example,factures@dupont.example,50.00,EUR,2027-03-01,2027-06-30")
    rows.append("F-2027-0902,atelier.example,contact@atelier.example,50.00,EUR,2027-03-01,2027-06-30")
    (work / "corpus.csv").write_text("\n".join(rows) + "\n")
    ledger.import_rows(engine, ledger.read(work / "corpus.csv", "fr"), datetime(2027, 3, 1, tzinfo=UTC), "corpus")
    mailer = MemoryMailer()
    asyncio.run(tick(engine, cfg, mailer, datetime(2027, 4, 5, 10, tzinfo=PARIS), datetime.now(UTC), sleep=no_sleep))
    sent = {}
    for _, _, raw in mailer.sent:
        m = message_from_bytes(raw)
        sent[str(m["X-Relance-Invoices"])] = (str(m["Message-ID"]), str(m["Subject"]))
    raws = [render(c, sent) for c in cases]
    report = inbound.SyncReport()
    inbound.store_new(engine, MemorySource({"INBOX": raws}), "INBOX", datetime(2027, 4, 6, 9, tzinfo=PARIS), report)
    inbound.process(engine, cfg, datetime(2027, 4, 6, 9, tzinfo=PARIS))
    with engine.connect() as c:
        got = {m["message_id"]: m for m in reports.messages(c)}
    engine.dispose()
    return [Result(c, m["kind"], tuple(m["invoices"]), m["status"], m["reason"] or "", tuple(m["reasons"]))
            for c in cases for m in [got[f"<{c.id}@client.example>"]]]


def scores(results: list[Result]) -> dict[str, object]:
    kinds = sorted({r.case.kind for r in results})
    per_kind = {}
    for k in kinds:
        tp = sum(1 for r in results if r.kind == k and r.case.kind == k)
        predicted = sum(1 for r in results if r.kind == k)
        actual = sum(1 for r in results if r.case.kind == k)
        per_kind[k] = (tp / predicted if predicted else 1.0, tp / actual if actual else 1.0, actual)
    # Matching: a sure match (applied, or triage for a reason other than doubt) must be the right set.
    matched = [r for r in results if r.invoices and r.case.sure]
    wrong = [r.case.id for r in matched if set(r.invoices) != set(r.case.invoices)]
    findable = [r for r in results if r.case.invoices and r.case.sure]
    found = [r for r in findable if set(r.invoices) == set(r.case.invoices)]
    return {"per_kind": per_kind, "match_precision": 1 - len(wrong) / len(matched) if matched else 1.0,
            "match_recall": len(found) / len(findable) if findable else 1.0, "wrong": wrong,
            "missed": [r.case.id for r in findable if r not in found],
            "confusions": Counter((r.case.kind, r.kind) for r in results if r.kind != r.case.kind)}
