"""Invoice import from CSV: validate every row, import nothing if any row is bad, upsert by number.

Errors read `FILE:LINE: column: message`. Re-importing the same file changes nothing; a row
whose `paid` covers the amount settles the invoice. Invoices missing from a file are left
alone (a file may be a partial export).

`import_file` streams: the file is read a row at a time and written `BATCH` rows at a time, in
one transaction that is rolled back when any row was bad, so memory does not grow with the file.
Which numbers the file already gave (a number twice with other values is an error) is kept in
a temporary table of the same transaction, not in memory."""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import sqlalchemy as sa
from babel.numbers import list_currencies
from sqlalchemy.engine import Connection, Engine

from bot.addresses import AddressError, has_control, plain_address
from bot.errors import ImportFileError
from bot.i18n import language, t
from bot.models import Client, Contact, Event, Invoice, UtcDateTime, table
from bot.store import record_events, refresh_statistics, session
from rules.reasons import reason

REQUIRED = ("number", "client", "email", "amount", "currency", "issue_date", "due_date")
OPTIONAL = ("language", "paid", "pdf", "client_id", "cc", "client_kind")
_AMOUNT = re.compile(r"^\d+(?:[.,]\d{1,2})?$")
_CURRENCIES = frozenset(list_currencies())
# The longest value each column takes (the contract, in DESIGN.md). A name or a number ends up in a
# header line, which must stay under 998 characters once encoded; nothing longer is a real value.
LIMITS = {"number": 64, "client": 200, "email": 254, "cc": 1000, "client_id": 100, "pdf": 1024}
LIMIT_OTHER = 64  # amounts, dates, codes
BATCH = 5000  # rows read, checked and written together: what the import holds in memory at once
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
    row_hash: str = ""  # set by `_validate`: see `fingerprint`

    def fingerprint(self) -> str:
        """Identifies the row's values (not its line): an unchanged row is skipped on re-import."""
        return self.row_hash or _fingerprint(self)


def _fingerprint(row: Row) -> str:
    values = (row.number, row.client, row.client_key, row.client_kind, row.email, row.cc, row.amount,
              row.paid, row.currency, row.issue_date, row.due_date, row.language, row.pdf)
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
    """Parse and validate the whole file in memory; raise ImportFileError listing every problem.
    For small files and tests: `import_file` streams. The `pdf` files must lie in `attachments`
    (default: the file's own folder)."""
    errors: list[tuple[int, str]] = []
    rows: list[Row] = []
    seen: dict[str, Row] = {}
    for row in parse(path, default_language, errors, attachments):
        earlier = seen.get(row.number)
        if earlier is None:
            seen[row.number] = row
            rows.append(row)
        elif earlier.fingerprint() != row.fingerprint():
            errors.append((row.line, _duplicate(str(path), row, earlier.line)))
    if errors:
        raise ImportFileError(str(path), [e for _, e in errors])
    return rows


def parse(path: Path, default_language: str, errors: list[tuple[int, str]],
          attachments: Path | None = None) -> Iterator[Row]:
    """Yield each valid row as the file is read; append each problem, with its line, to `errors`.
    A file that cannot be read at all (missing, not UTF-8, bad header) raises ImportFileError.
    Numbers given twice are the caller's to find (`read` in memory, `import_file` in the store)."""
    name = str(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            yield from _parse(f, name, path.parent, default_language, errors, (attachments or path.parent).resolve())
    except FileNotFoundError:
        raise ImportFileError(name, [f"{name}: " + t("no such file")]) from None
    except UnicodeDecodeError:
        why, start = _first_bad_byte(path)
        raise ImportFileError(name, [f"{name}: " + t("not UTF-8 ({reason} at byte {start}); save the file as UTF-8 "
                                                     "CSV", reason=why, start=start)]) from None


def _parse(f: Iterable[str], name: str, base: Path, default_language: str, errors: list[tuple[int, str]],
           allowed: Path) -> Iterator[Row]:
    lines = iter(f)
    first = next(lines, "")
    delimiter = ";" if first.count(";") > first.count(",") else ","  # French spreadsheet exports
    reader = csv.reader(_chain(first, lines), delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]
    problems = [f"{name}:1: {col}: " + t("missing required column") for col in REQUIRED if col not in header]
    problems += [f"{name}:1: {col}: " + t("unknown column (known: {known})", known=", ".join(REQUIRED + OPTIONAL))
                 for col in header if col not in REQUIRED + OPTIONAL]
    if problems:
        raise ImportFileError(name, problems)
    columns = [(col, header.index(col) if col in header else None) for col in REQUIRED + OPTIONAL]
    while True:
        line = reader.line_num + 1  # a quoted cell may span lines: errors name the row's first
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # a cell longer than the csv module takes (131,072 characters)
            errors.append((line, f"{name}:{line}: (line): " + t(
                "unreadable CSV row: {why}; no column takes more than {limit} characters", why=e,
                limit=max(LIMITS.values()))))
            continue
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            errors.append((line, f"{name}:{line}: (line): " + t("{n} more cell(s) than the header has columns",
                                                                 n=len(cells) - len(header))))
            continue
        values = {col: cells[i].strip() if i is not None and i < len(cells) else "" for col, i in columns}
        found: list[str] = []
        row = _validate(values, line, name, base, default_language, found, allowed)
        errors.extend((line, e) for e in found)
        if row is not None:
            yield row


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _first_bad_byte(path: Path) -> tuple[str, int]:
    """Why a file is not UTF-8 and at which byte of it, read a megabyte at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as f:
        while True:
            chunk = f.read(1 << 20)
            pending = len(decoder.getstate()[0])  # the start of a character cut by the previous chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                return e.reason, offset - pending + e.start
            if not chunk:
                return "", offset  # pragma: no cover - called only after a decoding error
            offset += len(chunk)


def _duplicate(name: str, row: Row, earlier_line: int) -> str:
    return f"{name}:{row.line}: number: " + t("{number} already on line {line} with different values",
                                              number=row.number, line=earlier_line)


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
    row = Row(
        line=line, number=values["number"], client=values["client"],
        client_key=client_key(values["client"], values["client_id"]), client_kind=kind,
        email=email, cc=", ".join(cc), amount=amount, paid=paid, currency=currency,
        issue_date=issue, due_date=due, language=language, pdf=pdf,
    )
    object.__setattr__(row, "row_hash", _fingerprint(row))  # computed once: it is compared and stored
    return row


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


@dataclass
class _Counts:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    settled: int = 0

    def result(self) -> ImportResult:
        return ImportResult(self.rows, self.created, self.updated, self.unchanged, self.settled)


def import_rows(engine: Engine, rows: Iterable[Row], now: datetime, source: str) -> ImportResult:
    """Upsert `rows` (valid, each number once, as `read` returns them) in one transaction, `BATCH`
    at a time. Each created, changed or settled invoice gets an event."""
    return _in_batches(engine, rows, source, [], now, source, BATCH)


def import_file(engine: Engine, path: Path, default_language: str, now: datetime, source: str,
                attachments: Path | None = None, batch: int = BATCH) -> ImportResult:
    """Read, check and upsert `path` `batch` rows at a time, in one transaction: when any row is
    bad, ImportFileError lists every problem in line order and nothing is imported."""
    errors: list[tuple[int, str]] = []
    return _in_batches(engine, parse(path, default_language, errors, attachments), str(path), errors, now, source,
                       batch)


def _in_batches(engine: Engine, rows: Iterable[Row], name: str, errors: list[tuple[int, str]], now: datetime,
                source: str, batch: int) -> ImportResult:
    """`rows` written `batch` at a time in one transaction; `errors` (line, message), filled by the
    reading of `rows` and by the writing (a number twice with other values), rolls it all back."""
    counts = _Counts()
    with session(engine) as s:
        seen = _Seen(s)
        pending: list[Row] = []
        for row in rows:
            pending.append(row)
            if len(pending) >= batch:
                _flush(s, seen, pending, name, errors, now, source, counts)
                pending = []
        _flush(s, seen, pending, name, errors, now, source, counts)
        seen.drop()
        if errors:  # raised inside the transaction: what the good batches wrote is rolled back
            errors.sort(key=lambda e: e[0])  # duplicates are found a batch late: back in line order
            raise ImportFileError(name, [e for _, e in errors])
    refresh_statistics(engine, counts.created + counts.updated, "invoice", "client", "contact")
    return counts.result()


class _Seen:
    """The numbers a file gave so far, with their line and values, in a temporary table of the
    import's transaction (a million numbers would take hundreds of megabytes as a dict); and the
    current batch's keys in another, which the batch's look-ups join (no list of 5,000 values
    bound one by one)."""

    def __init__(self, s: Connection) -> None:
        self.s = s
        columns = (("number", sa.String(100)), ("line", sa.Integer), ("fingerprint", sa.String(32)),
                   ("client_key", sa.String(200)))
        meta = sa.MetaData()
        self.seen = sa.Table("relance_import_seen", meta, *(
            sa.Column(n, ty, primary_key=n == "number", nullable=False) for n, ty in columns[:3]),
            prefixes=["TEMPORARY"])
        self.batch = sa.Table("relance_import_batch", meta, *(sa.Column(n, ty, nullable=False) for n, ty in columns),
                              prefixes=["TEMPORARY"])
        self.drop()  # tables left on a pooled connection by an import that failed half-way
        meta.create_all(s)

    def drop(self) -> None:
        for name in ("relance_import_seen", "relance_import_batch"):
            self.s.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")

    def numbers(self) -> sa.Select[tuple[str]]:
        """The current batch's numbers, for `IN`."""
        return sa.select(self.batch.c.number)

    def client_keys(self) -> sa.Select[tuple[str]]:
        return sa.select(self.batch.c.client_key)

    def new(self, rows: list[Row], name: str, errors: list[tuple[int, str]]) -> list[Row]:
        """Make `rows` the current batch. Returns those whose number the file has not given
        before; the same number again with the same values is skipped, with other values it is
        an error."""
        first: dict[str, Row] = {}
        for row in rows:
            earlier = first.setdefault(row.number, row)
            if earlier is not row and earlier.fingerprint() != row.fingerprint():
                errors.append((row.line, _duplicate(name, row, earlier.line)))
        b, seen = self.batch.c, self.seen.c
        self.s.execute(sa.delete(self.batch))
        if not first:
            return []
        mark = "?" if self.s.dialect.paramstyle == "qmark" else "%s"  # plain values: the driver's executemany
        self.s.exec_driver_sql(f"INSERT INTO relance_import_batch VALUES ({', '.join([mark] * 4)})",
                               [(r.number, r.line, r.fingerprint(), r.client_key) for r in first.values()])
        if self.s.dialect.name == "postgresql":  # a temporary table has no statistics: without them the
            self.s.exec_driver_sql("ANALYZE relance_import_batch")  # look-ups it joins may scan whole tables
        before = {number: (line, fp) for number, line, fp in self.s.execute(
            sa.select(seen.number, seen.line, seen.fingerprint).where(seen.number.in_(self.numbers())))}
        if before:
            self.s.execute(sa.delete(self.batch).where(b.number.in_(list(before))))  # rare: a number again
        self.s.execute(sa.insert(self.seen).from_select(["number", "line", "fingerprint"],
                                                        sa.select(b.number, b.line, b.fingerprint)))
        fresh = []
        for number, row in first.items():
            if number not in before:
                fresh.append(row)
            elif before[number][1] != row.fingerprint():
                errors.append((row.line, _duplicate(name, row, before[number][0])))
        return fresh


def _flush(s: Connection, seen: _Seen, rows: list[Row], name: str, errors: list[tuple[int, str]],
           now: datetime, source: str, counts: _Counts) -> None:
    fresh = seen.new(rows, name, errors)
    if not errors:  # after a bad row nothing will be kept: only look for more problems
        _upsert(s, fresh, now, source, counts, seen)


def _upsert(s: Connection, rows: list[Row], now: datetime, source: str, counts: _Counts, seen: _Seen) -> None:
    """Write one batch (the current one of `seen`): its clients, contacts and invoices, looked up
    by the batch's own keys."""
    if not rows:
        return
    counts.rows += len(rows)
    inv_t, cli_t, con_t, ev_t = table(Invoice), table(Client), table(Contact), table(Event)
    by_key = {r.client_key: r for r in rows}  # the last row of a client names it, as in a whole file
    batch_clients = cli_t.c.key.in_(seen.client_keys())
    clients = {k: (i, n, kd) for i, k, n, kd in s.execute(
        sa.select(cli_t.c.id, cli_t.c.key, cli_t.c.name, cli_t.c.kind).where(batch_clients))}
    new_clients = [{"key": k, "name": r.client, "kind": r.client_kind, "language": r.language}
                   for k, r in by_key.items() if k not in clients]
    if new_clients:
        s.execute(sa.insert(cli_t), new_clients)
    renamed = [{"cid": clients[k][0], "cname": r.client, "ckind": r.client_kind} for k, r in by_key.items()
               if k in clients and clients[k][1:] != (r.client, r.client_kind)]
    if renamed:
        s.execute(sa.update(cli_t).where(cli_t.c.id == sa.bindparam("cid"))
                  .values(name=sa.bindparam("cname"), kind=sa.bindparam("ckind")), renamed)
    client_ids = dict(s.execute(sa.select(cli_t.c.key, cli_t.c.id).where(batch_clients)).all()) if new_clients \
        else {k: v[0] for k, v in clients.items()}

    batch_contacts = con_t.c.client_id.in_(sa.select(cli_t.c.id).where(batch_clients))
    contacts = {(c, e): (i, cc) for i, c, e, cc in s.execute(
        sa.select(con_t.c.id, con_t.c.client_id, con_t.c.email, con_t.c.cc).where(batch_contacts))}
    wanted: dict[tuple[int, str], str] = {(client_ids[r.client_key], r.email): r.cc for r in rows}
    new_contacts = [{"client_id": c, "email": e, "cc": cc} for (c, e), cc in wanted.items()
                    if (c, e) not in contacts]
    if new_contacts:
        s.execute(sa.insert(con_t), new_contacts)
    changed = [{"kid": contacts[key][0], "kcc": cc} for key, cc in wanted.items()
               if key in contacts and contacts[key][1] != cc]
    if changed:
        s.execute(sa.update(con_t).where(con_t.c.id == sa.bindparam("kid")).values(cc=sa.bindparam("kcc")), changed)
    contact_ids = {(c, e): i for i, c, e in s.execute(
        sa.select(con_t.c.id, con_t.c.client_id, con_t.c.email).where(batch_contacts))} if new_contacts \
        else {k: v[0] for k, v in contacts.items()}

    batch_invoices = inv_t.c.number.in_(seen.numbers())
    existing = {n: (i, h, st) for i, n, h, st in s.execute(
        sa.select(inv_t.c.id, inv_t.c.number, inv_t.c.row_hash, inv_t.c.state).where(batch_invoices))}
    inserts, updates, events = [], [], []
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
            continue
        inv_id, old_hash, state = found
        if old_hash == values["row_hash"]:
            counts.unchanged += 1
            continue
        counts.updated += 1
        new_state = state
        if is_paid and state != "paid":
            new_state = "paid"
            counts.settled += 1
            events.append({"invoice_id": inv_id, "kind": "paid",
                           "reason": reason("ledger.paid_column", source=source)})
        elif not is_paid and state == "paid":
            new_state = "active"
            events.append({"invoice_id": inv_id, "kind": "reopened",
                           "reason": reason("ledger.paid_undone", source=source)})
        updates.append({"iid": inv_id, "state": new_state, "data_error": None, **values})  # new data: try again
        events.append({"invoice_id": inv_id, "kind": "updated", "reason": reason("ledger.line", line=r.line,
                                                                                   source=source)})
    if updates:  # the SET clause is the keys of the rows
        s.execute(sa.update(inv_t).where(inv_t.c.id == sa.bindparam("iid")), updates)
    record_events(s, [{"at": now, "actor": "import", **ev} for ev in events])
    if inserts:
        last_id = s.execute(sa.select(sa.func.max(inv_t.c.id))).scalar() or 0
        s.execute(sa.insert(inv_t), inserts)  # plain executemany: faster than RETURNING batches
        counts.created += len(inserts)
        counts.settled += sum(1 for i in inserts if i["state"] == "paid")
        # Their events are written by the database from the rows it has just numbered.
        created = sa.and_(inv_t.c.number.in_(seen.numbers()), inv_t.c.id > last_id)
        for kind, text, which in (("imported", source, created),
                                  ("paid", reason("ledger.paid_column", source=source),
                                   sa.and_(created, inv_t.c.state == "paid"))):
            s.execute(sa.insert(ev_t).from_select(
                ["invoice_id", "at", "kind", "actor", "reason", "data"],
                sa.select(inv_t.c.id, sa.literal(now, UtcDateTime()), sa.literal(kind), sa.literal("import"),
                          sa.literal(text), sa.literal("{}")).where(which).order_by(inv_t.c.id)))
