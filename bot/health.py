"""Is the daemon working? Each part writes a heartbeat when it works and when it fails (the
scheduler's pass, the SMTP server as that pass saw it, the IMAP watcher's pass);
`relance status --health` reads them with what waits in the store, and exits 1 when a part has
been failing longer than `daemon.health_failing_minutes`, for a monitoring system or a systemd
check. A heartbeat that cannot be written (the database away) is logged, never fatal: the part it
is about goes on."""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, Engine

from bot.models import Heartbeat, Inbound, Invoice, Outbound, table
from bot.store import TRANSIENT_DB, db_text, session, unreachable

log = logging.getLogger("relance")
hb_t, in_t, inv_t, out_t = table(Heartbeat), table(Inbound), table(Invoice), table(Outbound)
COMPONENTS = ("scheduler", "smtp", "imap")
INSTANCE = f"{socket.gethostname()}:{os.getpid()}"
errors: Counter[str] = Counter()  # failures this process met, by component (the metrics' process counter)


def beat(engine: Engine, component: str, now: datetime, error: str | None = None) -> None:
    """Record that `component` worked (`error` None) or failed, at `now`."""
    if error is not None:
        errors[component] += 1
    values: dict[str, Any] = ({"last_ok_at": now, "failing_since": None} if error is None else
                              {"last_error_at": now, "last_error": db_text(error)[:500],
                               "failing_since": sa.func.coalesce(hb_t.c.failing_since, now)})
    try:
        with session(engine) as s:
            done = s.execute(sa.update(hb_t).where(hb_t.c.component == component)
                             .values(instance=INSTANCE, **values)).rowcount
            if not done:
                first = {**values, "failing_since": None if error is None else now}
                s.execute(sa.insert(hb_t).values(component=component, instance=INSTANCE, **first))
    except sa.exc.IntegrityError as e:  # a race with another instance
        log.warning("health: the %s heartbeat was not written: %s", component, str(e).splitlines()[0])
    except TRANSIENT_DB as e:  # the database away: the part that failed has said so, once
        log.debug("health: the %s heartbeat was not written: %s", component, unreachable(e))


def report(conn: Connection, now: datetime, failing_minutes: int) -> dict[str, Any]:
    """What `relance status --health` says: each part's last success and failure, what waits, the
    schema; `healthy` is false when a part has been failing longer than `failing_minutes`."""
    beats = {r.component: r for r in conn.execute(sa.select(hb_t))}
    limit = now - timedelta(minutes=failing_minutes)
    parts = {}
    for name in COMPONENTS:
        r = beats.get(name)
        failing = r is not None and r.failing_since is not None
        parts[name] = {
            "last_ok_at": _iso(r.last_ok_at if r else None), "last_error_at": _iso(r.last_error_at if r else None),
            "last_error": r.last_error if r and failing else None,
            "failing_since": _iso(r.failing_since if r else None), "instance": r.instance if r else None,
            "ok": not (failing and r is not None and r.failing_since <= limit),
        }
    def count(table_: sa.Table, *where: Any) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table_).where(*where)).scalar() or 0)

    return {
        "healthy": all(p["ok"] for p in parts.values()),
        "components": parts,
        "last_send_at": _iso(conn.execute(sa.select(sa.func.max(out_t.c.sent_at))
                                          .where(out_t.c.status == "sent")).scalar()),
        "messages_waiting": count(in_t, in_t.c.status.in_(("new", "applying"))),
        "messages_for_a_person": count(in_t, in_t.c.status == "triage"),
        "invoices_held_for_a_person": count(inv_t, inv_t.c.held_by.is_not(None), inv_t.c.state != "paid"),
        "errors_last_hour": sorted(n for n, r in beats.items()
                                   if r.last_error_at is not None and r.last_error_at >= now - timedelta(hours=1)),
        "schema": MigrationContext.configure(conn).get_current_revision(),
        "failing_minutes": failing_minutes,
    }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when is not None else None
