"""How `relance run` logs: human lines by default, or one JSON object a line (`--log-format json`)
for a log collector. The fields are the time (UTC, ISO 8601), the level, the logger and the
message as a person reads it, plus what a call passes in `extra` (`invoice`, `message_id`, ...).
Nothing here sees a secret: passwords are `Secret` objects that print as `***`."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# The attributes every LogRecord has: what is not among them came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class Line(str):
    """A line of a pass's output as people read it ("applied  payment_claim  F-1  RE: ..."), which
    also carries what it is about as fields (`message_id`, `invoices`, `kind`, `status`) for a JSON
    log: `log.info("mail %s", line, extra=line.fields)`."""

    fields: dict[str, Any]

    def __new__(cls, text: str, **fields: Any) -> Line:
        line = super().__new__(cls, text)
        line.fields = fields
        return line


def fields(line: str) -> dict[str, Any]:
    """The fields a line carries (none for a plain string)."""
    return dict(getattr(line, "fields", {}))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure(fmt: str) -> None:
    """Log to stderr at INFO, as text ("2027-04-06 09:00:00,000 INFO sent ...") or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # The database going away: the loops say once what they wait for (bot/daemon.py, bot/watcher.py).
    # What the libraries would add is noise: psycopg's "error ignored terminating <Pipeline>", and
    # the pool's traceback for a lost connection it could not roll back, which it discards anyway.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    handler.addFilter(_lost_connection_reset)  # on the handler: the pool logs on loggers of its own


def _lost_connection_reset(record: logging.LogRecord) -> bool:
    """False for the pool's "Exception during reset or similar" about a connection the server dropped."""
    error = record.exc_info[1] if record.exc_info else None
    return not (record.getMessage().startswith("Exception during reset") and error is not None
                and type(error).__name__ in ("OperationalError", "InterfaceError"))
