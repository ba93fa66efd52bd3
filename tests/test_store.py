"""The store on SQLite and PostgreSQL: migrations, exact money, UTC times, the reminder key."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from bot import store
from bot.errors import StoreError
from bot.models import Client, Contact, Invoice, Outbound, Reminder, table


def test_migrations_match_the_models(engine: Engine) -> None:
    """What `relance init` creates is exactly what the models declare (no drift)."""
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), SQLModel.metadata)
    assert diff == []


def test_partial_indexes_have_the_conditions_the_models_declare(engine: Engine) -> None:
    """compare_metadata does not compare a partial index's WHERE: read it from the database."""
    def squeezed(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum() or ch in "=<>!")

    dialect = engine.dialect.name
    found = 0
    for tb in SQLModel.metadata.tables.values():
        for index in tb.indexes:
            where = index.dialect_options[dialect]._non_defaults.get("where")
            if where is None:
                continue
            with engine.connect() as c:
                made = c.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n")
                                 if dialect == "sqlite" else
                                 sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                                 {"n": index.name}).scalar_one()
            stated = squeezed(made).partition("where")[2]
            assert stated == squeezed(str(where)), (index.name, made, str(where))
            found += 1
    assert found == 2  # ix_invoice_data_error, ix_contact_failing


def test_init_is_idempotent(engine: Engine) -> None:
    assert store.migrate(engine) == store.migrate(engine)
    store.ensure_ready(engine)


def test_unmigrated_database_is_refused(tmp_path: object) -> None:
    eng = store.make_engine(f"sqlite:///{tmp_path}/empty.db")
    with pytest.raises(StoreError, match="run `relance init`"):
        store.ensure_ready(eng)


def _invoice(engine: Engine, amount: Decimal) -> int:
    with store.session(engine) as s:
        cid = s.execute(sa.insert(table(Client)).returning(table(Client).c.id).values(
            key="k", name="n", kind="business")).scalar_one()
        con = s.execute(sa.insert(table(Contact)).returning(table(Contact).c.id).values(
            client_id=cid, email="a@b.example", cc="", failing=False)).scalar_one()
        return int(s.execute(sa.insert(table(Invoice)).returning(table(Invoice).c.id).values(
            number="F-1", client_id=cid, contact_id=con, amount=amount, paid=Decimal("0.00"), currency="EUR",
            issue_date=date(2027, 1, 1), due_date=date(2027, 2, 1), language="fr", state="active",
            row_hash="")).scalar_one())


@pytest.mark.parametrize("amount", ["0.01", "0.10", "99999999999.99", "1234.56", "0.30"])
def test_money_round_trips_exactly(engine: Engine, amount: str) -> None:
    _invoice(engine, Decimal(amount))
    with engine.connect() as c:
        got = c.execute(sa.select(table(Invoice).c.amount)).scalar_one()
    assert isinstance(got, Decimal) and got == Decimal(amount) and str(got) == str(Decimal(amount))


def test_money_refuses_fractions_of_a_cent(engine: Engine) -> None:
    with pytest.raises(sa.exc.StatementError, match="more than two decimal places"):
        _invoice(engine, Decimal("1.005"))


def test_times_come_back_aware_in_utc(engine: Engine) -> None:
    inv = _invoice(engine, Decimal("1.00"))
    moment = datetime(2027, 4, 5, 10, 0, tzinfo=UTC)
    with store.session(engine) as s:
        s.execute(sa.update(table(Invoice)).values(hold_until=moment))
    with engine.connect() as c:
        got = c.execute(sa.select(table(Invoice).c.hold_until).where(table(Invoice).c.id == inv)).scalar_one()
    assert got == moment and got.tzinfo is not None


def test_a_stage_cannot_be_recorded_twice(engine: Engine) -> None:
    """The unique (invoice, stage) key is what makes a second reminder impossible, whatever runs."""
    inv = _invoice(engine, Decimal("1.00"))
    now = datetime(2027, 4, 5, tzinfo=UTC)
    with store.session(engine) as s:
        ob = s.execute(sa.insert(table(Outbound)).returning(table(Outbound).c.id).values(
            message_id="<a@x>", client_id=1, stage_index=0, stage="reminder", to_addr="a@b.example",
            status="pending", created_at=now, attempts=0)).scalar_one()
        s.execute(sa.insert(table(Reminder)).values(invoice_id=inv, stage_index=0, stage="reminder",
                                                   outbound_id=ob, at=now))
    with pytest.raises(sa.exc.IntegrityError), store.session(engine) as s:
        s.execute(sa.insert(table(Reminder)).values(invoice_id=inv, stage_index=0, stage="reminder", at=now))


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError), store.session(engine) as s:
        s.execute(sa.insert(table(Reminder)).values(invoice_id=424242, stage_index=0, stage="x",
                                                   at=datetime(2027, 1, 1, tzinfo=UTC)))
