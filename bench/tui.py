"""Triage UI benchmark: 100,000 invoices and 50,000 messages (about 21,000 waiting in triage).

Prints the time to first paint of the queue (the app started until the first repaint with the first
page in the table), when the app is idle after its start (the counts read, the reader loaded),
the key-press latency for next item (down), open item (Enter, then Escape), confirm (c), and the
peak RSS of the process that runs the UI. The store is built by a child process, so the RSS is the
UI's. Targets: first paint <= 1 s; p95 <= 100 ms per key; peak RSS <= 300 MB.

Each key is pressed through Textual's Pilot and timed two ways, both printed:
- `*_ms` (the target's figure): the Pilot's round trip, press until the workers are done and the
  Pilot finds the app idle. The Pilot decides "idle" by sleeping 20 ms at a time until a 20 ms
  slice passes with under 1 ms of the process's CPU, three times a key (twice in press, once in
  pause): so even a key that does nothing costs about 4 slices, and any work left after the
  first slice adds one. `pilot_floor_*` is that round trip on a bare app (a 100-row DataTable,
  the same key): the part of each figure that is not Relance's.
- `*_shown_ms`: press until the first repaint of the screen on top (a hook on its compositor
  refresh) after the result was on the app's widgets (next: the press; open: the item set in its
  screen, pushed; confirm: the row and the confirmation line updated): when a person sees it.
  `*_still_ms`: until the last repaint before the app went idle (a scroll bar, a background
  screen's change passed up): when the screen stops changing. `pilot_floor_*` as on the bare app.
`*_cpu_ms` is the process's CPU a press (the UI thread and its workers), which the load of other
processes on the machine disturbs much less than wall times; the load average is printed too.

After a decision the counts are read again once no decision came for half a second
(tui.app.COUNT_AFTER_SECONDS): the keys below come faster than that, so that query runs after the
last one; `counts_read_ms` is its time, read once at the end.

Usage: python bench/tui.py [--invoices N] [--messages N] [--keys N] [--keep DIR]"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

NOW = datetime(2027, 4, 13, 8, 0, tzinfo=UTC)
# This file is bench/tui.py: run as a script, its folder comes first on the path and would hide the
# `tui` package it measures.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
KINDS = ("payment_claim", "promise_to_pay", "payment_plan", "dispute", "human_reply", "auto_reply", "bounce")


def build(url: str, invoices: int, messages: int) -> None:
    """The store: invoices through the ledger import; messages and their events inserted in bulk
    (what the inbound pipeline leaves: a kind, a status, the invoices it concerns)."""
    import sqlalchemy as sa  # noqa: PLC0415 - the parent process measures the UI's memory only

    from bot import ledger, store  # noqa: PLC0415
    from bot.models import Event, Inbound, InboundRaw, table  # noqa: PLC0415
    from rules.reasons import reason  # noqa: PLC0415

    engine = store.make_engine(url)
    store.migrate(engine)
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ledger.csv"
        lines = ["number,client,email,amount,currency,issue_date,due_date,language"]
        for i in range(invoices):
            due = NOW.date() - timedelta(days=rng.randint(-30, 120))
            client = i % (invoices // 3 or 1)
            lines.append(f"F-{i:07d},Client {client} SARL,compta{client}@client{client % 997}.example,"
                         f"{rng.randint(100, 5_000_000) / 100:.2f},EUR,{due - timedelta(days=30)},{due},"
                         f"{'fr' if i % 3 else 'en'}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        ledger.import_rows(engine, ledger.read(path, "fr"), NOW, "ledger.csv")
    in_t, ev_t, raw_t = table(Inbound), table(Event), table(InboundRaw)
    with engine.begin() as c:
        ids = dict(c.execute(sa.text("SELECT number, id FROM invoice")).all())
    rows, evs, raws = [], [], []
    for m in range(1, messages + 1):
        number = f"F-{rng.randrange(invoices):07d}"
        kind = KINDS[m % len(KINDS)]
        triage = rng.random() < 0.4256  # 21,278 of 50,000 in the store
        body = (f"Bonjour, concernant la facture {number}, nous avons bien reçu votre relance.\r\n"
                "Nous réglerons le 30 avril 2027.\r\n")
        raw = (f"From: compta{m}@client.example\r\nSubject: Facture {number}\r\nMessage-ID: <m{m}@client.example>\r\n"
               f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()
        rows.append({"id": m, "message_id": f"<m{m}@client.example>", "folder": "INBOX", "uidvalidity": 1, "uid": m,
                     "content_hash": f"h{m}", "from_addr": f"compta{m}@client.example",
                     "subject": f"Facture {number}", "received_at": NOW - timedelta(minutes=m), "stored_at": NOW,
                     "kind": kind, "confidence": 0.4, "status": "triage" if triage else "applied",
                     "reason": reason("triage.decides", kind=kind), "text": body, "cues": "[]", "suggested": "[]"})
        raws.append({"inbound_id": m, "raw": raw})
        evs.append({"invoice_id": ids[number], "kind": f"message_{kind}", "at": NOW, "actor": "relance",
                    "reason": reason("hold.client_answered"), "data": "{}", "inbound_id": m})
        if triage:
            evs.append({"invoice_id": ids[number], "kind": "paused", "at": NOW, "actor": "relance",
                        "reason": reason("hold.until_decided"), "data": '{"until_decided": true}', "inbound_id": m})
    with engine.begin() as c:
        for i in range(0, len(rows), 5000):
            c.execute(sa.insert(in_t), rows[i:i + 5000])
            c.execute(sa.insert(raw_t), raws[i:i + 5000])
        for i in range(0, len(evs), 5000):
            c.execute(sa.insert(ev_t), evs[i:i + 5000])
        c.execute(sa.text("UPDATE invoice SET held_by = (SELECT max(e.inbound_id) FROM event e JOIN inbound m "
                          "ON m.id = e.inbound_id WHERE e.invoice_id = invoice.id AND m.status = 'triage')"))
        # What also waits for a person with no message: a reminder that failed on its data (1 invoice
        # in 500), an address that fails (1 contact in 700).
        c.execute(sa.text("UPDATE invoice SET data_error = 'Subject: control character' "
                          "WHERE id % 500 = 7 AND held_by IS NULL"))
        c.execute(sa.text("UPDATE contact SET failing = true, failure_reason = '550 5.1.1 no such user' "
                          "WHERE id % 700 = 3"))
    engine.dispose()


def instrument(app: Any) -> tuple[dict[str, list[float]], dict[str, float]]:
    """The app's own part of a key's latency, without the Pilot's: from the action called to the
    widgets updated (open: the item's content set and its screen pushed; confirm: the row and the
    confirmation line updated; the counts are read later); and when that last happened."""
    took: dict[str, list[float]] = {"open": [], "confirm": []}
    began: dict[str, float] = {}
    ready: dict[str, float] = {"open": 0.0, "confirm": 0.0}

    def wrap(name: str, key: str, end: bool) -> None:
        method = getattr(app, name)

        def wrapped(*args: Any, **kw: Any) -> Any:
            if not end:
                began[key] = time.perf_counter()
            result = method(*args, **kw)
            if end and key in began:
                ready[key] = time.perf_counter()
                took[key].append((ready[key] - began.pop(key)) * 1000)
            return result

        setattr(app, name, wrapped)

    wrap("action_open", "open", end=False)
    wrap("_show_item", "open", end=True)
    wrap("action_confirm", "confirm", end=False)
    wrap("_changed", "confirm", end=True)
    return took, ready


class Paints:
    """When the screen on top was repainted (Textual's compositor refresh, hooked here): the end of
    each repaint."""

    def __init__(self) -> None:
        from textual.screen import Screen  # noqa: PLC0415

        self.ends: list[float] = []
        original = Screen._compositor_refresh
        paints = self

        def refresh(screen: Any) -> None:
            original(screen)
            if screen.is_current:
                paints.ends.append(time.perf_counter())

        Screen._compositor_refresh = refresh  # type: ignore[method-assign,assignment]

    def first_after(self, moment: float) -> float:
        return min((e for e in self.ends if e >= moment), default=self.ends[-1] if self.ends else moment)


def quantiles(out: dict[str, object], name: str, values: list[float]) -> None:
    values = sorted(values)
    out[f"{name}_p50"] = round(statistics.median(values), 1)
    out[f"{name}_p95"] = round(values[max(int(len(values) * 0.95) - 1, 0)], 1)


FIGURES = ("ms", "shown_ms", "still_ms", "cpu_ms")


async def timed(app: Any, pilot: Any, paints: Paints, press: str,
                ready: Callable[[], float] | None = None) -> tuple[float, ...]:
    """One press through the Pilot, in ms: the round trip; until the first repaint after the
    result was ready (`ready`: when the app had it on its widgets; by default the press, as for a
    cursor move); until the last repaint (the screen stops changing); the process's CPU."""
    paints.ends.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    await pilot.press(press)
    await app.workers.wait_for_complete()
    await pilot.pause()
    t1, c1 = time.perf_counter(), time.process_time()
    shown = paints.first_after(max(ready(), t0) if ready is not None else t0)
    still = paints.ends[-1] if paints.ends else t0
    return (t1 - t0) * 1000, (shown - t0) * 1000, (still - t0) * 1000, (c1 - c0) * 1000


async def pilot_floor(keys: int, paints: Paints) -> dict[str, object]:
    """What the Pilot itself costs per key (press, wait for idle, repaint) on a bare app with a
    table of 100 rows: the part of each latency below that is not Relance's."""
    from textual.app import App, ComposeResult  # noqa: PLC0415
    from textual.widgets import DataTable  # noqa: PLC0415

    class Bare(App[None]):
        def compose(self) -> ComposeResult:
            yield DataTable()

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            table.add_columns("a", "b")
            for i in range(100):
                table.add_row(str(i), "x")
            table.focus()

    app = Bare()
    took: dict[str, list[float]] = {f"pilot_floor_{m}": [] for m in FIGURES}
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        for _ in range(keys):
            for m, v in zip(FIGURES, await timed(app, pilot, paints, "down"), strict=True):
                took[f"pilot_floor_{m}"].append(v)
    out: dict[str, object] = {}
    for name, values in took.items():
        quantiles(out, name, values)
    return out


async def measure(url: str, keys: int) -> dict[str, object]:
    from textual.widgets import DataTable  # noqa: PLC0415

    from bot import store, triage  # noqa: PLC0415
    from bot.config import from_dict  # noqa: PLC0415
    from tui.app import RelanceApp  # noqa: PLC0415

    paints = Paints()
    engine = store.make_engine(url)
    cfg = from_dict({"database": {"url": url}}, "bench.toml")
    app = RelanceApp(engine, cfg, clock=lambda: NOW, actor="tui:bench", poll_seconds=3600)
    inner, ready = instrument(app)
    out: dict[str, object] = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    start = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one("#queue", DataTable)
        while table.row_count == 0:
            await pilot.pause(0.005)
        rows_at = time.perf_counter()
        await pilot.pause()  # and drawn: the first repaint after the rows were in the table
        out["first_paint_s"] = round(paints.first_after(rows_at) - start, 3)
        await app.workers.wait_for_complete()  # the counts, and the reader loading (decisions.warm_up)
        out["idle_after_start_s"] = round(time.perf_counter() - start, 3)
        out["queue_total"] = app.total["queue"]
        out["rows_loaded"] = table.row_count

        took: dict[str, list[float]] = {f"{k}_{m}": [] for k in ("next", "open", "confirm") for m in FIGURES}

        def keep(key: str, figures: tuple[float, ...]) -> None:
            for m, v in zip(FIGURES, figures, strict=True):
                took[f"{key}_{m}"].append(v)

        for _ in range(keys):
            keep("next", await timed(app, pilot, paints, "down"))
        for _ in range(keys):
            keep("open", await timed(app, pilot, paints, "enter", lambda: ready["open"]))
            await pilot.press("escape")
            await pilot.pause()
        done, refused = 0, 0
        for _ in range(keys):
            while str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value).startswith("i"):
                await pilot.press("down")  # an invoice in a dead end (a dispute confirmed): c reads messages
                await pilot.pause()
            before, decided = str(app.query_one("#done").render()), len(app.decided)
            keep("confirm", await timed(app, pilot, paints, "c", lambda: ready["confirm"]))
            line = str(app.query_one("#done").render())
            if line == before:
                raise SystemExit(f"confirm showed nothing (the line above the footer still says {line!r})")
            recorded = len(app.decided) - decided  # a decision recorded (else refused, and said why)
            done, refused = done + recorded, refused + (1 - recorded)
        out["confirmed"], out["refused"] = done, refused
        for name, values in took.items():
            quantiles(out, name, values)
    with engine.connect() as conn:
        t0 = time.perf_counter()
        triage.totals(conn, triage.Filters())
        out["counts_read_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    engine.dispose()
    for k, v in inner.items():
        quantiles(out, f"{k}_app_ms", v)
    out |= await pilot_floor(keys, paints)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--invoices", type=int, default=100_000)
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--keys", type=int, default=40, help="presses of each key measured")
    p.add_argument("--keep", help="build the store in this directory (reused when it is there)")
    p.add_argument("--build", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.build:
        build(a.build, a.invoices, a.messages)
        return
    folder = Path(a.keep or tempfile.mkdtemp(prefix="relance-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "bench.db"
    url = f"sqlite:///{db}"
    if not db.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--build", url, "--invoices", str(a.invoices),
                        "--messages", str(a.messages)], check=True)
        print(f"store built in {time.perf_counter() - t0:.1f} s ({a.invoices} invoices, {a.messages} messages)")
    figures = asyncio.run(measure(url, a.keys))
    print(json.dumps(figures, indent=2))
    verdict = {"first paint <= 1 s": float(str(figures["first_paint_s"])) <= 1.0,
               "peak RSS <= 300 MB": float(str(figures["peak_rss_mb"])) <= 300}
    verdict |= {f"{k} p95 <= 100 ms through the Pilot ({figures[f'{k}_ms_p95']} ms; the Pilot alone: "
                f"{figures['pilot_floor_ms_p95']} ms)": float(str(figures[f"{k}_ms_p95"])) <= 100
                for k in ("next", "open", "confirm")}
    verdict |= {f"{k} p95 <= 100 ms until shown ({figures[f'{k}_shown_ms_p95']} ms; bare app: "
                f"{figures['pilot_floor_shown_ms_p95']} ms; until the screen is still: "
                f"{figures[f'{k}_still_ms_p95']} ms)": float(str(figures[f"{k}_shown_ms_p95"])) <= 100
                for k in ("next", "open", "confirm")}
    for what, ok in verdict.items():
        print(f"{'met ' if ok else 'MISSED'}  {what}")


if __name__ == "__main__":
    main()
