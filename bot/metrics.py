"""`[daemon] metrics_port`: what `relance run` does, as Prometheus reads it (text format 0.0.4),
on `http://127.0.0.1:PORT/metrics`, loopback only.

Everything but one family is read from the database at each scrape, so every instance sharing
a database says the same (scrape any one of them): the reminders sent, bounced, uncertain (by
stage), deferred and waiting, the replies by kind, the messages waiting and those for a person,
the heartbeats of `status --health`. `relance_process_errors_total` is this process's own count
of failed passes (it starts at 0 with the process, as Prometheus counters may). A database that
does not answer gives `relance_database_up 0` and the process's own families only.

The server is the standard library's, in a thread of its own: a scrape reads the database
there, never on the daemon's loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot import health
from bot.errors import RelanceError
from bot.health import COMPONENTS, INSTANCE
from bot.models import Event, Heartbeat, Inbound, Invoice, Outbound, table
from bot.outbox import WAITING
from bot.store import TRANSIENT_DB

log = logging.getLogger("relance")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
hb_t, in_t, inv_t, out_t, ev_t = table(Heartbeat), table(Inbound), table(Invoice), table(Outbound), table(Event)


class Family:
    """One metric family: its samples, with their labels."""

    def __init__(self, name: str, kind: str, help_: str) -> None:
        self.name, self.kind, self.help = name, kind, help_
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self

    def text(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            inside = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{self.name}{{{inside}}} {_number(value)}" if inside else f"{self.name} {_number(value)}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _by(conn: Connection, column: Any, *where: Any, select_from: Any = None,
        count: Any = None) -> list[tuple[str, int]]:
    q = sa.select(column, count if count is not None else sa.func.count())
    if select_from is not None:
        q = q.select_from(select_from)
    return [(str(k), int(n)) for k, n in conn.execute(q.where(*where).group_by(column).order_by(column))]


def families(conn: Connection) -> list[Family]:
    """The families read from the store."""
    sent = Family("relance_reminders_sent_total", "counter", "Messages the SMTP server accepted, by stage.")
    for stage, n in _by(conn, out_t.c.stage, out_t.c.status == "sent"):
        sent.add(n, stage=stage)
    bounced = Family("relance_reminders_bounced_total", "counter",
                     "Messages whose recipient the SMTP server refused for good (the invoice bounced), by stage.")
    for stage, n in _by(conn, out_t.c.stage, ev_t.c.kind == "bounced",
                        select_from=out_t.join(ev_t, ev_t.c.outbound_id == out_t.c.id),
                        count=sa.func.count(sa.distinct(out_t.c.id))):
        bounced.add(n, stage=stage)
    uncertain = Family("relance_reminders_uncertain_total", "counter",
                       "Messages whose delivery is in doubt (a crash or a cut during DATA): counted sent, "
                       "a person should check, by stage.")
    for stage, n in _by(conn, out_t.c.stage, out_t.c.status == "uncertain"):
        uncertain.add(n, stage=stage)
    deferred = Family("relance_reminders_deferred", "gauge",
                      "Messages waiting for a retry after a temporary failure (4xx, server away), by stage.")
    for stage, n in _by(conn, out_t.c.stage, out_t.c.status == "pending", out_t.c.last_error.is_not(None)):
        deferred.add(n, stage=stage)
    waiting = Family("relance_reminders_waiting", "gauge", "Messages queued and not yet sent.")
    waiting.add(int(conn.execute(sa.select(sa.func.count()).where(out_t.c.status.in_(WAITING))).scalar() or 0))
    replies = Family("relance_replies_total", "counter", "Messages read from the mailbox, by kind.")
    for kind, n in _by(conn, in_t.c.kind, in_t.c.kind.is_not(None)):
        replies.add(n, kind=kind)
    statuses = dict(_by(conn, in_t.c.status))
    backlog = Family("relance_triage_backlog", "gauge", "Messages waiting for a person (relance messages --triage).")
    backlog.add(statuses.get("triage", 0))
    held = Family("relance_invoices_held_for_a_person", "gauge",
                  "Open invoices whose reminders wait for a person to read a message.")
    held.add(int(conn.execute(sa.select(sa.func.count()).where(inv_t.c.held_by.is_not(None),
                                                               inv_t.c.state != "paid")).scalar() or 0))
    mail_waiting = Family("relance_messages_waiting", "gauge", "Messages stored and not yet understood and applied.")
    mail_waiting.add(statuses.get("new", 0) + statuses.get("applying", 0))
    quarantined = Family("relance_messages_quarantined", "gauge", "Messages the parser could not read.")
    quarantined.add(statuses.get("quarantined", 0))
    last_send = Family("relance_last_send_timestamp_seconds", "gauge", "When the last message was sent (Unix time).")
    when = conn.execute(sa.select(sa.func.max(out_t.c.sent_at)).where(out_t.c.status == "sent")).scalar()
    if when is not None:
        last_send.add(_unix(when))
    beats = {r.component: r for r in conn.execute(sa.select(hb_t))}
    imap = Family("relance_last_imap_pass_timestamp_seconds", "gauge",
                  "When the IMAP watcher last finished a pass (Unix time).")
    if "imap" in beats and beats["imap"].last_ok_at is not None:
        imap.add(_unix(beats["imap"].last_ok_at))
    ok = Family("relance_component_last_ok_timestamp_seconds", "gauge",
                "When each part of the daemon last worked (Unix time), as `relance status --health` says.")
    failing = Family("relance_component_failing", "gauge", "1 while a part of the daemon fails, else 0.")
    for name in COMPONENTS:
        r = beats.get(name)
        if r is not None and r.last_ok_at is not None:
            ok.add(_unix(r.last_ok_at), component=name)
        failing.add(1 if r is not None and r.failing_since is not None else 0, component=name)
    return [sent, bounced, uncertain, deferred, waiting, replies, backlog, held, mail_waiting, quarantined,
            last_send, imap, ok, failing]


def _unix(when: datetime) -> float:
    return round(when.timestamp(), 3)


def render(engine: Engine) -> str:
    """The whole page: the store's families (when the database answers) and the process's."""
    up = Family("relance_database_up", "gauge", "1 when the database answered this scrape, else 0.")
    try:
        with engine.connect() as conn:
            stored = families(conn)
        up.add(1)
    except TRANSIENT_DB as e:
        log.warning("metrics: the database did not answer: %s", str(e).splitlines()[0])
        stored = []
        up.add(0)
    errors = Family("relance_process_errors_total", "counter",
                    "Failed passes of this process (not of the other instances), by component.")
    for name in COMPONENTS:
        errors.add(health.errors[name], component=name)
    info = Family("relance_instance_info", "gauge", "This process: host:pid.").add(1, instance=INSTANCE)
    return "".join(f.text() for f in _all(stored, up, errors, info))


def _all(stored: list[Family], *more: Family) -> Iterable[Family]:
    yield from stored
    yield from more


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404, "only /metrics is served here")
            return
        body = render(self.server.engine).encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # a scrape every 15 s is not news


class MetricsServer(ThreadingHTTPServer):
    """The endpoint, on 127.0.0.1 only, served from a thread until `close`."""

    daemon_threads = True

    def __init__(self, engine: Engine, port: int) -> None:
        self.engine = engine
        try:
            super().__init__(("127.0.0.1", port), _Handler)
        except OSError as e:
            raise RelanceError(f"daemon.metrics_port = {port}: cannot listen on 127.0.0.1:{port}: "
                               f"{e.strerror}") from None
        self._thread = threading.Thread(target=self.serve_forever, name="relance-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics: http://127.0.0.1:%d/metrics", self.server_address[1])
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
