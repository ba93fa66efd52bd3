"""Invoice import from CSV: validate every row, import nothing if any row is bad, upsert by number.

Errors read `FILE:LINE: column: message`. Re-importing the same file changes nothing; a row
whose `paid` covers the amount settles the invoice. Invoices missing from a file are left
alone (a file may be a partial export)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import sqlalchemy as sa
from babel.numbers import list_currencies
from sqlalchemy.engine import Engine

from bot.addresses import AddressError, has_control, plain_address
from bot.errors import ImportFileError
from bot.i18n import language, t
from bot.models import Client, Contact, Invoice, table
from bot.store import record_events, session
from rules.reasons import reason

REQUIRED = ("number", "client", "email", "amount", "currency", "issue_date", "due_date")
OPTIONAL = ("language", "paid", "pdf", "client_id", "cc", "client_kind")
_AMOUNT = re.compile(r"^\d+(?:[.,]\d{1,2})?$")
_CURRENCIES = frozenset(list_currencies())
# The longest value each column takes (the contract, in DESIGN.md). A name or a number ends up in a
# header line, which must stay under 998 characters once encoded; nothing longer is a real value.
LIMITS = {"number": 64, "client": 200, "email": 254, "cc": 1000, "client_id": 100, "pdf": 1024}
LIMIT_OTHER = 64  # amounts, dates, codes
CHUNK = 5000  # rows per INSERT batch
_SPACES = re.compile(r"[\s\u00a0\u202f]+")


@dataclass(frozen=True, slots=True)
class Row:
    """One valid ledger row."""

    line: int
    number: str
    client: str
    client_key: str
    client_kind: str
    email: str
    cc: str
    amount: Decimal
    paid: Decimal
    currency: str
    issue_date: date
    due_date: date
    language: str
    pdf: str | None

    def fingerprint(self) -> str:
        """Identifies the row's values (not its line): an unchanged row is skipped on re-import."""
        values = (self.number, self.client, self.client_key, self.client_kind, self.email, self.cc, self.amount,
                  self.paid, self.currency, self.issue_date, self.due_date, self.language, self.pdf)
        return hashlib.sha256("\x1f".join(map(str, values)).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ImportResult:
    rows: int
    created: int
    updated: int
    unchanged: int
    settled: int


def parse_amount(text: str) -> Decimal:
    """`1234.56`, `1234,56`, `1 234,56` -> Decimal('1234.56'). Raises ValueError otherwise."""
    compact = _SPACES.sub("", text)
    if not _AMOUNT.match(compact):
        raise ValueError(t("expected an amount >= 0 with at most two decimals, such as 1234.56 or 1234,56"))
    try:
        return Decimal(compact.replace(",", ".")).quantize(Decimal("0.01"))
    except InvalidOperation as e:  # pragma: no cover - the pattern above admits only valid numbers
        raise ValueError(str(e)) from e


def parse_date(text: str) -> date:
    """ISO 8601 (`2027-03-31`) or French order (`31/03/2027`)."""
    try:
        if "/" in text:
            return datetime.strptime(text, "%d/%m/%Y").date()  # noqa: DTZ007 - a date, no time
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(t("expected a date as YYYY-MM-DD or DD/MM/YYYY")) from None


def client_key(name: str, client_id: str) -> str:
    """Who a row's client is: its id, else its name folded. A long folded name (casefolding can
    lengthen it: ß -> ss) is hashed to fit the key column's 200 characters."""
    if client_id:
        return f"id:{client_id}"
    folded = " ".join(name.casefold().split())
    return "name:" + folded if len(folded) <= 190 else "name#" + hashlib.sha256(folded.encode()).hexdigest()


def inside(path: Path, folder: Path) -> bool:
    """Whether `path`, every link followed, lies in `folder` (`..`, absolute paths and symlinks out
    are not)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a loop of symlinks
        return False


def read(path: Path, default_language: str, attachments: Path | None = None) -> list[Row]:
    """Parse and validate the whole file; raise ImportFileError listing every problem. The `pdf`
    files must lie in `attachments` (default: the file's own folder)."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ImportFileError(name, [f"{name}: " + t("no such file")]) from None
    except UnicodeDecodeError as e:
        raise ImportFileError(name, [f"{name}: " + t("not UTF-8 ({reason} at byte {start}); save the file as UTF-8 "
                                                     "CSV", reason=e.reason, start=e.start)]) from None
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","  # French spreadsheet exports
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]
    errors = [f"{name}:1: {col}: " + t("missing required column") for col in REQUIRED if col not in header]
    errors += [f"{name}:1: {col}: " + t("unknown column (known: {known})", known=", ".join(REQUIRED + OPTIONAL))
               for col in header if col not in REQUIRED + OPTIONAL]
    if errors:
        raise ImportFileError(name, errors)
    columns = [(col, header.index(col) if col in header else None) for col in REQUIRED + OPTIONAL]
    base = path.parent
    allowed = (attachments or base).resolve()
    rows: list[Row] = []
    seen: dict[str, Row] = {}
    while True:
        start = reader.line_num + 1  # a quoted cell may span lines: errors name the row's first
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # a cell longer than the csv module takes (131,072 characters)
            errors.append(f"{name}:{start}: (line): " + t("unreadable CSV row: {why}; no column takes more than "
                                                           "{limit} characters", why=e, limit=max(LIMITS.values())))
            continue
        line = start
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            errors.append(f"{name}:{line}: (line): " + t("{n} more cell(s) than the header has columns",
                                                          n=len(cells) - len(header)))
            continue
        values = {col: cells[i].strip() if i is not None and i < len(cells) else "" for col, i in columns}
        row = _validate(values, line, name, base, default_language, errors, allowed)
        if row is None:
            continue
        earlier = seen.get(row.number)
        if earlier is None:
            seen[row.number] = row
            rows.append(row)
        elif earlier.fingerprint() != row.fingerprint():
            errors.append(f"{name}:{line}: number: " + t("{number} already on line {line} with different values",
                                                          number=row.number, line=earlier.line))
    if errors:
        raise ImportFileError(name, errors)
    return rows


def _validate(values: dict[str, str], line: int, name: str, base: Path, default_language: str,
              errors: list[str], allowed: Path) -> Row | None:
    before = len(errors)

    def err(col: str, msg: str) -> None:
        errors.append(f"{name}:{line}: {col}: {msg}")

    for col in REQUIRED:
        if not values[col]:
            err(col, t("empty (required)"))
    suspect = has_control("".join(values.values())) or any(len(v) > LIMIT_OTHER for v in values.values())
    for col, value in values.items() if suspect else ():
        if has_control(value):  # a line end in a name or a number would write a header of its own
            err(col, t("control character (line break, tab, NUL...) at position {pos}",
                       pos=next(i for i, c in enumerate(value) if has_control(c)) + 1))
        elif len(value) > LIMITS.get(col, LIMIT_OTHER):
            err(col, t("{length} characters, more than the {limit} this column takes", length=len(value),
                       limit=LIMITS.get(col, LIMIT_OTHER)))
    if len(errors) > before:
        return None
    amount = paid = Decimal("0.00")
    issue = due = date.min
    if values["amount"]:
        try:
            amount = parse_amount(values["amount"])
            if amount <= 0:
                err("amount", t("{value}: must be greater than zero", value=repr(values["amount"])))
        except ValueError as e:
            err("amount", t("{value}: {why}", value=repr(values["amount"]), why=e))
    if values["paid"]:
        try:
            paid = parse_amount(values["paid"])
            if amount > 0 and paid > amount:
                err("paid", t("{value}: more than the amount {amount}", value=repr(values["paid"]), amount=amount))
        except ValueError as e:
            err("paid", t("{value}: {why}", value=repr(values["paid"]), why=e))
    for col in ("issue_date", "due_date"):
        if values[col]:
            try:
                parsed = parse_date(values[col])
            except ValueError as e:
                err(col, t("{value}: {why}", value=repr(values[col]), why=e))
                continue
            if col == "issue_date":
                issue = parsed
            else:
                due = parsed
    if date.min not in (issue, due) and due < issue:
        err("due_date", t("{value}: before the issue date {issue}", value=repr(values["due_date"]),
                           issue=values["issue_date"]))
    email = _address(values["email"], "email", err)
    cc = [_address(c.strip(), "cc", err) for c in re.split(r"[;,]", values["cc"]) if c.strip()]
    currency = values["currency"].upper()
    if currency and currency not in _CURRENCIES:
        err("currency", t("{value}: expected an ISO 4217 code such as EUR", value=repr(values["currency"])))
    language = values["language"].lower() or default_language
    if language not in ("fr", "en"):
        err("language", t("{value}: expected fr or en", value=repr(values["language"])))
    kind = values["client_kind"].lower() or "business"
    if kind not in ("business", "consumer"):
        err("client_kind", t("{value}: expected business or consumer", value=repr(values["client_kind"])))
    pdf = None
    if values["pdf"]:
        candidate = Path(values["pdf"])
        candidate = candidate if candidate.is_absolute() else (base / candidate)
        # Whoever can write the CSV must not be able to mail any file the daemon can read.
        if not inside(candidate, allowed):
            err("pdf", t("{value}: outside the attachments folder {folder} (attachments.folder in the config)",
                         value=repr(values["pdf"]), folder=allowed))
        elif not candidate.is_file():
            err("pdf", t("{value}: no such file (looked for {path})", value=repr(values["pdf"]), path=candidate))
        pdf = str(candidate.resolve())
    if len(errors) > before:
        return None
    return Row(
        line=line, number=values["number"], client=values["client"],
        client_key=client_key(values["client"], values["client_id"]), client_kind=kind,
        email=email, cc=", ".join(cc), amount=amount, paid=paid, currency=currency,
        issue_date=issue, due_date=due, language=language, pdf=pdf,
    )


def _address(text: str, col: str, err: Callable[[str, str], None]) -> str:
    """A plain address as the store keeps it, or "" after reporting why not."""
    if not text:
        return ""
    try:
        return plain_address(text)
    except AddressError as e:
        # email-validator explains in English only: a French reader gets the verdict without it.
        err(col, t("{value}: not a valid email address", value=repr(text)) + (f" ({e})" if language() == "en"
                                                                               else ""))
        return ""


def import_rows(engine: Engine, rows: Iterable[Row], now: datetime, source: str) -> ImportResult:
    """Upsert `rows` in one transaction. Each created, changed or settled invoice gets an event."""
    rows = list(rows)
    inv_t, cli_t, con_t = table(Invoice), table(Client), table(Contact)
    created = updated = unchanged = settled = 0
    with session(engine) as s:
        clients = {k: (i, n, kd) for i, k, n, kd in s.execute(
            sa.select(cli_t.c.id, cli_t.c.key, cli_t.c.name, cli_t.c.kind))}
        new_clients = {r.client_key: r for r in rows if r.client_key not in clients}
        if new_clients:
            s.execute(sa.insert(cli_t), [
                {"key": k, "name": r.client, "kind": r.client_kind, "language": r.language}
                for k, r in new_clients.items()])
        for r in {r.client_key: r for r in rows if r.client_key in clients}.values():
            cid, cname, ckind = clients[r.client_key]
            if (cname, ckind) != (r.client, r.client_kind):
                s.execute(sa.update(cli_t).where(cli_t.c.id == cid).values(name=r.client, kind=r.client_kind))
        client_ids = dict(s.execute(sa.select(cli_t.c.key, cli_t.c.id)).all())

        contacts = {(c, e): (i, cc) for i, c, e, cc in s.execute(
            sa.select(con_t.c.id, con_t.c.client_id, con_t.c.email, con_t.c.cc))}
        wanted: dict[tuple[int, str], str] = {(client_ids[r.client_key], r.email): r.cc for r in rows}
        new_contacts = [{"client_id": c, "email": e, "cc": cc} for (c, e), cc in wanted.items()
                        if (c, e) not in contacts]
        if new_contacts:
            s.execute(sa.insert(con_t), new_contacts)
        for key, cc in wanted.items():
            if key in contacts and contacts[key][1] != cc:
                s.execute(sa.update(con_t).where(con_t.c.id == contacts[key][0]).values(cc=cc))
        contact_ids = {(c, e): i for i, c, e in s.execute(
            sa.select(con_t.c.id, con_t.c.client_id, con_t.c.email))}

        existing = {n: (i, h, st) for i, n, h, st in s.execute(
            sa.select(inv_t.c.id, inv_t.c.number, inv_t.c.row_hash, inv_t.c.state))}
        inserts, events = [], []
        for r in rows:
            cid = client_ids[r.client_key]
            values = {
                "client_id": cid, "contact_id": contact_ids[(cid, r.email)], "amount": r.amount,
                "paid": r.paid, "currency": r.currency, "issue_date": r.issue_date,
                "due_date": r.due_date, "language": r.language, "pdf": r.pdf,
                "row_hash": r.fingerprint(),
            }
            is_paid = r.paid >= r.amount
            found = existing.get(r.number)
            if found is None:
                inserts.append({"number": r.number, "state": "paid" if is_paid else "active", **values})
                created += 1
                if len(inserts) >= CHUNK:  # bounded memory on large ledgers
                    s.execute(sa.insert(inv_t), inserts)  # plain executemany: faster than RETURNING batches
                    inserts.clear()
                continue
            inv_id, old_hash, state = found
            if old_hash == values["row_hash"]:
                unchanged += 1
                continue
            updated += 1
            new_state = state
            if is_paid and state != "paid":
                new_state, settled = "paid", settled + 1
                events.append({"invoice_id": inv_id, "kind": "paid",
                               "reason": reason("ledger.paid_column", source=source)})
            elif not is_paid and state == "paid":
                new_state = "active"
                events.append({"invoice_id": inv_id, "kind": "reopened",
                               "reason": reason("ledger.paid_undone", source=source)})
            s.execute(sa.update(inv_t).where(inv_t.c.id == inv_id).values(state=new_state, data_error=None,
                                                                          **values))  # new data: try again
            events.append({"invoice_id": inv_id, "kind": "updated", "reason": reason("ledger.line", line=r.line,
                                                                                       source=source)})
        if inserts:
            s.execute(sa.insert(inv_t), inserts)
        record_events(s, [{"at": now, "actor": "import", **ev} for ev in events])
        if created:
            events.clear()
            for inv_id, number, state in s.execute(sa.select(inv_t.c.id, inv_t.c.number, inv_t.c.state)).all():
                if number in existing:
                    continue
                events.append({"invoice_id": inv_id, "kind": "imported", "reason": source, "at": now,
                               "actor": "import"})
                if state == "paid":
                    settled += 1
                    events.append({"invoice_id": inv_id, "kind": "paid", "reason": reason("ledger.paid_column",
                                                                                          source=source),
                                   "at": now, "actor": "import"})
                if len(events) >= CHUNK:
                    record_events(s, events)
                    events.clear()
            record_events(s, events)
    return ImportResult(len(rows), created, updated, unchanged, settled)
