"""The database tables (sqlmodel). Money is stored exactly, as integer cents; time as UTC.

The invoice row carries a projection of its events (`state`, `hold_until`) kept in the same
transaction as the event that changes it, so the scheduler reads one row per invoice; the
event log stays the record of why."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

CENT = Decimal("0.01")


class Money(sa.types.TypeDecorator[Decimal]):
    """A Decimal with two places, stored as integer cents: exact on every engine, sortable in SQL."""

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        cents = (Decimal(value) * 100)
        if cents != cents.to_integral_value():
            raise ValueError(f"amount {value} has more than two decimal places")
        return int(cents)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else (Decimal(int(value)) / 100).quantize(CENT)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """An aware datetime stored in UTC; SQLite, which keeps no zone, gets it back as UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def money(name: str, nullable: bool = False) -> Any:
    return Field(sa_column=sa.Column(name, Money(), key=name.removesuffix("_cents"), nullable=nullable))


def moment(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UtcDateTime(), nullable=nullable, index=index))


class Client(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(200), unique=True, nullable=False))
    name: str
    kind: str = "business"  # business | consumer
    language: str | None = None


class Contact(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="client.id", index=True)
    email: str = Field(index=True)  # a reply's sender finds its client's open invoices
    cc: str = ""
    failing: bool = False
    failure_reason: str | None = None

    # The few failing addresses, for the triage queue (their invoices wait for a new one).
    __table_args__ = (sa.UniqueConstraint("client_id", "email"),
                      sa.Index("ix_contact_failing", "id", sqlite_where=sa.text("failing = 1"),
                               postgresql_where=sa.text("failing")))


class Invoice(SQLModel, table=True):
    __table_args__ = (sa.Index("ix_invoice_state_due_date", "state", "due_date"),
                      # The triage queue reads the few invoices whose data waits for a fix by it.
                      sa.Index("ix_invoice_data_error", "state", sqlite_where=sa.text("data_error IS NOT NULL"),
                               postgresql_where=sa.text("data_error IS NOT NULL")))
    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(sa_column=sa.Column(sa.String(100), unique=True, nullable=False))
    client_id: int = Field(foreign_key="client.id", index=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)  # a failing address finds its invoices
    amount: Decimal = money("amount_cents")
    paid: Decimal = money("paid_cents")
    currency: str = "EUR"
    issue_date: date
    due_date: date
    language: str = "fr"
    pdf: str | None = None
    state: str = Field(default="active", index=True)
    hold_until: datetime | None = moment()
    held_by: int | None = Field(default=None, index=True)  # a message a person must read before the ladder goes on
    data_error: str | None = None  # why its reminder cannot be built or sent: waits for the data to be fixed
    row_hash: str = ""

    @property
    def amount_due(self) -> Decimal:
        return max(self.amount - self.paid, Decimal("0.00"))


class Outbound(SQLModel, table=True):
    """One email sent (or to send). Status: pending -> preparing -> prepared -> claimed -> sending
    -> sent, or failed / cancelled; `uncertain` when a crash left it `sending` (see bot/outbox.py)."""

    __table_args__ = (sa.Index("ix_outbound_status_id", "status", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(sa_column=sa.Column(sa.String(250), unique=True, nullable=False))
    client_id: int | None = Field(default=None, foreign_key="client.id", index=True)  # None: the operator's digest
    stage_index: int  # -1: the operator's digest
    stage: str
    to_addr: str
    cc: str = ""
    subject: str = ""
    reply_token: str | None = Field(default=None, index=True)
    status: str = "pending"  # indexed with id (ix_outbound_status_id): the claims take the oldest of a status
    raw: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary, nullable=True))
    created_at: datetime | None = moment(nullable=False)
    claimed_at: datetime | None = moment()
    claimed_by: str | None = None
    sent_at: datetime | None = moment()
    attempts: int = 0
    last_error: str | None = None
    prepared_at: datetime | None = moment()  # the `now` it was rendered for (its Date:, "today" in the letter)
    prepared_paid: Decimal | None = Field(default=None, sa_column=sa.Column(  # its invoices' `paid`, summed, then
        "prepared_paid_cents", Money(), key="prepared_paid", nullable=True))
    # When this instance marked it `sending` (time.monotonic_ns()): of the messages a dead instance's
    # batch left `sending`, only the last marked can be in doubt (bot/outbox.py).
    sending_seq: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger(), nullable=True))
    # When its claimant last took, claimed or marked it, by its clock: its lease (bot/outbox.py).
    # `claimed_at` stays the pass's start, which names its batch.
    lease_at: datetime | None = moment()


class Reminder(SQLModel, table=True):
    """A stage recorded for an invoice, at most once: the unique key is the 'never twice' guarantee.

    A stage passed over by a late start is `skipped`, linked to the message that passed it over
    (if that message is not delivered, its skipped stages are freed with it)."""

    __table_args__ = (sa.UniqueConstraint("invoice_id", "stage_index"),)
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    stage_index: int
    stage: str
    outbound_id: int | None = Field(default=None, foreign_key="outbound.id", index=True)
    skipped: bool = False
    at: datetime | None = moment(nullable=False)


class Mailbox(SQLModel, table=True):
    """Where the watcher is in each IMAP folder: a restart resumes after `last_uid`."""

    id: int | None = Field(default=None, primary_key=True)
    folder: str = Field(sa_column=sa.Column(sa.String(250), unique=True, nullable=False))
    uidvalidity: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    last_uid: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))


class Inbound(SQLModel, table=True):
    """A received email, stored before any parsing: its bytes in `InboundRaw`, in the same transaction."""

    __table_args__ = (sa.UniqueConstraint("folder", "uidvalidity", "uid"),)
    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(default="", index=True)
    folder: str = ""
    uidvalidity: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))  # 32-bit unsigned
    uid: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    content_hash: str = Field(default="", index=True)
    from_addr: str = ""
    subject: str = ""
    received_at: datetime | None = moment()
    stored_at: datetime | None = moment(nullable=False)
    kind: str | None = None
    confidence: Decimal | None = Field(default=None, sa_column=sa.Column(sa.Numeric(4, 3), nullable=True))
    status: str = Field(default="new", index=True)  # new | applied | triage | quarantined
    reason: str = ""
    text: str = ""
    cues: str = "[]"  # JSON list
    moved_at: datetime | None = moment()  # when it was moved to `imap.move_handled_to`
    suggested: str = Field(default="[]", sa_column_kwargs={"server_default": "[]"})  # JSON: invoices to confirm
    label: str | None = None  # the kind a person set or corrected: an example the classifier learns from
    labelled_by: str | None = None
    labelled_at: datetime | None = moment()


class InboundRaw(SQLModel, table=True):
    """A received email's bytes, as the server gave them. A table of their own: SQLite writes a
    row again whole when one of its columns changes, and a message's status changes three times
    (a 40 MB message took 120 MB more memory, and wrote 40 MB, at each); the listings of messages
    never carry them."""

    __tablename__ = "inbound_raw"
    inbound_id: int = Field(foreign_key="inbound.id", primary_key=True)
    raw: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


class Event(SQLModel, table=True):
    """Append-only: every state change of an invoice, with who, why and the message it came from."""

    # The scans that look for one kind of event (the plans that run, a reply's or an instalment's
    # events) read only that kind, by invoice, not the whole history (bot/instalments.py).
    __table_args__ = (sa.Index("ix_event_kind_invoice_id", "kind", "invoice_id"),)
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int | None = Field(default=None, foreign_key="invoice.id", index=True)
    at: datetime | None = moment(nullable=False)  # the logical time (--now)
    kind: str
    actor: str = "relance"  # relance | cli:<user> | tui:<user> | import
    reason: str = ""
    data: str = "{}"  # JSON object
    outbound_id: int | None = Field(default=None, foreign_key="outbound.id")
    inbound_id: int | None = Field(default=None, foreign_key="inbound.id", index=True)


class IgnoredSender(SQLModel, table=True):
    """An address whose mail never waits for a person (a newsletter): "ignore this sender" in triage."""

    __tablename__ = "ignored_sender"
    id: int | None = Field(default=None, primary_key=True)
    address: str = Field(sa_column=sa.Column(sa.String(250), unique=True, nullable=False))
    at: datetime | None = moment(nullable=False)
    actor: str = ""
    reason: str = ""


class Classifier(SQLModel, table=True):
    """A reply classifier fitted on this installation (`relance learn`); the latest one is used."""

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime | None = moment(nullable=False)
    examples: int
    labelled: int  # of which the installation's own labelled messages
    data: str = Field(sa_column=sa.Column(sa.Text, nullable=False))  # bot.learn.dumps


def table(model: type[SQLModel]) -> sa.Table:
    """The Core table of a model, for bulk statements on hot paths."""
    t = model.__table__  # type: ignore[attr-defined]
    assert isinstance(t, sa.Table)
    return t


class Heartbeat(SQLModel, table=True):
    """When a part of the daemon last worked and last failed (`relance status --health`)."""

    component: str = Field(sa_column=sa.Column(sa.String(50), primary_key=True))  # scheduler | smtp | imap
    instance: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))  # host:pid that wrote it last
    last_ok_at: datetime | None = moment()
    last_error_at: datetime | None = moment()
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    failing_since: datetime | None = moment()  # unset while it works
