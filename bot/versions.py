"""The lost-update check. An invoice's version is the id of its latest event: every change of an
invoice is recorded as an event in the same transaction, so a person who read version N and acts
while the latest event is no longer N would overwrite a change they never saw. The action is then
refused (StaleError) and the screen reads the invoice again."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.errors import StaleError
from bot.i18n import t
from bot.models import Event, table

ev_t = table(Event)


def of(conn: Connection, invoice_ids: Iterable[int]) -> dict[int, int]:
    """The version of each invoice (0 for one with no event yet)."""
    ids = list(invoice_ids)
    if not ids:
        return {}
    found = dict(conn.execute(sa.select(ev_t.c.invoice_id, sa.func.max(ev_t.c.id))
                              .where(ev_t.c.invoice_id.in_(ids)).group_by(ev_t.c.invoice_id)).all())
    return {i: int(found.get(i) or 0) for i in ids}


def check(conn: Connection, invoice_id: int, number: str, seen: int | None) -> None:
    """Raise StaleError when the invoice changed since version `seen` was read (None: no check, as
    the command line acts on what it reads in the same breath)."""
    if seen is None:
        return
    now = of(conn, [invoice_id])[invoice_id]
    if now == seen:
        return
    last = conn.execute(sa.select(ev_t.c.kind, ev_t.c.actor).where(ev_t.c.id == now)).first()
    raise StaleError(t("{number} was changed meanwhile ({kind} by {actor}): nothing done, read it again",
                       number=number, kind=last.kind if last else "?", actor=last.actor if last else "?"))
